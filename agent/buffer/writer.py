"""The writer thread: it owns the store and commits what the event loop hands over.

``Buffer.put`` and ``Buffer.ack`` only append to the in-memory inbox; the writer
commits whatever has arrived as ONE transaction, so a commit costs one fsync
however many batches it holds. If commits keep failing (disk full with the WAL
unable to checkpoint, I/O errors) it keeps the batches in RAM (up to 32 MiB,
beyond that new batches are refused and counted) and retries with backoff up
to 10 s, so it recovers once space returns.

A full disk (:class:`~agent.errors.DiskFull`) is reported as ``disk_full``, not
as a hung writer: ``busy_since`` tells a commit that is stuck (a hung fsync)
from one that fails fast and is retried. If the file cannot even be opened
on a full disk (SQLite cannot create its ``-shm``), the writer reports ready
with ``opened`` False, keeps what arrives in RAM and retries the open.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable

from agent.buffer.inbox import Inbox, Work
from agent.buffer.records import StoreConfig
from agent.buffer.schema import space_refused
from agent.buffer.store import Store
from agent.errors import DiskFull, StorageError

log = logging.getLogger(__name__)

_BACKOFF_MAX_S = 10.0


class CommitBudget:
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


class Writer(threading.Thread):
    """Owns the store: opens it, commits the inbox in groups, closes it."""

    def __init__(
        self,
        config: StoreConfig,
        inbox: Inbox,
        interval: float,
        max_rows: int,
        ready: concurrent.futures.Future[int],
        notify: Callable[[int, int, StorageError | None, bool], None],
    ) -> None:
        super().__init__(name="buffer-writer", daemon=True)
        self._config, self._inbox, self._ready, self._notify = config, inbox, ready, notify
        self._interval, self._max_rows = interval, max_rows
        # Read by the event loop without a lock (single assignments under the GIL).
        self.opened = False
        self.disk_full = False
        self.busy_since: float | None = None  # monotonic start of the commit in progress

    def run(self) -> None:
        store = self._open()
        if store is None:
            return
        try:
            self._loop(store)
        except Exception as exc:
            log.exception("buffer %s: writer stopped; %s", self._config.path, self._lost())
            self._notify(0, store.last_seq, StorageError(f"buffer writer stopped: {exc}"), True)
        finally:
            self.busy_since = None
            with contextlib.suppress(sqlite3.Error):
                store.close()

    def _lost(self, work: Work | None = None) -> str:
        """What a stop now loses from RAM, in words, for its log line."""
        batches, refused = self._inbox.held()
        if work is not None:
            batches, refused = batches + len(work.puts), refused + work.refused
        return (
            f"{batches} batches held in RAM are lost, and {refused} more refused"
            " for want of RAM go uncounted in dropped_batches"
        )

    def _open(self) -> Store | None:
        """The store; on a full disk, report ready at once and retry the open in the background."""
        backoff = 0.5
        while True:
            try:
                self.busy_since = time.monotonic()  # a hung open is a hang (see Buffer.healthy)
                store = Store(self._config)
            except BaseException as exc:
                self.busy_since = None
                if not isinstance(exc, StorageError):
                    exc = StorageError(f"cannot open buffer {self._config.path}: {exc}")
                if self._inbox.closed.is_set() or not space_refused(exc, self._config.path):
                    if not self._ready.done():
                        self._ready.set_exception(exc)
                        return None
                    log.error("%s; %s", exc, self._lost())  # noqa: TRY400
                    self._notify(0, 0, exc, True)
                    return None
                if not self._ready.done():
                    log.warning("%s; the disk is full: polling goes on into RAM, retrying", exc)
                    self.disk_full = True
                    self._ready.set_result(0)
                else:
                    self._notify(0, 0, DiskFull(str(exc)), False)  # answers flush() waiters
                log.debug("buffer %s: open retried in %.1f s", self._config.path, backoff)
                self._inbox.closed.wait(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX_S)
                continue
            self.busy_since = None
            if self._ready.done():
                log.info("buffer %s opened: the disk has room again", self._config.path)
            self.opened, self.disk_full = True, False
            if not self._ready.done():
                self._ready.set_result(store.last_seq)
            else:
                self._notify(0, store.last_seq, None, False)
            return store

    def _loop(self, store: Store) -> None:
        inbox, backoff = self._inbox, 0.5
        commits = CommitBudget(self._interval)
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
                work = inbox.take(self._max_rows, (store.last_seq, store.dropped))
                if work.n_ops == 0 and work.refused == 0:
                    work = None
                    if inbox.closed.is_set():
                        return
                    continue
            last_seq = self._commit(store, work, backoff)
            if last_seq is None:
                if inbox.closed.is_set():
                    log.error("buffer %s: not committed: %s", self._config.path, self._lost(work))
                    return
                inbox.closed.wait(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX_S)
                continue
            inbox.synced(work.acks)
            self._notify(work.n_ops, last_seq, None, False)
            commits.spend()
            work, backoff = None, 0.5
            if inbox.pending():
                inbox.urgent.set()  # a backlog beyond max_batch_rows: commit again at once
                inbox.wake.set()

    def _commit(self, store: Store, work: Work, backoff: float) -> int | None:
        """Commit ``work``; None (logged, reported) when it failed and is to be retried."""
        self.busy_since = time.monotonic()
        try:
            last_seq = store.commit(work)
        except StorageError as exc:
            self.busy_since = None
            full = isinstance(exc, DiskFull)
            if full and not self.disk_full:
                log.warning("%s; the disk is full: batches wait in RAM, retrying", exc)
            elif backoff == 0.5 and not full:
                log.warning("%s; retrying in %.1f s", exc, backoff)
            else:
                log.debug("%s; retrying in %.1f s", exc, backoff)
            self.disk_full = full
            self._notify(0, store.last_seq, exc, False)
            return None
        self.busy_since = None
        if self.disk_full:
            log.info("buffer %s: the disk has room again; commits resumed", self._config.path)
        self.disk_full = False
        self._inbox.committed()
        return last_seq
