"""Pieces of :mod:`agent.buffer` that need no SQLite: the loop-to-writer inbox,
the seq reservation sidecar, and the page-size arithmetic behind the size cap.

Nothing here is public API; the other modules of :mod:`agent.buffer` are its only users.
"""

from __future__ import annotations

import math
import os
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

RAM_LIMIT = 32 * 1024 * 1024
"""Bytes of uncommitted batches held in memory (only grows while the disk fails)."""

SEQ_BLOCK = 100_000
"""Seqs reserved by one sidecar write: at 1000 batches/s, one small fsync per 100 s."""


@dataclass(slots=True)
class Put:
    """One batch on its way to the writer; the seq is spliced in at commit."""

    device: str
    head: bytes
    tail: bytes
    created_ms: int
    n_values: int

    @property
    def size(self) -> int:
        """Payload bytes, counting up to 20 digits for the seq."""
        return len(self.head) + len(self.tail) + 20


@dataclass(slots=True)
class Work:
    """What one commit applies; the writer keeps it and retries while the disk fails."""

    puts: list[Put] = field(default_factory=list)
    acks: set[int] = field(default_factory=set)
    n_ops: int = 0
    refused: int = 0


class Inbox:
    """Hand-off from the event loop to the writer thread; every method is thread-safe.

    Puts and acks stay in one FIFO so that "every op before this one" is just a
    count, which is what ``flush()`` waits for.
    """

    def __init__(self, ram_limit: int = RAM_LIMIT) -> None:
        self._ops: deque[Put | frozenset[int]] = deque()
        self._lock = threading.Lock()
        self._ram_limit = ram_limit
        self._bytes = 0
        self._refused = 0
        self._unsynced: set[int] = set()
        self.wake = threading.Event()
        self.urgent = threading.Event()
        self.closed = threading.Event()

    def put(self, op: Put) -> bool:
        """Queue a batch; False (and counted as dropped) when RAM is at its limit."""
        with self._lock:
            if self._bytes + op.size > self._ram_limit:
                self._refused += 1
                return False
            self._bytes += op.size
            self._ops.append(op)
        self.wake.set()
        return True

    def ack(self, seqs: frozenset[int]) -> None:
        """Queue deletes; the seqs count as acked for readers until :meth:`synced`."""
        with self._lock:
            self._unsynced |= seqs
            self._ops.append(seqs)
        self.wake.set()

    def take(self, max_puts: int) -> Work:
        """Everything queued, in order, up to ``max_puts`` batches."""
        work = Work()
        with self._lock:
            while self._ops and len(work.puts) < max_puts:
                op = self._ops.popleft()
                if isinstance(op, Put):
                    work.puts.append(op)
                    self._bytes -= op.size
                else:
                    work.acks |= op
                work.n_ops += 1
            work.refused, self._refused = self._refused, 0
        return work

    def pending(self) -> bool:
        """Whether anything waits for the writer."""
        with self._lock:
            return bool(self._ops) or bool(self._refused)

    def synced(self, seqs: Iterable[int]) -> None:
        """The deletes of ``seqs`` are committed: readers no longer need to hide them."""
        with self._lock:
            self._unsynced.difference_update(seqs)

    def acked(self) -> frozenset[int]:
        """Seqs acked but perhaps not yet deleted in the database."""
        with self._lock:
            return frozenset(self._unsynced)

    def close(self) -> None:
        """Ask the writer to commit what is left and stop."""
        self.closed.set()
        self.urgent.set()
        self.wake.set()


def seq_ranges(seqs: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted seqs as inclusive runs: acks usually come in one or a few runs."""
    runs: list[tuple[int, int]] = []
    for seq in sorted(seqs):
        if runs and runs[-1][1] == seq - 1:
            runs[-1] = (runs[-1][0], seq)
        else:
            runs.append((seq, seq))
    return runs


class SeqReservation:
    """A sidecar file holding a seq no committed batch exceeds.

    The writer raises it (durably: temp file, fsync, rename, fsync of the
    folder) before committing a seq above it, so a replacement database can
    start above every seq ever used even when the old one is unreadable.
    """

    def __init__(self, path: Path, block: int = SEQ_BLOCK) -> None:
        self.path = path
        self.block = block
        self.reserved = self.load()

    def load(self) -> int:
        """The reserved seq on disk; 0 when the file is missing or unreadable."""
        try:
            return max(0, int(self.path.read_text(encoding="ascii").strip()))
        except (OSError, ValueError):
            return 0

    def ensure(self, seq: int) -> None:
        """Make sure ``seq`` is covered by the reservation on disk."""
        if seq <= self.reserved:
            return
        reserved = seq + self.block
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("w", encoding="ascii") as out:
            out.write(f"{reserved}\n")
            out.flush()
            os.fsync(out.fileno())
        tmp.replace(self.path)
        folder = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
        self.reserved = reserved


class PageMath:
    """How many database pages a batch row takes, after SQLite's b-tree layout.

    Only an estimate to decide how much to drop before inserting; the actual
    free space comes from ``page_count``/``freelist_count``, and SQLITE_FULL is
    still handled if the estimate falls short.
    """

    _ROW_OVERHEAD = 40  # record header, rowid, created_ms, n_values, cell pointer

    def __init__(self, page_size: int) -> None:
        self.usable = page_size
        self.max_local = page_size - 35
        self.min_local = (page_size - 12) * 32 // 255 - 23

    def row_pages(self, payload_len: int, device_len: int) -> float:
        """Pages one row needs (a fraction when several rows share a leaf page)."""
        record = payload_len + device_len + self._ROW_OVERHEAD
        if record <= self.max_local:
            # Rows are appended in rowid order, so leaves are packed to the brim.
            return 1.02 / max(1, (self.usable - 8) // record)
        local = self.min_local + (record - self.min_local) % (self.usable - 4)
        if local > self.max_local:
            local = self.min_local
        overflow = math.ceil((record - local) / (self.usable - 4))
        return overflow + 1.02 * local / (self.usable - 8)
