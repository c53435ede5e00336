"""The write connection: every statement that changes the database, and the size cap.

``PRAGMA max_page_count`` (set on every open, it is not persistent) caps the
main file at ``max_bytes``. Before inserting, the store compares the pages the
new rows need with the free pages (``page_count``/``freelist_count``) and drops
the oldest rows (``drop_oldest``) or refuses the new batches (``drop_newest``),
counting them. If SQLite still reports SQLITE_FULL, the same transaction is measured with
the cap lifted (and rolled back): only if it needs more pages than the cap
allows was it the cap (the estimate was short), and it is retried with that
much more room made under the cap.

A full disk is not the cap: SQLITE_FULL from a transaction that fits under
the cap, or ENOSPC on the seq sidecar, raises :class:`~agent.errors.DiskFull`
and nothing is dropped for it, neither committed rows nor new batches; the
writer keeps the batches in RAM and retries.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from agent.buffer.inbox import Put, Work
from agent.buffer.records import StoreConfig
from agent.buffer.schema import (
    FACTS_SCHEMA,
    SQLITE_FULL,
    open_recovering,
    space_refused,
    sqlite_code,
)
from agent.buffer.seqfile import (
    NORMAL_SEQ_BLOCK,
    SEQ_BLOCK,
    RunMarker,
    SeqReservation,
    seq_ranges,
)
from agent.errors import DiskFull, StorageError
from agent.message import splice_seq

log = logging.getLogger(__name__)

_FULL_RETRIES = 8
_WAL_TRUNCATE_ABOVE = 1024 * 1024
_NO_CAP = 1 << 30  # max_page_count while measuring what a transaction needs


@dataclass(slots=True)
class _Counters:
    last_seq: int
    dropped: int
    pending: int
    pending_bytes: int
    dest_pending: list[int] = field(default_factory=list)  # per destination index
    dest_spared: list[int] = field(default_factory=list)


class Store:
    """The write connection and every statement that changes the database."""

    def __init__(self, config: StoreConfig) -> None:
        self.config = config
        block = NORMAL_SEQ_BLOCK if config.synchronous == "NORMAL" else SEQ_BLOCK
        self.seqfile = SeqReservation(config.path.with_name(config.path.name + ".seq"), block)
        self.marker = RunMarker(config.path.with_name(config.path.name + ".open"))
        unclean = self.marker.previous()
        # After an unclean NORMAL run a new file (the old one lost whole) starts where
        # that run started, so the skip up to the reservation is counted too.
        floor = self.marker.base() if unclean == "NORMAL" else None
        self.conn = open_recovering(config, self.seqfile, floor)
        try:
            self._start(unclean)
        except BaseException:
            self.conn.close()  # the writer retries the open (a full disk): leak no handle
            raise

    def _start(self, unclean: str | None) -> None:
        config = self.config
        bits = dict(self.conn.execute("SELECT id, bit FROM destinations").fetchall())
        self.masks = [1 << bits[d] for d in config.destinations]
        self.full = sum(self.masks)
        self.single = len(self.masks) == 1
        page_size = int(self._one("PRAGMA page_size"))
        self.max_pages = config.max_bytes // page_size
        self.reserve_pages = 4 + self.max_pages // 50  # schema, meta, interior b-tree pages
        self.space = PageMath(page_size)
        self._full = False
        self._fit_cap()
        base = self._counters().last_seq  # durable: in the file as found (or its floor)
        if unclean == "NORMAL":
            self._write(self._skip_unsynced)
        self.marker.write(config.synchronous, base)  # before any commit of this run
        counters = self._counters()
        try:
            self.seqfile.ensure(counters.last_seq)
        except StorageError as exc:  # retried before the first commit above it (_apply)
            log.warning("buffer %s: %s", config.path, exc)
        self.last_seq, self.dropped = counters.last_seq, counters.dropped

    # ---------------------------------------------------------------- the cap

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

    def _skip_unsynced(self, c: _Counters) -> None:
        """After an unclean NORMAL run: continue above every seq it may have handed out.

        Its last commits may have been published and then lost with the power;
        the sidecar was synced before any of them, so above it no seq was used.
        The skipped seqs count as dropped: some were lost, the rest never used.
        """
        skipped = self.seqfile.reserved - c.last_seq
        if skipped <= 0:
            return
        log.warning(
            "buffer %s was not closed cleanly under synchronous=NORMAL: seqs %s..%s are "
            "skipped (those committed in its last moments may be lost) and counted as dropped",
            self.config.path,
            c.last_seq + 1,
            self.seqfile.reserved,
        )
        c.last_seq, c.dropped = self.seqfile.reserved, c.dropped + skipped

    # ---------------------------------------------------------------- commits

    def commit(self, work: Work) -> int:
        """Apply ``work`` in one transaction; return the new last_seq.

        Raise :class:`DiskFull` when the disk (not the cap) has no room, and
        :class:`StorageError` for other failures; nothing was changed then.

        A commit of deletes only is not synced (``synchronous=NORMAL`` for it):
        losing it loses no batch, only brings its rows back as re-sends, and
        the next synced commit carries it to the disk. It makes the deletes the
        publisher hurries (its window counts unsynced acks) cost no fsync.
        """
        relax = (
            not work.puts
            and not work.refused
            and not work.saves
            and self.config.synchronous == "FULL"
        )
        if not relax:
            return self._commit(work)
        self.conn.execute("PRAGMA synchronous=NORMAL")
        try:
            return self._commit(work)
        finally:
            self.conn.execute("PRAGMA synchronous=FULL")

    def _commit(self, work: Work) -> int:
        extra, dropped_before = 0, self.dropped
        for attempt in range(_FULL_RETRIES):
            try:
                c = self._write(functools.partial(self._apply, work=work, extra_pages=extra))
            except sqlite3.Error as exc:
                code = sqlite_code(exc)
                over = self._over_cap(work, extra) if code == SQLITE_FULL else 0
                if over > 0 and attempt < _FULL_RETRIES - 1:
                    extra += over + 2  # the cap, and the estimate was short by ``over`` pages
                    continue
                error = DiskFull if space_refused(exc, self.config.path) else StorageError
                raise error(f"buffer {self.config.path}: commit failed: {exc}") from exc
            self.last_seq, self.dropped = c.last_seq, c.dropped
            self._note_full(c, dropping=c.dropped > dropped_before)
            if c.pending == 0:
                self._truncate_wal()
            return c.last_seq
        raise AssertionError("unreachable")

    def _over_cap(self, work: Work, extra_pages: int) -> int:
        """Pages past the cap the failed transaction needs; <= 0: the disk refused it, not the cap.

        SQLITE_FULL does not say which of the two it was, so the same transaction
        is run again with the cap lifted and rolled back: its page count is what
        it needs. Only in the page cache (nothing is written unless the cache
        spills, and a spill failing says the disk is full). Only when it is over
        the cap may rows be dropped to make room.
        """
        self.conn.execute(f"PRAGMA max_page_count={_NO_CAP}")
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                self._apply(self._counters(), work, extra_pages, reserve=False)
                size = int(self._one("PRAGMA page_count"))
            finally:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
        except sqlite3.Error as exc:
            if sqlite_code(exc) == SQLITE_FULL:
                return 0  # the page cache spilled into a WAL the disk cannot grow
            raise
        finally:
            self.conn.execute(f"PRAGMA max_page_count={self.max_pages}")
        return size - self.max_pages

    def _write(self, body: Callable[[_Counters], None]) -> _Counters:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            c = self._counters()
            body(c)
            self.conn.execute(
                "UPDATE meta SET last_seq=?, dropped_batches=?, pending_batches=?, pending_bytes=?",
                (c.last_seq, c.dropped, c.pending, c.pending_bytes),
            )
            if self.single:
                c.dest_pending[0] = c.pending
            self.conn.executemany(
                "UPDATE destinations SET pending=?, spared=? WHERE id=?",
                zip(c.dest_pending, c.dest_spared, self.config.destinations, strict=True),
            )
            self.conn.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:  # SQLITE_FULL may already have rolled it back
                self.conn.execute("ROLLBACK")
            raise
        return c

    def _apply(self, c: _Counters, work: Work, extra_pages: int, *, reserve: bool = True) -> None:
        for index, seqs in work.acks.items():
            if self.single:
                self._delete_acked(c, seqs)
            else:
                self._mark_acked(c, index, seqs)
        c.dropped += work.refused
        for index, n in work.spared.items():
            self._count_had(c, (index,), n)
        self._save_facts(work)
        puts = self._admit(c, work.puts, extra_pages)
        if not puts:
            return
        first = c.last_seq + 1
        rows = [
            (seq, p.device, p.created_ms, p.n_values, splice_seq(p.head, seq, p.tail),
             self._had_mask(p))
            for seq, p in enumerate(puts, first)
        ]  # fmt: skip
        c.last_seq = first + len(rows) - 1
        if reserve:  # durable before the commit that uses the seqs
            self.seqfile.ensure(c.last_seq)
        self.conn.executemany(
            "INSERT INTO batches (seq, device, created_ms, n_values, payload, acked)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            rows,
        )
        c.pending += len(rows)
        c.pending_bytes += sum(len(row[4]) for row in rows)
        if not self.single:  # alone, its pending count is meta's (set in _write)
            for index, mask in enumerate(self.masks):
                c.dest_pending[index] += sum(1 for row in rows if not row[5] & mask)

    def _save_facts(self, work: Work) -> None:
        """Machine-facts state and history, in the same transaction as the batches.

        Applied even when the cap refuses a batch that carried it: the refusal is
        counted, and the state already includes what the refused events said.
        """
        if work.saves:  # made with the first save (a rollback undoes them: made again)
            for statement in FACTS_SCHEMA:
                self.conn.execute(statement)
        for save in work.saves:
            if save.state is not None:
                self.conn.execute(
                    "INSERT INTO compute_state (key, value) VALUES (?, ?)"
                    " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (save.key, save.state),
                )
            if save.facts:
                self.conn.executemany(
                    "INSERT INTO facts (source, ts_ms, type, body) VALUES (?, ?, ?, ?)",
                    [(f.source, f.ts_ms, f.type, f.body) for f in save.facts],
                )
            if save.prune_before_ms is not None:
                self.conn.execute("DELETE FROM facts WHERE ts_ms < ?", (save.prune_before_ms,))

    def _had_mask(self, put: Put) -> int:
        return sum(self.masks[i] for i in put.had) if put.had and not self.single else 0

    def _delete_acked(self, c: _Counters, seqs: set[int]) -> None:
        """One destination: an acked row is done, deleted at once."""
        for low, high in seq_ranges(seqs):
            n, nbytes = self.conn.execute(
                "SELECT count(*), coalesce(sum(length(payload)), 0) FROM batches"
                " WHERE seq BETWEEN ? AND ?",
                (low, high),
            ).fetchone()
            self.conn.execute("DELETE FROM batches WHERE seq BETWEEN ? AND ?", (low, high))
            c.pending -= n
            c.pending_bytes -= nbytes

    def _mark_acked(self, c: _Counters, index: int, seqs: set[int]) -> None:
        """Several destinations: set this one's bit; a row every destination has is deleted."""
        mask, full = self.masks[index], self.full
        for low, high in seq_ranges(seqs):
            marked = self.conn.execute(
                "UPDATE batches SET acked = acked | ? WHERE seq BETWEEN ? AND ? AND acked & ? = 0",
                (mask, low, high, mask),
            ).rowcount
            c.dest_pending[index] -= marked
            if not marked:
                continue
            n, nbytes = self.conn.execute(
                "SELECT count(*), coalesce(sum(length(payload)), 0) FROM batches"
                " WHERE seq BETWEEN ? AND ? AND acked = ?",
                (low, high, full),
            ).fetchone()
            if n:
                self.conn.execute(
                    "DELETE FROM batches WHERE seq BETWEEN ? AND ? AND acked = ?", (low, high, full)
                )
                c.pending -= n
                c.pending_bytes -= nbytes

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
            refused = admitted.pop(index)
            need -= costs.pop(index)
            c.dropped += 1
            self._count_had(c, refused.had)
        return admitted

    def _count_had(self, c: _Counters, had: Iterable[int], n: int = 1) -> None:
        """``n`` refused batches the destinations ``had`` already have (a cut piece): spared."""
        if not self.single:
            for index in had:
                c.dest_spared[index] += n

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
            self._count_spared(c, upto, n)
            self.conn.execute("DELETE FROM batches WHERE seq <= ?", (upto,))
            c.pending -= n
            c.pending_bytes -= nbytes
            c.dropped += n

    def _count_spared(self, c: _Counters, upto: int, n: int) -> None:
        """Rows up to ``upto`` (``n`` of them) go: per destination, what it had already."""
        if self.single:
            return  # its pending follows meta's; every dropped row was pending for it
        for index, mask in enumerate(self.masks):
            had = self.conn.execute(
                "SELECT count(*) FROM batches WHERE seq <= ? AND acked & ? != 0", (upto, mask)
            ).fetchone()[0]
            c.dest_spared[index] += had
            c.dest_pending[index] -= n - had

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
        """Pages still free under the cap (the disk's free space is not asked here)."""
        size = int(self._one("PRAGMA page_count"))
        return self.max_pages - size + int(self._one("PRAGMA freelist_count"))

    def _truncate_wal(self) -> None:
        wal = self.config.path.with_name(self.config.path.name + "-wal")
        with contextlib.suppress(OSError):
            if wal.stat().st_size > _WAL_TRUNCATE_ABOVE:
                self._checkpoint()

    def _checkpoint(self) -> bool:
        """Checkpoint and truncate the WAL; True when every frame reached the synced file."""
        try:
            busy, _, _ = self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.Error as exc:
            log.warning("buffer %s: checkpoint failed: %s", self.config.path, exc)
            return False
        return int(busy) == 0

    def _counters(self) -> _Counters:
        row = self.conn.execute(
            "SELECT last_seq, dropped_batches, pending_batches, pending_bytes FROM meta"
        ).fetchone()
        dests = {
            d: (p, s)
            for d, p, s in self.conn.execute("SELECT id, pending, spared FROM destinations")
        }
        mine = [dests[d] for d in self.config.destinations]
        last_seq, dropped, pending, pending_bytes = row
        return _Counters(
            last_seq, dropped, pending, pending_bytes, [p for p, _ in mine], [s for _, s in mine]
        )

    def _one(self, sql: str) -> Any:
        return self.conn.execute(sql).fetchone()[0]

    def close(self) -> None:
        clean = self._checkpoint()
        self.conn.close()
        if clean:  # else the next open treats this run as cut (NORMAL: seqs skipped)
            with contextlib.suppress(OSError):
                self.marker.remove()


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
