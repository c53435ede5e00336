"""The buffer's public records and error, and the settings the writer opens the file with.

No SQLite here: every module of the package and its callers can import this.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

OnFull = Literal["drop_oldest", "drop_newest"]
Synchronous = Literal["FULL", "NORMAL"]

SCHEMA_VERSION = 2
"""2: ``batches.acked`` and the ``destinations`` table (one cursor per destination)."""
MAX_DESTINATIONS = 16
BUSY_TIMEOUT_MS = 5000


@dataclass(frozen=True, slots=True)
class PendingBatch:
    """One committed, not yet acknowledged batch; ``payload`` is the MQTT message."""

    seq: int
    device: str
    created_ms: int
    n_values: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class FactRow:
    """One fact kept in the buffer's history (``facts`` table) for ``edge-agent report``."""

    source: str
    ts_ms: int
    type: str
    body: bytes
    """The event as JSON."""


@dataclass(frozen=True, slots=True)
class FactsSave:
    """Machine-facts state committed in the same transaction as the events it goes with.

    ``state`` replaces what is stored under ``key`` (None leaves it); ``facts``
    are added to the history; rows of the history older than
    ``prune_before_ms`` are deleted.
    """

    key: str
    state: bytes | None = None
    facts: tuple[FactRow, ...] = ()
    prune_before_ms: int | None = None


@dataclass(frozen=True, slots=True)
class DestinationStats:
    """One destination's share of the buffer: what it still has to receive, what it never will."""

    id: str
    pending_batches: int
    """Committed batches this destination has not acknowledged."""
    oldest_created_ms: int | None
    """When the oldest of them was polled; None when nothing is pending for it."""
    first_pending_seq: int | None
    never_received: int
    """Batches this destination will never get: dropped (cap, RAM, skipped seqs)
    before it acknowledged them."""


@dataclass(frozen=True, slots=True)
class BufferStats:
    """What ``edge-agent status`` shows about the buffer (committed state only)."""

    pending_batches: int
    pending_bytes: int
    oldest_created_ms: int | None
    dropped_batches: int
    last_seq: int
    file_bytes: int
    max_bytes: int
    disk_full: bool = False
    """The disk under the buffer has no room: commits are retried, new batches wait in RAM."""
    held_batches: int = 0
    """Batches in RAM not yet committed (only grows while the disk is full or failing)."""
    destinations: tuple[DestinationStats, ...] = ()
    """Per destination, in the order the buffer was opened with (empty for a version 1 file)."""


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """How the writer opens the database file (checked by :class:`~agent.buffer.Buffer`)."""

    path: Path
    agent_id: str
    max_bytes: int
    on_full: OnFull
    synchronous: Synchronous
    destinations: tuple[str, ...] = ("mqtt",)
    """The destinations that each acknowledge every batch; a row goes when all have."""
