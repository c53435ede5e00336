"""The buffer's public records and error, and the settings the writer opens the file with.

No SQLite here: every module of the package and its callers can import this.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

OnFull = Literal["drop_oldest", "drop_newest"]
Synchronous = Literal["FULL", "NORMAL"]

SCHEMA_VERSION = 1
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


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """How the writer opens the database file (checked by :class:`~agent.buffer.Buffer`)."""

    path: Path
    agent_id: str
    max_bytes: int
    on_full: OnFull
    synchronous: Synchronous
