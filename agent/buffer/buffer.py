"""The event-loop side of the buffer: :class:`Buffer` and the writer's progress reports.

``put``/``ack`` append to the inbox and return at once. Reads (``fetch``,
``stats``) run on a read-only connection in a one-thread executor, so the
publisher can page through a backlog while the writer sits in an fsync.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

from agent.buffer.inbox import Inbox, Put
from agent.buffer.reader import (
    connect_ro,
    fetch_rows,
    load_state,
    query_stats,
    read_facts,
    translate,
)
from agent.buffer.reader import read_stats as read_file_stats
from agent.buffer.records import (
    MAX_DESTINATIONS,
    BufferStats,
    FactRow,
    FactsSave,
    OnFull,
    PendingBatch,
    StoreConfig,
    Synchronous,
)
from agent.buffer.split import split_batch, split_events
from agent.buffer.writer import Writer
from agent.errors import DiskFull, StorageError
from agent.message import decode_events, decode_message, is_events
from drivers.base import Reading, now_ms

T = TypeVar("T")
log = logging.getLogger(__name__)

_MIN_MAX_BYTES = 64 * 1024


class Buffer:
    """The durable, bounded queue of batches. Use as ``async with Buffer(...) as buf:``.

    ``put``/``ack`` are called from the event loop and return at once; the
    other coroutines run their SQLite work off the loop.
    """

    def __init__(
        self,
        path: Path,
        *,
        agent_id: str,
        max_bytes: int = 256_000_000,
        on_full: OnFull = "drop_oldest",
        synchronous: Synchronous = "FULL",
        commit_interval: float = 0.1,
        max_batch_rows: int = 5000,
        max_message_bytes: int | None = None,
        destinations: Sequence[str] = ("mqtt",),
    ) -> None:
        if max_bytes < _MIN_MAX_BYTES:
            raise ValueError(f"buffer max_bytes must be at least {_MIN_MAX_BYTES}")
        if on_full not in ("drop_oldest", "drop_newest"):
            raise ValueError(f"buffer on_full must be drop_oldest or drop_newest, not {on_full!r}")
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"buffer synchronous must be FULL or NORMAL, not {synchronous!r}")
        if commit_interval < 0 or max_batch_rows < 1:
            raise ValueError("buffer commit_interval must be >= 0 and max_batch_rows >= 1")
        dests = tuple(destinations)
        if not dests or len(set(dests)) != len(dests) or len(dests) > MAX_DESTINATIONS:
            raise ValueError(
                f"buffer destinations must be 1 to {MAX_DESTINATIONS} distinct ids, not {dests!r}"
            )
        self.path = Path(path)
        self.agent_id = agent_id
        self.max_bytes = max_bytes
        self._config = StoreConfig(self.path, agent_id, max_bytes, on_full, synchronous, dests)
        self._views = {d: BufferView(self, i, d) for i, d in enumerate(dests)}
        self._floors = dict.fromkeys(dests, 0)  # per destination: nothing pending below
        self._masks: list[int] = [0] * len(dests)  # its acked bit, 0 while alone
        self._commit_interval = commit_interval
        self._max_batch_rows = max_batch_rows
        self.max_message_bytes = max_message_bytes
        """Largest message (payload) a batch may encode to; larger ones are split at put."""
        self.refused_readings = 0
        """Readings refused because one alone is larger than ``max_message_bytes``."""
        self._inbox = Inbox(destinations=len(dests))
        self._writer: Writer | None = None
        self._reader: concurrent.futures.ThreadPoolExecutor | None = None
        self._ro: sqlite3.Connection | None = None  # touched only on the reader thread
        self._last_seq = 0
        self._submitted = 0
        self._processed = 0
        self._flush_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._seq_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._failed: StorageError | None = None
        self._behind_since: float | None = None  # oldest put/ack the writer has not committed

    @property
    def last_seq(self) -> int:
        """The highest committed seq, as last reported to the event loop."""
        return self._last_seq

    @property
    def disk_full(self) -> bool:
        """The last write failed for want of disk space: new batches wait in RAM."""
        return self._writer is not None and self._writer.disk_full

    def healthy(self, stall: float) -> bool:
        """True while the writer thread runs and commits: no put/ack waits longer than ``stall`` s.

        The service's systemd watchdog asks this before each ping, so a writer
        that died or hangs (a stuck fsync, a lock never released) gets the
        process restarted instead of silently buffering in RAM. A full disk is
        not a hang: while the writer fails fast on it and retries, it is healthy
        (a restart would only lose what RAM holds); one commit stuck for
        ``stall`` s still is not.
        """
        writer = self._writer
        if writer is None or not writer.is_alive() or self._failed is not None:
            return False
        now = time.monotonic()
        busy = writer.busy_since
        if busy is not None and now - busy >= stall:
            return False
        since = self._behind_since
        return writer.disk_full or since is None or now - since < stall

    async def __aenter__(self) -> Self:
        if self._writer is not None:
            raise StorageError(f"buffer {self.path} is already open")
        loop = asyncio.get_running_loop()
        ready: concurrent.futures.Future[int] = concurrent.futures.Future()
        self._inbox = Inbox(destinations=len(self._views))

        def notify(n_ops: int, last_seq: int, error: StorageError | None, dead: bool) -> None:
            with contextlib.suppress(RuntimeError):  # the loop may be gone at shutdown
                loop.call_soon_threadsafe(self._on_writer, n_ops, last_seq, error, dead)

        writer = Writer(
            self._config, self._inbox, self._commit_interval, self._max_batch_rows, ready, notify
        )
        self._failed, self._submitted, self._processed = None, 0, 0
        self._behind_since = None
        self._writer = writer
        writer.start()
        try:
            self._last_seq = await asyncio.wrap_future(ready)
        except BaseException:
            self._inbox.close()
            await asyncio.to_thread(writer.join)
            self._writer = None
            raise
        self._reader = concurrent.futures.ThreadPoolExecutor(1, "buffer-reader")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Commit everything pending, checkpoint and truncate the WAL, stop the threads."""
        writer, reader = self._writer, self._reader
        if writer is None:
            return
        self._reader = None
        if reader is not None:  # first, so the writer's connection is the last to close
            await asyncio.get_running_loop().run_in_executor(reader, self._close_reader)
            reader.shutdown(wait=True)
        self._inbox.close()
        await asyncio.to_thread(writer.join)
        self._writer = None
        self._fail_waiters(StorageError(f"buffer {self.path} is closed"))

    # ----------------------------------------------------------------- writing

    def put(self, device: str, readings: Sequence[Reading]) -> None:
        """Queue one batch of ``device`` for the next commit; never blocks.

        A batch whose message would exceed ``max_message_bytes`` is queued as
        several batches (each gets its own seq); a reading too large on its
        own is refused, logged and counted in ``refused_readings``. Raise
        :class:`StorageError` when the buffer is not open, ``ValueError`` when
        the readings cannot be encoded.
        """
        self._put(device, readings, self.max_message_bytes)

    def put_events(
        self, source: str, events: Sequence[Mapping[str, Any]], save: FactsSave | None = None
    ) -> None:
        """Queue the events of ``source`` (a machine, or the box) as one batch; never blocks.

        ``save`` (the machine's state) is committed in the same transaction as
        the batch, so a restart resumes from the state that produced exactly the
        events committed. A message above ``max_message_bytes`` is cut into
        several batches (``save`` goes with the last); an event too large alone
        is refused and counted. Raise ``ValueError`` when an event cannot be
        encoded, :class:`StorageError` when the buffer is not open.
        """
        self._check_open()
        if not events:
            if save is not None:
                self.save_facts(save)
            return
        pieces, refused = split_events(self.agent_id, source, events, self.max_message_bytes)
        created = now_ms()
        for i, (head, tail, n_events) in enumerate(pieces):
            final = i == len(pieces) - 1
            last = save if final else None
            put = Put(source, head, tail, created, n_events, save=last, more=not final)
            if self._inbox.put(put):
                self._submitted_one()
            elif last is not None:  # RAM full: the batch is dropped (counted), the state kept
                self.save_facts(last)
        if refused:
            self._refuse(source, refused, self.max_message_bytes)
            if not pieces and save is not None:
                self.save_facts(save)

    def save_facts(self, save: FactsSave) -> None:
        """Queue machine-facts state (and history) alone, for the next commit."""
        self._check_open()
        if self._inbox.save(save):  # else folded into one still queued: no new op
            self._submitted_one()

    async def load_state(self) -> dict[str, bytes]:
        """Every machine-facts state committed, by key (what a restart resumes from)."""
        return await self._read(load_state)

    @staticmethod
    def read_facts(
        path: Path,
        since_ms: int | None = None,
        until_ms: int | None = None,
        source: str | None = None,
    ) -> list[FactRow]:
        """The facts history of a buffer file, read-only (``edge-agent report``).

        Works while an agent has the file open. Raise :class:`StorageError` if
        it is missing or unreadable.
        """
        conn = connect_ro(Path(path))
        try:
            return translate(Path(path), read_facts, conn, since_ms, until_ms, source)
        finally:
            conn.close()

    def resplit(
        self,
        seq: int,
        device: str,
        payload: bytes,
        limit: int,
        *,
        created_ms: int | None = None,
    ) -> int:
        """Queue a committed batch again as pieces of at most ``limit`` bytes, then drop it.

        For a row stored before the broker's limit was known: its readings get
        new seqs (after the pending ones) and the old seq is acknowledged in
        the same or a later commit, so a crash in between leaves a duplicate,
        never a loss. The pieces keep the row's ``created_ms`` when given (the
        readings are as old as before: a backlog stays historical, the oldest
        pending age stays true); without it they are stamped now. Return the
        readings refused (too large even alone).
        Of the first destination; see :meth:`BufferView.resplit`.
        """
        return self._resplit(0, seq, device, payload, limit, created_ms)

    def _resplit(
        self,
        index: int,
        seq: int,
        device: str,
        payload: bytes,
        limit: int,
        created_ms: int | None = None,
    ) -> int:
        others = frozenset(range(len(self._views))) - {index}
        try:
            if is_events(payload):
                return self._resplit_events(index, seq, device, payload, limit, others, created_ms)
            message = decode_message(payload)
            readings = [
                Reading(r["ts"], r["values"], r.get("errors", {}), r.get("clock"))
                for r in message["readings"]
            ]
            refused = self._put(device, readings, limit, others, created_ms)
        except ValueError as exc:  # not our format: it cannot be cut, only refused
            log.warning("buffer: batch seq %d cannot be split (%s): dropped", seq, exc)
            self.refused_readings += 1
            refused = 1
        self._ack(index, [seq])
        return refused

    def _resplit_events(
        self,
        index: int,
        seq: int,
        source: str,
        payload: bytes,
        limit: int,
        others: frozenset[int],
        created_ms: int | None,
    ) -> int:
        events = decode_events(payload)["events"]
        pieces, refused = split_events(self.agent_id, source, events, limit)
        created = now_ms() if created_ms is None else created_ms
        for head, tail, n_events in pieces:
            if self._inbox.put(Put(source, head, tail, created, n_events, others)):
                self._submitted_one()
        if refused:
            self._refuse(source, refused, limit)
        self._ack(index, [seq])
        return refused

    def _put(
        self,
        device: str,
        readings: Sequence[Reading],
        limit: int | None,
        had: frozenset[int] = frozenset(),
        created_ms: int | None = None,
    ) -> int:
        self._check_open()
        pieces, refused = split_batch(self.agent_id, device, readings, limit)
        created = now_ms() if created_ms is None else created_ms
        for head, tail, n_values in pieces:
            if self._inbox.put(Put(device, head, tail, created, n_values, had)):
                self._submitted_one()
        if refused:
            self._refuse(device, len(refused), limit)
        return len(refused)

    def _refuse(self, device: str, n: int, limit: int | None) -> None:
        first = self.refused_readings == 0
        self.refused_readings += n
        (log.warning if first else log.debug)(
            "device %s: %d reading(s) refused: each alone is larger than the %s-byte "
            "message limit (mqtt.max_message_size); %d refused so far",
            device, n, f"{limit:,}", self.refused_readings,
        )  # fmt: skip

    def ack(self, seqs: Iterable[int]) -> None:
        """Delete acknowledged batches in the writer's next commit (unknown seqs are ignored).

        Of the first destination; see :meth:`BufferView.ack`.
        """
        self._ack(0, seqs)

    def _ack(self, index: int, seqs: Iterable[int]) -> None:
        self._check_open()
        batch = frozenset(seqs)
        if batch:
            self._inbox.ack(batch, index)
            self._submitted_one()

    def unsynced_acks(self) -> int:
        """Acked batches whose delete is not committed yet: a kill now would re-send them.

        The publisher counts them against its in-flight window (and hurries
        the writer with :meth:`flush`), so what a restart re-sends stays
        within ``max_inflight``.
        """
        return self._inbox.unsynced(0)

    def _submitted_one(self) -> None:
        self._submitted += 1
        if self._behind_since is None:
            self._behind_since = time.monotonic()

    async def flush(self) -> None:
        """Return once every ``put`` and ``ack`` made so far is committed.

        Raise :class:`StorageError` if that commit failed (the writer keeps the
        batches in memory and retries), :class:`DiskFull` at once while the file
        is not open yet (a start on a full disk).
        """
        self._check_open()
        if self._processed >= self._submitted:
            return
        if self._writer is not None and not self._writer.opened:
            # Started on a full disk: nothing commits before the file opens.
            raise DiskFull(f"buffer {self.path} is not open yet: the disk is full")
        future = asyncio.get_running_loop().create_future()
        self._flush_waiters.append((self._submitted, future))
        self._inbox.urgent.set()
        self._inbox.wake.set()
        await future

    async def wait_committed(
        self,
        after_seq: int,
        timeout: float | None = None,  # noqa: ASYNC109 - the publisher's interface takes one
    ) -> bool:
        """Wait until ``last_seq > after_seq``; return False if ``timeout`` passed first."""
        self._check_open()
        if self._last_seq > after_seq:
            return True
        future = asyncio.get_running_loop().create_future()
        self._seq_waiters.append((after_seq, future))
        try:
            async with asyncio.timeout(timeout):
                await future
        except TimeoutError:
            return False
        return True

    def _on_writer(self, n_ops: int, last_seq: int, error: StorageError | None, dead: bool) -> None:
        self._processed += n_ops
        if n_ops:  # progress: the stall clock restarts (or stops when caught up)
            self._behind_since = None if self._processed >= self._submitted else time.monotonic()
        self._last_seq = max(self._last_seq, last_seq)
        still: list[tuple[int, asyncio.Future[None]]] = []
        for target, future in self._flush_waiters:
            if future.done():
                continue
            if self._processed >= target:
                future.set_result(None)
            elif error is not None:
                future.set_exception(error)
            else:
                still.append((target, future))
        self._flush_waiters = still
        ready = [(s, f) for s, f in self._seq_waiters if self._last_seq > s and not f.done()]
        for _, future in ready:
            future.set_result(None)
        self._seq_waiters = [(s, f) for s, f in self._seq_waiters if not f.done()]
        if dead:
            self._failed = error
            self._fail_waiters(error or StorageError("buffer writer stopped"))

    def _fail_waiters(self, error: StorageError) -> None:
        for _, future in self._flush_waiters + self._seq_waiters:
            if not future.done():
                future.set_exception(error)
        self._flush_waiters, self._seq_waiters = [], []

    def _check_open(self) -> None:
        if self._failed is not None:
            raise self._failed
        if self._writer is None:
            raise StorageError(f"buffer {self.path} is not open")

    # ----------------------------------------------------------------- reading

    async def fetch(self, after_seq: int, limit: int) -> list[PendingBatch]:
        """Committed, unacknowledged batches with ``seq > after_seq``, in seq order.

        Of the first destination; see :meth:`BufferView.fetch`.
        """
        return await self._fetch(0, after_seq, limit)

    async def _fetch(self, index: int, after_seq: int, limit: int) -> list[PendingBatch]:
        if not self._opened():
            return []  # opened later (a full disk at start): nothing readable yet
        acked = self._inbox.acked(index)  # taken before the read: see fetch_rows
        if len(self._masks) == 1:
            return await self._read(fetch_rows, after_seq, limit, acked)
        if not self._masks[index]:
            await self._read(_load_masks, self._masks, self._config)
        return await self._read(fetch_rows, after_seq, limit, acked, self._masks[index])

    def _opened(self) -> bool:
        self._check_open()
        return self._writer is not None and self._writer.opened

    async def first_pending_seq(self) -> int | None:
        """The lowest committed, unacknowledged seq, or None when nothing is pending."""
        return await self._first_pending(0)

    async def _first_pending(self, index: int) -> int | None:
        dest = self._config.destinations[index]
        floor = self._floors[dest]
        rows = await self._fetch(index, max(0, floor - 1), 1)
        if rows:  # nothing below it is pending for this destination, now or later
            self._floors[dest] = max(self._floors[dest], rows[0].seq)
        return rows[0].seq if rows else None

    def view(self, destination: str) -> BufferView:
        """The buffer as one destination sees it: its own cursor and acks."""
        try:
            return self._views[destination]
        except KeyError:
            known = ", ".join(self._views)
            msg = f"buffer has no destination {destination!r} (it has: {known})"
            raise ValueError(msg) from None

    @property
    def destinations(self) -> tuple[str, ...]:
        """The destinations, in the order given."""
        return self._config.destinations

    def _limits_changed(self) -> None:
        limits = [v.max_message_bytes for v in self._views.values() if v.max_message_bytes]
        if limits:
            self.max_message_bytes = min(limits)

    async def stats(self) -> BufferStats:
        """Counts of the committed state, plus what waits in RAM (``held_batches``).

        ``dropped_batches`` includes refusals not yet written (RAM full while the
        disk is full). While the file is not open yet (a start on a full disk)
        the counters are read from it read-only.
        """
        for _ in range(5):  # bounded: retried only if the writer took work during the read
            ram = self._inbox.snapshot()
            if self._opened():
                stats = await self._read(query_stats, self.path, dict(self._floors))
            else:
                stats = await self._read(_stats_unopened, self.path, self._last_seq)
            if self._inbox.takes() == ram.takes:
                break
        batches, refused = ram.batches, ram.refused
        if not ram.taken.landed(stats.last_seq, stats.dropped_batches):
            batches, refused = batches + ram.taken.batches, refused + ram.taken.refused
        order = {d: i for i, d in enumerate(self._config.destinations)}
        dests = sorted((d for d in stats.destinations if d.id in order), key=lambda d: order[d.id])
        for d in dests:
            if d.first_pending_seq is not None:
                self._floors[d.id] = max(self._floors[d.id], d.first_pending_seq)
        return dataclasses.replace(
            stats,
            destinations=tuple(dests),
            max_bytes=self.max_bytes,
            dropped_batches=stats.dropped_batches + refused,
            disk_full=self.disk_full,
            held_batches=batches,
        )

    @staticmethod
    def read_stats(path: Path) -> BufferStats:
        """Stats of a buffer file, read-only: works while an agent has it open or without one.

        Never creates the file. Raise :class:`StorageError` if it is missing or unreadable.
        """
        return read_file_stats(Path(path))

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        self._check_open()
        if self._reader is None:
            raise StorageError(f"buffer {self.path} is opening or closing")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._reader, self._on_reader, fn, args)

    def _on_reader(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        if self._ro is None:
            self._ro = connect_ro(self.path)
        try:
            return translate(self.path, fn, self._ro, *args)
        except StorageError:
            self._close_reader()  # reconnect on the next read
            raise

    def _close_reader(self) -> None:
        if self._ro is not None:
            self._ro.close()
            self._ro = None


class BufferView:
    """One destination's side of the buffer: what the publisher of that destination uses.

    Each destination fetches from its own cursor and acknowledges for itself; a
    row is deleted when every destination has acknowledged it. The write side
    (``put``), the commit (``flush``) and ``last_seq`` are the buffer's.
    """

    def __init__(self, buffer: Buffer, index: int, destination: str) -> None:
        self._buffer = buffer
        self._index = index
        self.destination = destination
        self._limit: int | None = None

    @property
    def last_seq(self) -> int:
        """The highest committed seq (of the whole buffer)."""
        return self._buffer.last_seq

    @property
    def max_message_bytes(self) -> int | None:
        """This destination's message limit; the buffer cuts new batches below the smallest."""
        return self._limit

    @max_message_bytes.setter
    def max_message_bytes(self, value: int | None) -> None:
        self._limit = value
        self._buffer._limits_changed()

    async def wait_committed(self, after_seq: int, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        """Wait until ``last_seq > after_seq``; False if ``timeout`` passed first."""
        return await self._buffer.wait_committed(after_seq, timeout)

    async def fetch(self, after_seq: int, limit: int) -> list[PendingBatch]:
        """Batches after ``after_seq`` this destination has not acknowledged, in seq order."""
        return await self._buffer._fetch(self._index, after_seq, limit)

    async def first_pending_seq(self) -> int | None:
        """The lowest seq this destination has not acknowledged; None when it has everything."""
        return await self._buffer._first_pending(self._index)

    def ack(self, seqs: Iterable[int]) -> None:
        """This destination has these batches (after its broker's PUBACK, or the cloud's reply)."""
        self._buffer._ack(self._index, seqs)

    def unsynced_acks(self) -> int:
        """This destination's acks not committed yet: a kill now would have it re-send them."""
        return self._buffer._inbox.unsynced(self._index)

    async def flush(self) -> None:
        """Commit every put and ack made so far (the buffer's, not only this destination's)."""
        await self._buffer.flush()

    def resplit(
        self,
        seq: int,
        device: str,
        payload: bytes,
        limit: int,
        *,
        created_ms: int | None = None,
    ) -> int:
        """Cut a stored batch again for this destination only (see :meth:`Buffer.resplit`).

        The pieces get new seqs and start acknowledged by every other
        destination (each still gets the original seq), and the original is
        acknowledged for this one: nobody receives the readings twice.
        """
        return self._buffer._resplit(self._index, seq, device, payload, limit, created_ms)


def _load_masks(conn: sqlite3.Connection, masks: list[int], config: StoreConfig) -> None:
    """Fill ``masks`` with each destination's bit, as the writer set them up in the file."""
    bits = dict(conn.execute("SELECT id, bit FROM destinations").fetchall())
    masks[:] = [1 << bits[d] for d in config.destinations]


def _stats_unopened(conn: sqlite3.Connection, path: Path, last_seq: int) -> BufferStats:
    """The file's counters while the writer could not open it yet (``conn`` is unused).

    Read-only; with no -shm creatable on a full disk, as an immutable file (safe:
    no writer has it open, and with an empty WAL the main file holds everything).
    Unreadable: the counters the writer last reported.
    """
    del conn
    with contextlib.suppress(StorageError):
        return read_file_stats(path)
    wal = path.with_name(path.name + "-wal")
    if not wal.exists() or wal.stat().st_size == 0:
        with contextlib.suppress(StorageError):
            return read_file_stats(path, immutable=True)
    return BufferStats(0, 0, None, 0, last_seq, _file_size(path), 0)


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
