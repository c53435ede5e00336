"""The loop-to-writer hand-off of :mod:`agent.buffer`: batches and acks queued in
RAM by the event loop, taken by the writer thread at its next commit (no SQLite).

Nothing here is public API; the other modules of :mod:`agent.buffer` are its only users.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from agent.buffer.records import FactsSave

RAM_LIMIT = 32 * 1024 * 1024
"""Bytes of uncommitted batches held in memory, the work a failing commit retries
included (only grows while the disk fails)."""


@dataclass(slots=True)
class Put:
    """One batch on its way to the writer; the seq is spliced in at commit."""

    device: str
    head: bytes
    tail: bytes
    created_ms: int
    n_values: int
    had: frozenset[int] = frozenset()
    """Destinations (by index) that already have these readings: the row starts acked
    by them (the pieces of a batch cut again for one destination)."""
    save: FactsSave | None = None
    """Machine-facts state that must land in the same transaction as this batch."""
    more: bool = False
    """A piece of one cut events batch with more to come: the commit that takes it takes
    the rest too (the state rides on the last piece)."""

    @property
    def size(self) -> int:
        """Payload bytes, counting up to 20 digits for the seq."""
        return len(self.head) + len(self.tail) + 20


@dataclass(slots=True)
class _SaveSlot:
    """A queued state-only save; later saves of its key fold into it until it is taken."""

    save: FactsSave

    def fold(self, later: FactsSave) -> None:
        old = self.save
        prunes = [p for p in (old.prune_before_ms, later.prune_before_ms) if p is not None]
        self.save = FactsSave(
            old.key,
            later.state if later.state is not None else old.state,
            old.facts + later.facts,
            max(prunes) if prunes else None,
        )


@dataclass(slots=True)
class Work:
    """What one commit applies; the writer keeps it and retries while the disk fails."""

    puts: list[Put] = field(default_factory=list)
    acks: dict[int, set[int]] = field(default_factory=dict)
    """Acked seqs per destination index."""
    n_ops: int = 0
    refused: int = 0
    spared: dict[int, int] = field(default_factory=dict)
    """Of ``refused``, per destination index: batches it had already (cut pieces)."""
    saves: list[FactsSave] = field(default_factory=list)
    """Machine-facts state, in the order it was queued (a later save of a key wins)."""


@dataclass(frozen=True, slots=True)
class Held:
    """The work the writer took from the inbox and has not committed yet.

    ``last_seq``/``dropped`` are the file's counters before it: a reader that
    sees other counters in the file knows the commit landed (only the writer
    commits, one commit at a time), so it does not count its batches and
    refusals twice while the writer is still in the checkpoint after it.
    """

    batches: int = 0
    refused: int = 0
    last_seq: int = 0
    dropped: int = 0

    def landed(self, last_seq: int, dropped: int) -> bool:
        """Whether the file's counters ``last_seq``/``dropped`` already hold this work."""
        return (last_seq, dropped) != (self.last_seq, self.dropped)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What RAM holds at one moment: queued batches and refusals, the taken work."""

    batches: int
    refused: int
    taken: Held
    takes: int  # how many takes so far: a reader compares it after its read


class Inbox:
    """Hand-off from the event loop to the writer thread; every method is thread-safe.

    Puts and acks stay in one FIFO so that "every op before this one" is just a
    count, which is what ``flush()`` waits for.
    """

    def __init__(self, ram_limit: int = RAM_LIMIT, destinations: int = 1) -> None:
        self._ops: deque[Put | _SaveSlot | tuple[int, frozenset[int]]] = deque()
        self._slots: dict[str, _SaveSlot] = {}
        """The state-only save of each key still queued (a disk that stays full must not
        pile one up every few seconds: only the latest state matters)."""
        self._lock = threading.Lock()
        self._ram_limit = ram_limit
        self._bytes = 0
        self._puts = 0
        self._refused = 0
        self._spared: dict[int, int] = {}
        self._unsynced: list[set[int]] = [set() for _ in range(destinations)]
        self._taken = Held()
        self._taken_bytes = 0  # still counted in _bytes: a retried commit holds them
        self._takes = 0
        self.wake = threading.Event()
        self.urgent = threading.Event()
        self.closed = threading.Event()

    def put(self, op: Put) -> bool:
        """Queue a batch; False (and counted as dropped) when RAM is at its limit."""
        with self._lock:
            if self._bytes + op.size > self._ram_limit:
                self._refused += 1
                for index in op.had:
                    self._spared[index] = self._spared.get(index, 0) + 1
                return False
            self._bytes += op.size
            self._puts += 1
            self._ops.append(op)
            if op.save is not None:  # a later state-only save must not fold in before it
                self._slots.pop(op.save.key, None)
        self.wake.set()
        return True

    def save(self, save: FactsSave) -> bool:
        """Queue machine-facts state on its own (no batch goes with it); False when it was
        folded into a save of the same key still queued (no new op)."""
        with self._lock:
            slot = self._slots.get(save.key)
            if slot is not None:
                slot.fold(save)
                return False
            slot = self._slots[save.key] = _SaveSlot(save)
            self._ops.append(slot)
        self.wake.set()
        return True

    def ack(self, seqs: frozenset[int], destination: int = 0) -> None:
        """Queue acks of one destination; they count as acked for its reads until :meth:`synced`."""
        with self._lock:
            self._unsynced[destination] |= seqs
            self._ops.append((destination, seqs))
        self.wake.set()

    def take(self, max_puts: int, counters: tuple[int, int] = (0, 0)) -> Work:
        """Everything queued, in order, up to ``max_puts`` batches.

        ``counters``: the file's last_seq and dropped before the work is committed.
        """
        work = Work()
        with self._lock:
            while self._ops and (len(work.puts) < max_puts or (work.puts and work.puts[-1].more)):
                op = self._ops.popleft()
                if isinstance(op, Put):
                    work.puts.append(op)
                    self._taken_bytes += op.size
                    self._puts -= 1
                    if op.save is not None:
                        work.saves.append(op.save)
                elif isinstance(op, _SaveSlot):
                    work.saves.append(op.save)
                    if self._slots.get(op.save.key) is op:
                        del self._slots[op.save.key]
                else:
                    work.acks.setdefault(op[0], set()).update(op[1])
                work.n_ops += 1
            work.refused, self._refused = self._refused, 0
            work.spared, self._spared = self._spared, {}
            self._taken = Held(len(work.puts), work.refused, *counters)
            self._takes += 1
        return work

    def committed(self) -> None:
        """The taken work is committed: it no longer waits in RAM."""
        with self._lock:
            self._taken = Held()
            self._bytes -= self._taken_bytes
            self._taken_bytes = 0

    def snapshot(self) -> Snapshot:
        """Queued batches and refusals and the taken work, in one consistent look."""
        with self._lock:
            return Snapshot(self._puts, self._refused, self._taken, self._takes)

    def takes(self) -> int:
        """How many times the writer took work so far."""
        with self._lock:
            return self._takes

    def held(self) -> tuple[int, int]:
        """Batches queued here, and batches refused since the last take."""
        with self._lock:
            return self._puts, self._refused

    def pending(self) -> bool:
        """Whether anything waits for the writer."""
        with self._lock:
            return bool(self._ops) or bool(self._refused)

    def synced(self, acks: Mapping[int, Iterable[int]]) -> None:
        """The acks (per destination) are committed: readers no longer need to hide them."""
        with self._lock:
            for destination, seqs in acks.items():
                self._unsynced[destination].difference_update(seqs)

    def unsynced(self, destination: int = 0) -> int:
        """How many seqs a destination acked are not committed yet (cheap, no copy)."""
        with self._lock:
            return len(self._unsynced[destination])

    def acked(self, destination: int = 0) -> frozenset[int]:
        """Seqs a destination acked whose ack is perhaps not committed yet."""
        with self._lock:
            return frozenset(self._unsynced[destination])

    def close(self) -> None:
        """Ask the writer to commit what is left and stop."""
        self.closed.set()
        self.urgent.set()
        self.wake.set()
