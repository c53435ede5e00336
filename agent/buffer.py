"""The durable queue between polling and publishing: one SQLite file, WAL mode.

Every batch a device task hands to :meth:`Buffer.put` is committed to SQLite
before the publisher can see it; a row is deleted only when the publisher acks
it (after the broker's PUBACK). This module is the only one that imports sqlite3.

Threads. One dedicated writer thread owns the write connection. ``put`` and
``ack`` only append to an in-memory inbox (they never block the event loop);
the writer commits whatever has arrived as ONE transaction at most every
``commit_interval`` seconds, so a commit costs one fsync however many batches
it holds. Reads (``fetch``, ``stats``) run on a second, read-only connection in
a one-thread executor: in WAL mode a reader sees the last committed snapshot
without waiting for the writer, so the publisher can page through a backlog
while the writer sits in a ``synchronous=FULL`` fsync (tens of ms on eMMC/SD).
Each read is one short transaction, so readers never hold back a checkpoint.

Durability. With ``synchronous=FULL`` (the default) a batch survives ``kill -9``
and power loss once ``flush()`` returned or ``wait_committed`` saw its seq; a
``put`` is committed at most ``commit_interval`` (+ one fsync) after the call.
``NORMAL`` survives a process crash but may lose the last commits on power loss.

Seq. ``seq`` is assigned inside the committing transaction from ``meta.last_seq``
(contiguous 1, 2, 3, ... and persisted with the rows). Batches refused before a
commit (cap, RAM overflow) get no seq and are counted in ``dropped_batches``.
A sidecar ``<db>.seq`` holds a reservation: before committing a seq above it,
the writer durably raises it by a block of seqs. So if the database is lost or
corrupt, the next database starts above every seq ever committed: a seq is
never reused, at the price of a gap (which is a real loss and is logged).

Size. ``PRAGMA max_page_count`` (set on every open, it is not persistent) caps
the main file at ``max_bytes``. Before inserting, the writer compares the pages
the new rows need with the free pages (``page_count``/``freelist_count``) and
drops the oldest rows (``drop_oldest``) or refuses the new batches
(``drop_newest``), counting them. If SQLite still reports SQLITE_FULL (the
estimate was short, or the disk is full) the transaction is retried with more
room made inside the file's current size. If commits keep failing (disk full
with the WAL unable to checkpoint, I/O errors) the writer keeps the batches in
RAM (up to 32 MiB, beyond that new batches are refused and counted) and
retries with backoff up to 10 s, so it recovers once space returns. The WAL
(bounded by ``journal_size_limit`` and the auto-checkpoint) and ``-shm`` live
outside the cap: keep the cap well below free disk.

Corruption. ``PRAGMA quick_check`` runs on open. A corrupt file is renamed
``<db>.corrupt-<unix time>`` (its ``-wal`` too) for offline inspection, an
error is logged, and a fresh database starts after the highest seq known from
the sidecar or readable from the old file. Rows in the old file are not copied.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import functools
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self, TypeVar

from agent.buffer_parts import Inbox, PageMath, Put, SeqReservation, Work, seq_ranges
from agent.message import encode_parts, splice_seq
from drivers.base import Reading, now_ms

log = logging.getLogger(__name__)

T = TypeVar("T")
OnFull = Literal["drop_oldest", "drop_newest"]
Synchronous = Literal["FULL", "NORMAL"]

SCHEMA_VERSION = 1
_PAGE_SIZE = 4096
_MIN_MAX_BYTES = 64 * 1024
_FULL_RETRIES = 8
_BUSY_TIMEOUT_MS = 5000
_WAL_TRUNCATE_ABOVE = 1024 * 1024
_SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_NOTADB = 11, 13, 26

_SCHEMA = (
    """CREATE TABLE batches (
        seq INTEGER PRIMARY KEY,   -- given explicitly from meta.last_seq, never by SQLite
        device TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        n_values INTEGER NOT NULL,
        payload BLOB NOT NULL)""",
    """CREATE TABLE meta (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        agent_id TEXT NOT NULL,
        last_seq INTEGER NOT NULL,
        dropped_batches INTEGER NOT NULL,
        pending_batches INTEGER NOT NULL,
        pending_bytes INTEGER NOT NULL,
        max_bytes INTEGER NOT NULL)""",
)


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


class BufferError(Exception):
    """The buffer cannot do what was asked; every sqlite3 error becomes one of these."""


# --------------------------------------------------------------------------- buffer


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
    ) -> None:
        if max_bytes < _MIN_MAX_BYTES:
            raise ValueError(f"buffer max_bytes must be at least {_MIN_MAX_BYTES}")
        if on_full not in ("drop_oldest", "drop_newest"):
            raise ValueError(f"buffer on_full must be drop_oldest or drop_newest, not {on_full!r}")
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"buffer synchronous must be FULL or NORMAL, not {synchronous!r}")
        if commit_interval < 0 or max_batch_rows < 1:
            raise ValueError("buffer commit_interval must be >= 0 and max_batch_rows >= 1")
        self.path = Path(path)
        self.agent_id = agent_id
        self.max_bytes = max_bytes
        self._config = _StoreConfig(self.path, agent_id, max_bytes, on_full, synchronous)
        self._commit_interval = commit_interval
        self._max_batch_rows = max_batch_rows
        self._inbox = Inbox()
        self._writer: threading.Thread | None = None
        self._reader: concurrent.futures.ThreadPoolExecutor | None = None
        self._ro: sqlite3.Connection | None = None  # touched only on the reader thread
        self._last_seq = 0
        self._submitted = 0
        self._processed = 0
        self._flush_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._seq_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._failed: BufferError | None = None
        self._behind_since: float | None = None  # oldest put/ack the writer has not committed

    @property
    def last_seq(self) -> int:
        """The highest committed seq, as last reported to the event loop."""
        return self._last_seq

    def healthy(self, stall: float) -> bool:
        """True while the writer thread runs and commits: no put/ack waits longer than ``stall`` s.

        The service's systemd watchdog asks this before each ping, so a writer
        that died or hangs (a stuck fsync, a lock never released) gets the
        process restarted instead of silently buffering in RAM.
        """
        writer = self._writer
        if writer is None or not writer.is_alive() or self._failed is not None:
            return False
        since = self._behind_since
        return since is None or time.monotonic() - since < stall

    async def __aenter__(self) -> Self:
        if self._writer is not None:
            raise BufferError(f"buffer {self.path} is already open")
        loop = asyncio.get_running_loop()
        ready: concurrent.futures.Future[int] = concurrent.futures.Future()
        self._inbox = Inbox()

        def notify(n_ops: int, last_seq: int, error: BufferError | None, dead: bool) -> None:
            with contextlib.suppress(RuntimeError):  # the loop may be gone at shutdown
                loop.call_soon_threadsafe(self._on_writer, n_ops, last_seq, error, dead)

        writer = _Writer(
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
        self._fail_waiters(BufferError(f"buffer {self.path} is closed"))

    # ----------------------------------------------------------------- writing

    def put(self, device: str, readings: Sequence[Reading]) -> None:
        """Queue one batch of ``device`` for the next commit; never blocks.

        Raise :class:`BufferError` when the buffer is not open, ``ValueError``
        when the readings cannot be encoded.
        """
        self._check_open()
        head, tail = encode_parts(self.agent_id, device, readings)
        n_values = sum(len(r.values) for r in readings)
        if self._inbox.put(Put(device, head, tail, now_ms(), n_values)):
            self._submitted_one()

    def ack(self, seqs: Iterable[int]) -> None:
        """Delete acknowledged batches in the writer's next commit (unknown seqs are ignored)."""
        self._check_open()
        batch = frozenset(seqs)
        if batch:
            self._inbox.ack(batch)
            self._submitted_one()

    def _submitted_one(self) -> None:
        self._submitted += 1
        if self._behind_since is None:
            self._behind_since = time.monotonic()

    async def flush(self) -> None:
        """Return once every ``put`` and ``ack`` made so far is committed.

        Raise :class:`BufferError` if that commit failed (the writer keeps the
        batches in memory and retries).
        """
        self._check_open()
        if self._processed >= self._submitted:
            return
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

    def _on_writer(self, n_ops: int, last_seq: int, error: BufferError | None, dead: bool) -> None:
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
            self._fail_waiters(error or BufferError("buffer writer stopped"))

    def _fail_waiters(self, error: BufferError) -> None:
        for _, future in self._flush_waiters + self._seq_waiters:
            if not future.done():
                future.set_exception(error)
        self._flush_waiters, self._seq_waiters = [], []

    def _check_open(self) -> None:
        if self._failed is not None:
            raise self._failed
        if self._writer is None:
            raise BufferError(f"buffer {self.path} is not open")

    # ----------------------------------------------------------------- reading

    async def fetch(self, after_seq: int, limit: int) -> list[PendingBatch]:
        """Committed, unacknowledged batches with ``seq > after_seq``, in seq order."""
        acked = self._inbox.acked()  # taken before the read: see _fetch_rows
        return await self._read(_fetch_rows, after_seq, limit, acked)

    async def first_pending_seq(self) -> int | None:
        """The lowest committed, unacknowledged seq, or None when nothing is pending."""
        rows = await self.fetch(0, 1)
        return rows[0].seq if rows else None

    async def stats(self) -> BufferStats:
        """Counts of the committed state (batches not yet committed are not included)."""
        stats = await self._read(_read_stats, self.path)
        return dataclasses.replace(stats, max_bytes=self.max_bytes)

    @staticmethod
    def read_stats(path: Path) -> BufferStats:
        """Stats of a buffer file, read-only: works while an agent has it open or without one.

        Never creates the file. Raise :class:`BufferError` if it is missing or unreadable.
        """
        path = Path(path)
        conn = _connect_ro(path)
        try:
            return _translate(path, _read_stats, conn, path)
        finally:
            conn.close()

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        self._check_open()
        if self._reader is None:
            raise BufferError(f"buffer {self.path} is opening or closing")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._reader, self._on_reader, fn, args)

    def _on_reader(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        if self._ro is None:
            self._ro = _connect_ro(self.path)
        try:
            return _translate(self.path, fn, self._ro, *args)
        except BufferError:
            self._close_reader()  # reconnect on the next read
            raise

    def _close_reader(self) -> None:
        if self._ro is not None:
            self._ro.close()
            self._ro = None


def _translate(path: Path, fn: Callable[..., T], *args: Any) -> T:
    try:
        return fn(*args)
    except sqlite3.Error as exc:
        raise BufferError(f"buffer {path}: {exc}") from exc


def _connect_ro(path: Path) -> sqlite3.Connection:
    if not path.is_file():
        raise BufferError(f"no buffer database at {path}")
    uri = path.resolve().as_uri() + "?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
    except sqlite3.Error as exc:
        raise BufferError(f"cannot open buffer {path} read-only: {exc}") from exc
    return conn


def _fetch_rows(
    conn: sqlite3.Connection, after_seq: int, limit: int, acked: frozenset[int]
) -> list[PendingBatch]:
    # ``acked`` holds seqs acked but maybe not committed yet. It was copied before
    # this read began, and the writer forgets a seq only after committing its
    # delete, so a row this snapshot still shows is always filtered out.
    out: list[PendingBatch] = []
    while len(out) < limit:
        want = limit - len(out)
        rows = conn.execute(
            "SELECT seq, device, created_ms, n_values, payload FROM batches"
            " WHERE seq > ? ORDER BY seq LIMIT ?",
            (after_seq, want),
        ).fetchall()
        out.extend(PendingBatch(*row) for row in rows if row[0] not in acked)
        if len(rows) < want:
            break
        after_seq = rows[-1][0]
    return out


def _read_stats(conn: sqlite3.Connection, path: Path) -> BufferStats:
    conn.execute("BEGIN")
    try:
        meta = conn.execute(
            "SELECT pending_batches, pending_bytes, dropped_batches, last_seq, max_bytes FROM meta"
        ).fetchone()
        oldest = conn.execute("SELECT created_ms FROM batches ORDER BY seq LIMIT 1").fetchone()
    finally:
        conn.execute("COMMIT")
    if meta is None:
        raise BufferError(f"buffer {path} has no meta row")
    pending, nbytes, dropped, last_seq, max_bytes = meta
    return BufferStats(
        pending_batches=pending,
        pending_bytes=nbytes,
        oldest_created_ms=oldest[0] if oldest else None,
        dropped_batches=dropped,
        last_seq=last_seq,
        file_bytes=path.stat().st_size,
        max_bytes=max_bytes,
    )


# --------------------------------------------------------------------------- store


@dataclass(frozen=True, slots=True)
class _StoreConfig:
    path: Path
    agent_id: str
    max_bytes: int
    on_full: OnFull
    synchronous: Synchronous


@dataclass(slots=True)
class _Counters:
    last_seq: int
    dropped: int
    pending: int
    pending_bytes: int


class _Corrupt(Exception):
    """The file failed quick_check or is not a database at all."""


def _code(exc: sqlite3.Error) -> int:
    return getattr(exc, "sqlite_errorcode", -1) & 0xFF  # primary code of an extended one


class _Store:
    """The write connection and every statement that changes the database."""

    def __init__(self, config: _StoreConfig) -> None:
        self.config = config
        self.seqfile = SeqReservation(config.path.with_name(config.path.name + ".seq"))
        self.conn = self._open_recovering()
        page_size = int(self._one("PRAGMA page_size"))
        self.max_pages = config.max_bytes // page_size
        self.reserve_pages = 4 + self.max_pages // 50  # schema, meta, interior b-tree pages
        self.space = PageMath(page_size)
        self._full = False
        self._no_growth = False
        self._fit_cap()
        counters = self._counters()
        self.seqfile.ensure(counters.last_seq)
        self.last_seq, self.dropped = counters.last_seq, counters.dropped

    # ---------------------------------------------------------------- opening

    def _open_recovering(self) -> sqlite3.Connection:
        path = self.config.path
        try:
            return self._open(start=(self.seqfile.load(), 0))
        except _Corrupt as exc:
            salvage = _salvage(path)
            aside = _move_aside(path)
            start = max(self.seqfile.load(), salvage.last_seq)
            log.error(  # noqa: TRY400 - the cause is known and stated; no traceback needed
                "buffer %s is corrupt (%s): moved to %s; %s pending batches in it are not "
                "published; new seqs start after %s",
                path,
                exc,
                aside,
                salvage.pending if salvage.readable else "all",
                start,
            )
            return self._open(start=(start, salvage.dropped + salvage.pending))

    def _open(self, start: tuple[int, int]) -> sqlite3.Connection:
        path = self.config.path
        try:
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise BufferError(f"cannot open buffer {path}: {exc}") from exc
        try:
            self._prepare(conn, start)
        except sqlite3.Error as exc:
            conn.close()
            if _code(exc) in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
                raise _Corrupt(str(exc)) from exc
            raise BufferError(f"cannot open buffer {path}: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        return conn

    def _prepare(self, conn: sqlite3.Connection, start: tuple[int, int]) -> None:
        cfg = self.config
        conn.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
        if conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0:
            # Only settable before the first table exists. Incremental auto-vacuum
            # lets a lowered max_bytes shrink the file on the next open.
            conn.execute(f"PRAGMA page_size={_PAGE_SIZE}")
            conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
        if conn.execute("PRAGMA journal_mode=WAL").fetchone()[0].lower() != "wal":
            raise BufferError(f"buffer {cfg.path}: cannot switch to WAL mode")
        conn.execute(f"PRAGMA synchronous={cfg.synchronous}")
        conn.execute(f"PRAGMA journal_size_limit={min(cfg.max_bytes // 4, 16 * 1024 * 1024)}")
        result = [row[0] for row in conn.execute("PRAGMA quick_check").fetchall()]
        if result != ["ok"]:
            raise _Corrupt("; ".join(map(str, result[:3])))
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            conn.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO meta VALUES (1, ?, ?, ?, 0, 0, ?)",
                (cfg.agent_id, start[0], start[1], cfg.max_bytes),
            )
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            conn.execute("COMMIT")
        elif version != SCHEMA_VERSION:
            raise BufferError(
                f"buffer {cfg.path} has schema version {version}; this agent knows "
                f"{SCHEMA_VERSION}. Use the newer agent or move the file away."
            )
        old = conn.execute("SELECT agent_id FROM meta").fetchone()[0]
        if old != cfg.agent_id:
            log.warning(
                "buffer %s was written by agent %s, now used by %s", cfg.path, old, cfg.agent_id
            )
        conn.execute("UPDATE meta SET agent_id = ?, max_bytes = ?", (cfg.agent_id, cfg.max_bytes))

    def _fit_cap(self) -> None:
        """Set max_page_count; first shrink a file bigger than the cap (cap lowered)."""
        if int(self._one("PRAGMA page_count")) > self.max_pages:
            self._write(self._shrink)
            # execute() steps a statement without result columns once, which frees
            # one page here; executescript() runs it to completion.
            self.conn.executescript("PRAGMA incremental_vacuum;")
        got = int(self._one(f"PRAGMA max_page_count={self.max_pages}"))
        if got > self.max_pages:
            log.warning(
                "buffer %s is %s pages, above its cap of %s", self.config.path, got, self.max_pages
            )

    def _shrink(self, c: _Counters) -> None:
        self._make_room(c, self.reserve_pages)

    # ---------------------------------------------------------------- commits

    def commit(self, work: Work) -> int:
        """Apply ``work`` in one transaction; return the new last_seq."""
        extra, dropped_before = 0, self.dropped
        for attempt in range(_FULL_RETRIES):
            try:
                c = self._write(functools.partial(self._apply, work=work, extra_pages=extra))
            except sqlite3.Error as exc:
                if _code(exc) != _SQLITE_FULL or attempt == _FULL_RETRIES - 1:
                    raise BufferError(f"buffer {self.config.path}: commit failed: {exc}") from exc
                # The estimate was short, or the disk is full: from now on the file
                # may not grow, and keep more pages spare.
                extra = 16 << (2 * attempt)
                self._no_growth = True
                continue
            self.last_seq, self.dropped, self._no_growth = c.last_seq, c.dropped, False
            self._note_full(c, dropping=c.dropped > dropped_before)
            if c.pending == 0:
                self._truncate_wal()
            return c.last_seq
        raise AssertionError("unreachable")

    def _write(self, body: Callable[[_Counters], None]) -> _Counters:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            c = self._counters()
            body(c)
            self.conn.execute(
                "UPDATE meta SET last_seq=?, dropped_batches=?, pending_batches=?, pending_bytes=?",
                (c.last_seq, c.dropped, c.pending, c.pending_bytes),
            )
            self.conn.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:  # SQLITE_FULL may already have rolled it back
                self.conn.execute("ROLLBACK")
            raise
        return c

    def _apply(self, c: _Counters, work: Work, extra_pages: int) -> None:
        for low, high in seq_ranges(work.acks):
            n, nbytes = self.conn.execute(
                "SELECT count(*), coalesce(sum(length(payload)), 0) FROM batches"
                " WHERE seq BETWEEN ? AND ?",
                (low, high),
            ).fetchone()
            self.conn.execute("DELETE FROM batches WHERE seq BETWEEN ? AND ?", (low, high))
            c.pending -= n
            c.pending_bytes -= nbytes
        c.dropped += work.refused
        puts = self._admit(c, work.puts, extra_pages)
        if not puts:
            return
        first = c.last_seq + 1
        rows = [
            (seq, p.device, p.created_ms, p.n_values, splice_seq(p.head, seq, p.tail))
            for seq, p in enumerate(puts, first)
        ]
        c.last_seq = first + len(rows) - 1
        self.seqfile.ensure(c.last_seq)  # durable before the commit that uses the seqs
        self.conn.executemany("INSERT INTO batches VALUES (?, ?, ?, ?, ?)", rows)
        c.pending += len(rows)
        c.pending_bytes += sum(len(row[4]) for row in rows)

    def _admit(self, c: _Counters, puts: list[Put], extra_pages: int) -> list[Put]:
        """Make room for ``puts`` under the cap, or refuse some; count every drop."""
        costs = [self.space.row_pages(p.size, len(p.device)) for p in puts]
        need = sum(costs) + self.reserve_pages + extra_pages
        if need > self._free_pages() and self.config.on_full == "drop_oldest":
            self._make_room(c, need)
        free = self._free_pages()
        admitted = list(puts)
        while admitted and need > free:  # still short: refuse the oldest or the newest
            index = 0 if self.config.on_full == "drop_oldest" else -1
            admitted.pop(index)
            need -= costs.pop(index)
            c.dropped += 1
        return admitted

    def _make_room(self, c: _Counters, need_pages: float) -> None:
        """Delete the oldest rows until ``need_pages`` pages are free (or none is left)."""
        for _ in range(64):
            deficit = need_pages - self._free_pages()
            if deficit <= 0:
                break
            rows = self.conn.execute(
                "SELECT seq, length(payload), length(device) FROM batches ORDER BY seq LIMIT 1024"
            ).fetchall()
            if not rows:
                break
            upto, freed, n, nbytes = rows[-1][0], 0.0, 0, 0
            for seq, plen, dlen in rows:
                upto, n, nbytes = seq, n + 1, nbytes + plen
                freed += self.space.row_pages(plen, dlen)
                if freed >= deficit:
                    break
            self.conn.execute("DELETE FROM batches WHERE seq <= ?", (upto,))
            c.pending -= n
            c.pending_bytes -= nbytes
            c.dropped += n

    def _note_full(self, c: _Counters, *, dropping: bool) -> None:
        if dropping and not self._full:
            log.warning(
                "buffer %s is full: %s batches (%s) dropped so far",
                self.config.path,
                c.dropped,
                self.config.on_full,
            )
        elif self._full and c.pending == 0:
            log.info("buffer %s drained; no longer full", self.config.path)
        self._full = dropping or (self._full and c.pending > 0)

    def _free_pages(self) -> int:
        size = int(self._one("PRAGMA page_count"))
        limit = min(self.max_pages, size) if self._no_growth else self.max_pages
        return limit - size + int(self._one("PRAGMA freelist_count"))

    def _truncate_wal(self) -> None:
        wal = self.config.path.with_name(self.config.path.name + "-wal")
        with contextlib.suppress(OSError):
            if wal.stat().st_size > _WAL_TRUNCATE_ABOVE:
                self._checkpoint()

    def _checkpoint(self) -> None:
        try:
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.Error as exc:
            log.warning("buffer %s: checkpoint failed: %s", self.config.path, exc)

    def _counters(self) -> _Counters:
        row = self.conn.execute(
            "SELECT last_seq, dropped_batches, pending_batches, pending_bytes FROM meta"
        ).fetchone()
        return _Counters(*row)

    def _one(self, sql: str) -> Any:
        return self.conn.execute(sql).fetchone()[0]

    def close(self) -> None:
        self._checkpoint()
        self.conn.close()


@dataclass(frozen=True, slots=True)
class _Salvage:
    readable: bool = False
    last_seq: int = 0
    dropped: int = 0
    pending: int = 0


def _salvage(path: Path) -> _Salvage:
    """Read what still can be read from a corrupt file: the highest seq and the counters."""
    try:
        conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
    except sqlite3.Error:
        return _Salvage()
    try:
        last, dropped, pending = conn.execute(
            "SELECT last_seq, dropped_batches, pending_batches FROM meta"
        ).fetchone()
        with contextlib.suppress(sqlite3.Error):
            last = max(last, conn.execute("SELECT max(seq) FROM batches").fetchone()[0] or 0)
        return _Salvage(True, last, dropped, pending)
    except (sqlite3.Error, TypeError):
        return _Salvage()
    finally:
        conn.close()


def _move_aside(path: Path) -> Path:
    aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
    for suffix in ("", "-wal"):
        with contextlib.suppress(FileNotFoundError):
            Path(f"{path}{suffix}").rename(f"{aside}{suffix}")
    with contextlib.suppress(FileNotFoundError):
        Path(f"{path}-shm").unlink()  # derived from the WAL; worthless without the db
    return aside


# --------------------------------------------------------------------------- writer


class _CommitBudget:
    """How long to gather before the next commit: a token bucket of fsyncs.

    On average at most one commit per ``interval`` (the fsync rate an SD card or
    eMMC can take for years), but a burst of up to ``BURST`` commits goes through
    at once, so readings that arrive together are not held back a whole interval.
    """

    BURST = 5.0
    GATHER_S = 0.002

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.tokens = self.BURST
        self.at = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        if self.interval > 0:
            self.tokens = min(self.BURST, self.tokens + (now - self.at) / self.interval)
        self.at = now

    def wait(self) -> float:
        """Seconds to wait before committing what the inbox holds."""
        if self.interval <= 0:
            return 0.0
        self._refill()
        missing = 1.0 - self.tokens
        return self.GATHER_S if missing <= 0 else max(self.GATHER_S, missing * self.interval)

    def spend(self) -> None:
        """One commit was made."""
        self._refill()
        self.tokens = max(0.0, self.tokens - 1.0)


class _Writer(threading.Thread):
    """Owns the store: opens it, commits the inbox in groups, closes it."""

    def __init__(
        self,
        config: _StoreConfig,
        inbox: Inbox,
        interval: float,
        max_rows: int,
        ready: concurrent.futures.Future[int],
        notify: Callable[[int, int, BufferError | None, bool], None],
    ) -> None:
        super().__init__(name="buffer-writer", daemon=True)
        self._config, self._inbox, self._ready, self._notify = config, inbox, ready, notify
        self._interval, self._max_rows = interval, max_rows

    def run(self) -> None:
        try:
            store = _Store(self._config)
        except BaseException as exc:
            if not isinstance(exc, BufferError):
                exc = BufferError(f"cannot open buffer {self._config.path}: {exc}")
            self._ready.set_exception(exc)
            return
        self._ready.set_result(store.last_seq)
        try:
            self._loop(store)
        except Exception as exc:
            log.exception("buffer %s: writer stopped", self._config.path)
            self._notify(0, store.last_seq, BufferError(f"buffer writer stopped: {exc}"), True)
        finally:
            with contextlib.suppress(sqlite3.Error):
                store.close()

    def _loop(self, store: _Store) -> None:
        inbox, backoff = self._inbox, 0.5
        commits = _CommitBudget(self._interval)
        work: Work | None = None
        while True:
            if work is None:
                if not inbox.closed.is_set():
                    inbox.wake.wait()
                    inbox.wake.clear()
                    # Group commit: within the fsync budget, commit almost at once
                    # (a short gather joins the polls of devices ticking together);
                    # past it, wait, unless flush() or close() hurries us.
                    inbox.urgent.wait(commits.wait())
                    inbox.urgent.clear()
                work = inbox.take(self._max_rows)
                if work.n_ops == 0 and work.refused == 0:
                    work = None
                    if inbox.closed.is_set():
                        return
                    continue
            try:
                last_seq = store.commit(work)
            except BufferError as exc:
                self._notify(0, store.last_seq, exc, False)
                if inbox.closed.is_set():
                    log.error("%s; %s batches not committed are lost", exc, len(work.puts))  # noqa: TRY400
                    return
                log.warning("%s; retrying in %.1f s", exc, backoff)
                inbox.closed.wait(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            inbox.synced(work.acks)
            self._notify(work.n_ops, last_seq, None, False)
            commits.spend()
            work, backoff = None, 0.5
            if inbox.pending():
                inbox.urgent.set()  # a backlog beyond max_batch_rows: commit again at once
                inbox.wake.set()


# --------------------------------------------------------------------------- offline tools

_EXPORT_PAGE = 500


def export_pending(path: Path) -> Iterator[bytes]:
    """Yield the payload (the exact MQTT message) of every pending batch, in seq order.

    Read-only and safe next to a running agent: each page is its own short read
    transaction, and batches committed after the export began are not included.
    Raise :class:`BufferError` if the file is missing or not a buffer.
    """
    path = Path(path)
    conn = _connect_ro(path)
    try:
        last = _translate(path, _read_stats, conn, path).last_seq
        after = 0
        while after < last:
            rows = _translate(path, _fetch_rows, conn, after, _EXPORT_PAGE, frozenset())
            for row in rows:
                if row.seq > last:
                    return
                yield row.payload
            if len(rows) < _EXPORT_PAGE:
                return
            after = rows[-1].seq
    finally:
        conn.close()


def purge(path: Path) -> int:
    """Delete every pending batch; return how many. They count as dropped batches.

    ``last_seq`` is kept, so seqs stay monotonic and the gap a consumer sees is
    explained by ``dropped_batches``. Safe next to a running agent (its writer
    reads the counters inside each transaction); batches it commits later stay.
    """
    path = Path(path)
    if not path.is_file():
        raise BufferError(f"no buffer database at {path}")
    try:
        conn = sqlite3.connect(path.resolve().as_uri() + "?mode=rw", uri=True, isolation_level=None)
    except sqlite3.Error as exc:
        raise BufferError(f"cannot open buffer {path}: {exc}") from exc
    try:
        return _translate(path, _purge_rows, conn, path)
    finally:
        conn.close()


def _purge_rows(conn: sqlite3.Connection, path: Path) -> int:
    conn.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA synchronous=FULL")
    if conn.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
        raise BufferError(f"{path} is not a buffer of schema version {SCHEMA_VERSION}")
    conn.execute("BEGIN IMMEDIATE")
    try:
        n = conn.execute("SELECT count(*) FROM batches").fetchone()[0]
        conn.execute("DELETE FROM batches")
        conn.execute(
            "UPDATE meta SET dropped_batches = dropped_batches + ?,"
            " pending_batches = 0, pending_bytes = 0",
            (n,),
        )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    # Give the space back to the file system (auto_vacuum is incremental); best effort.
    with contextlib.suppress(sqlite3.Error):
        conn.executescript("PRAGMA incremental_vacuum; PRAGMA wal_checkpoint(TRUNCATE);")
    return int(n)
