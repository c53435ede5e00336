"""The status document: what ``edge-agent status --json`` prints, typed once.

The running agent builds it (:meth:`agent.runtime.agent.Agent.snapshot`), the
status server sends it as JSON, ``status``, the demo's live table and the
tests read it. Every key is declared here, so a field added or renamed is
added or renamed for all of them. Standard library only.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, Protocol, TypedDict, TypeGuard, cast


class AgentInfo(TypedDict):
    """Who answers: the box's agent id, its version and process."""

    id: str
    version: str
    pid: int
    uptime_s: float
    config: str


class DeviceStatus(TypedDict):
    """One device's poller: its state and counters."""

    state: str
    endpoint: str | None
    """Where the device is reached: ``modbus_tcp 10.0.0.21:502 unit 1``, ``modbus_rtu
    /dev/ttyUSB0 19200 8N1 unit 2``, ``opcua opc.tcp://...``, ``serial /dev/ttyS1 9600 8N1
    poll``; None when its driver cannot say."""
    profile: str | None
    last_ok_ms: int | None
    last_ok_age_s: float | None
    polls_ok: int
    polls_failed: int
    overruns: int
    reconnects: int
    last_error: str | None
    values_per_second: float
    last_poll_ms: float | None
    driver: dict[str, object] | None


class BrokerStatus(TypedDict):
    """The MQTT link and what went through it."""

    host: str
    port: int
    connected: bool
    last_error: str | None
    messages_published: int
    values_published: int
    reconnects: int
    inflight: int
    early_disconnects: int  # connections that ended soon after the broker accepted them
    oversized_split: int  # stored batches above mqtt.max_message_size, queued again in pieces
    oversized_refused: int  # readings refused: larger than mqtt.max_message_size alone


class DestinationStatus(TypedDict):
    """One place the agent publishes to: its link, and its own share of the buffer."""

    dialect: str
    host: str
    port: int
    connected: bool
    ready: bool
    """Connected and allowed to send data (a Sparkplug primary host online, Alink logged in)."""
    last_error: str | None
    messages_published: int  # batches confirmed (PUBACK, and the cloud's reply where it sends one)
    values_published: int
    packets_published: int  # MQTT messages of data confirmed (a dialect packs or cuts batches)
    refused_by_cloud: int  # values the cloud answered it will never take
    refused_by_dialect: int  # readings this dialect cannot carry (too large alone, untypable)
    dialect_errors: int  # the dialect's own code failed (the connection was made again)
    reconnects: int
    inflight: int
    pending_batches: int  # batches this destination has not confirmed yet
    oldest_pending_age_s: float | None
    never_received: int  # batches dropped (cap, RAM) before this destination had them


class BufferStatus(TypedDict):
    """The buffer file: what waits in it and what was dropped."""

    path: str
    pending_batches: int
    pending_bytes: int
    oldest_pending_age_s: float | None
    dropped_batches: int
    last_seq: int
    file_bytes: int
    max_bytes: int
    disk_full: bool
    """No room on the disk: committed batches are kept, new ones wait in RAM (held_batches)."""
    held_batches: int


class SerialLineStatus(TypedDict):
    """One shared RS-485/RS-232 line and the share of its time the polls need."""

    baud: int
    utilisation: float
    devices: list[str]


class ClockStatus(TypedDict):
    """Whether the wall clock can be trusted for ``ts`` (built by ``agent/clock.py``).

    ``state``: ``synced`` (the kernel says NTP keeps it), ``unsynced`` (it does
    not: readings carry ``"clock": "unsynced"``), ``unset`` (before this
    version's release: readings carry ``"clock": "unset"``), ``unknown`` (the
    kernel cannot be asked). ``last_step_s``: by how much the wall clock last
    stepped (NTP setting it), to shift the readings flagged before it.
    """

    state: Literal["synced", "unsynced", "unset", "unknown"]
    flagged_readings: int
    steps: int
    last_step_s: float | None


class ShiftFigures(TypedDict):
    """A machine's running figure for the shift in progress (ratios None when not known)."""

    shift: str
    total: int
    good: int
    reject: int
    A: float | None
    P: float | None
    Q: float | None
    OEE: float | None
    coverage: float | None


class MachineStatus(TypedDict):
    """One machine of the site's ``analytics:``: what it does now, since when, what it made."""

    state: str | None
    reason: str | None
    mode: str | None
    since_ms: int | None
    for_s: float | None
    totals: dict[str, int]
    """Each counter's running total (role -> pieces)."""
    shift: ShiftFigures | None
    problems: list[str]


class StatusDocument(TypedDict):
    """The whole answer of a running agent."""

    agent: AgentInfo
    devices: dict[str, DeviceStatus]
    broker: BrokerStatus
    """The first destination's link (the ``mqtt`` section's when it publishes)."""
    destinations: NotRequired[dict[str, DestinationStatus]]
    """Every destination by id, in the site file's order (an older agent leaves it out)."""
    buffer: BufferStatus
    metrics: dict[str, Any]
    serial_lines: dict[str, SerialLineStatus]
    clock: ClockStatus
    machines: NotRequired[dict[str, MachineStatus]]
    """Machine facts (an agent without ``analytics:`` machines leaves it out)."""


class ErrorAnswer(TypedDict):
    """What a running agent answers when it cannot build its status."""

    error: str


Answer = StatusDocument | ErrorAnswer
"""What the status socket sends back."""


def is_status(answer: Answer) -> TypeGuard[StatusDocument]:
    """True for a real status document, False for an error answer."""
    return "agent" in answer


def error_of(answer: Answer) -> str:
    """The error an agent answered instead of its status ("" for a real document)."""
    return "" if is_status(answer) else cast(ErrorAnswer, answer)["error"]


class OfflineAgent(TypedDict, total=False):
    """An agent that does not answer, with the buffer found on disk (or why not)."""

    id: str
    buffer: BufferStatus
    buffer_error: str


class OfflineReport(TypedDict):
    """What ``status --json`` prints when no agent answers."""

    running: bool
    agents: list[OfflineAgent]


class BufferCounts(Protocol):
    """The counters :func:`buffer_status` reads (a ``BufferStats``)."""

    @property
    def pending_batches(self) -> int: ...
    @property
    def pending_bytes(self) -> int: ...
    @property
    def oldest_created_ms(self) -> int | None: ...
    @property
    def dropped_batches(self) -> int: ...
    @property
    def last_seq(self) -> int: ...
    @property
    def file_bytes(self) -> int: ...
    @property
    def max_bytes(self) -> int: ...
    @property
    def disk_full(self) -> bool: ...
    @property
    def held_batches(self) -> int: ...


def buffer_status(stats: BufferCounts, path: str, now: int) -> BufferStatus:
    """The ``buffer`` part of the document from the buffer's counters at ``now`` (epoch ms)."""
    oldest = stats.oldest_created_ms
    return {
        "path": path,
        "pending_batches": stats.pending_batches,
        "pending_bytes": stats.pending_bytes,
        "oldest_pending_age_s": None if oldest is None else round((now - oldest) / 1000, 1),
        "dropped_batches": stats.dropped_batches,
        "last_seq": stats.last_seq,
        "file_bytes": stats.file_bytes,
        "max_bytes": stats.max_bytes,
        "disk_full": stats.disk_full,
        "held_batches": stats.held_batches,
    }
