"""What the three cloud dialects share: batches in, packets out, cut to the cloud's limits.

A dialect turns committed buffer batches (one device's readings under one seq)
into MQTT packets the cloud accepts. The cloud caps a message (bytes, devices,
properties), so :func:`pack` fills one packet after the other and tells, per
packet, which seqs it finishes: a seq is in the ``done`` of the packet carrying
its last reading, so the caller may acknowledge a batch to the buffer once that
packet (and those before it) are confirmed.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from drivers.base import Reading


@dataclass(frozen=True)
class Batch:
    """One committed buffer batch: the readings of one agent device under one seq.

    A batch of events (docs/EVENTS.md) names its source (a machine, or ``_box``)
    as ``device``, holds one reading per event that has values
    (:mod:`agent.north.facts`) and the events themselves in ``events``.
    """

    seq: int
    device: str
    readings: Sequence[Reading]
    events: Sequence[Mapping[str, Any]] = ()


@dataclass(frozen=True)
class Outgoing:
    """One message a session asks to publish as it is: births, deaths, wills, device status."""

    topic: str
    payload: bytes
    qos: int
    retain: bool


@dataclass(frozen=True)
class TagSpec:
    """A device tag as announced: its name, declared datatype (None: from its value), unit."""

    name: str
    datatype: str | None = None
    unit: str | None = None


@dataclass(frozen=True)
class Packet:
    """One MQTT message to publish, and the seqs whose last reading it carries."""

    topic: str
    payload: bytes
    done: tuple[int, ...] = ()
    data: bool = True
    """False for a packet that carries no readings (a birth, a death, attributes)."""


@dataclass(frozen=True)
class Refused:
    """A reading (or a whole batch, ``ts`` None) that no packet of this dialect can carry."""

    seq: int
    device: str
    ts: int | None
    reason: str


@dataclass(frozen=True)
class Encoded:
    """The packets for some batches, in order, and what could not be sent.

    ``idle`` holds the seqs that had nothing to send at all (every tag an
    error) when no packet was made to carry them: acknowledge them directly.
    """

    packets: tuple[Packet, ...]
    refused: tuple[Refused, ...] = ()
    idle: tuple[int, ...] = ()


@dataclass(frozen=True)
class Credentials:
    """The CONNECT fields of one cloud identity. ``password`` is a secret: never log it."""

    client_id: str
    username: str
    password: str = field(repr=False)


@dataclass
class Entry:
    """One piece of a packet: ``body`` is dumped as JSON, ``key`` names its device."""

    key: str
    body: Any
    count: int = 0
    """How many properties (or values) it holds, for the cloud's per-message cap."""
    size: int = 0
    events: int = 0
    """How many events it holds (Alink caps them per pack)."""

    def __post_init__(self) -> None:
        self.size = len(dumps(self.body)) + len(self.key) + 48  # wrappers, commas, quotes


class Sheet:
    """A packet being filled; each dialect says what fits and how it renders."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.entries: list[Entry] = []
        self.size = 256  # envelope (id, method, version...) counted generously

    def accepts(self, entry: Entry) -> bool:
        return self.size + entry.size <= self.max_bytes

    def add(self, entry: Entry) -> None:
        self.entries.append(entry)
        self.size += entry.size

    def render(self, first_seq: int, index: int) -> tuple[str, bytes]:
        """Topic and payload; ``index`` counts the packets made before it by this call."""
        raise NotImplementedError


def pack(
    batches: Iterable[Batch],
    entries: Callable[[Batch, Reading], list[Entry]],
    new_sheet: Callable[[], Sheet],
    max_bytes: int,
    known: Callable[[str], bool] = lambda _device: True,
) -> Encoded:
    """Fill sheets in order with the entries of every reading; see the module docstring.

    A batch of a device ``known`` refuses, and a reading whose entry alone is
    above ``max_bytes``, are listed in ``refused`` (counted by the caller, never
    dropped silently); their seqs are still in a ``done``.
    """
    packets: list[Packet] = []
    refused: list[Refused] = []
    sheet = new_sheet()
    seqs: list[int] = []  # the batches touching the open sheet
    done: list[int] = []
    for batch in batches:
        if not known(batch.device):
            refused.append(Refused(batch.seq, batch.device, None, "no cloud identity"))
        for reading in batch.readings if known(batch.device) else ():
            for entry in entries(batch, reading):
                if entry.size > max_bytes - 256:
                    refused.append(Refused(batch.seq, batch.device, reading.ts, "too large"))
                    continue
                if not sheet.accepts(entry) and sheet.entries:
                    packets.append(_close(sheet, seqs, done, len(packets)))
                    sheet, seqs, done = new_sheet(), [], []
                sheet.add(entry)
                if not seqs or seqs[-1] != batch.seq:
                    seqs.append(batch.seq)
        # Its last entry is in the open sheet (a sheet closes only for a newer
        # entry), or it had none: either way it is finished when that sheet is.
        done.append(batch.seq)
    if sheet.entries:
        packets.append(_close(sheet, seqs, done, len(packets)))
        done = []
    elif packets and done:
        last = packets[-1]
        packets[-1] = Packet(last.topic, last.payload, (*last.done, *done))
        done = []
    return Encoded(tuple(packets), tuple(refused), tuple(done))


def _close(sheet: Sheet, seqs: list[int], done: list[int], index: int) -> Packet:
    topic, payload = sheet.render(seqs[0], index)
    return Packet(topic, payload, tuple(done))


TOPIC_ROOM = 512
"""Bytes kept for a cloud packet's topic: the longest of these dialects stays well under it."""


def payload_room(max_message_size: int) -> int:
    """The payload bytes a cloud packet may have when its PUBLISH must fit ``max_message_size``."""
    return max_message_size - (1 + 4 + 2 + TOPIC_ROOM + 2)


def dumps(value: Any) -> bytes:
    """Compact JSON, keys in insertion order (the order tests and clouds see)."""
    return orjson.dumps(value)


def hmac_hex(method: str, key: str, message: str) -> str:
    """Lower-case hex HMAC; ``method`` is ``md5``, ``sha1`` or ``sha256``."""
    digest = {"md5": hashlib.md5, "sha1": hashlib.sha1, "sha256": hashlib.sha256}[method]
    return hmac.new(key.encode(), message.encode(), digest).hexdigest()


def chunks(names: Sequence[str], size: int) -> list[Sequence[str]]:
    """``names`` cut into runs of at most ``size``."""
    return [names[i : i + size] for i in range(0, len(names), size)] or [[]]
