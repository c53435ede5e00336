"""The loop-to-writer hand-off of :mod:`agent.buffer`: batches and acks queued in
RAM by the event loop, taken by the writer thread at its next commit (no SQLite).

Nothing here is public API; the other modules of :mod:`agent.buffer` are its only users.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

RAM_LIMIT = 32 * 1024 * 1024
"""Bytes of uncommitted batches held in memory (only grows while the disk fails)."""


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
        self._puts = 0
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
            self._puts += 1
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
                    self._puts -= 1
                else:
                    work.acks |= op
                work.n_ops += 1
            work.refused, self._refused = self._refused, 0
        return work

    def held(self) -> tuple[int, int]:
        """Batches queued here, and batches refused since the last take."""
        with self._lock:
            return self._puts, self._refused

    def pending(self) -> bool:
        """Whether anything waits for the writer."""
        with self._lock:
            return bool(self._ops) or bool(self._refused)

    def synced(self, seqs: Iterable[int]) -> None:
        """The deletes of ``seqs`` are committed: readers no longer need to hide them."""
        with self._lock:
            self._unsynced.difference_update(seqs)

    def unsynced(self) -> int:
        """How many acked seqs are not yet deleted in the database (cheap, no copy)."""
        with self._lock:
            return len(self._unsynced)

    def acked(self) -> frozenset[int]:
        """Seqs acked but perhaps not yet deleted in the database."""
        with self._lock:
            return frozenset(self._unsynced)

    def close(self) -> None:
        """Ask the writer to commit what is left and stop."""
        self.closed.set()
        self.urgent.set()
        self.wake.set()
