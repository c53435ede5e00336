"""Opening the database file: the schema, the PRAGMAs, the integrity check, corrupt files.

``PRAGMA quick_check`` runs on open. A corrupt file is renamed
``<db>.corrupt-<unix time in ms>`` (its ``-wal`` too; ``.2``, ``.3``... added
rather than overwrite an earlier one), an error is logged, and a fresh
database starts after the highest seq known from the sidecar or readable from
the old file, counting the seqs it skips in ``dropped_batches``.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from agent.buffer.records import BUSY_TIMEOUT_MS, MAX_DESTINATIONS, SCHEMA_VERSION, StoreConfig
from agent.buffer.seqfile import SeqReservation
from agent.errors import StorageError

log = logging.getLogger(__name__)

_PAGE_SIZE = 4096
SQLITE_IOERR, SQLITE_CORRUPT, SQLITE_FULL, SQLITE_CANTOPEN, SQLITE_NOTADB = 10, 11, 13, 14, 26
_NO_SPACE_BELOW = 1024 * 1024

_DESTINATIONS = """CREATE TABLE destinations (
        id TEXT PRIMARY KEY,
        bit INTEGER NOT NULL UNIQUE,  -- its bit in batches.acked
        pending INTEGER NOT NULL,     -- rows it has not acknowledged
        spared INTEGER NOT NULL)      -- of meta.dropped_batches, rows it had already"""

FACTS_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS compute_state (
        key TEXT PRIMARY KEY,      -- one machine's counters, state, shift tallies
        value BLOB NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS facts (
        id INTEGER PRIMARY KEY,
        source TEXT NOT NULL,      -- a machine, or _box
        ts_ms INTEGER NOT NULL,
        type TEXT NOT NULL,
        body BLOB NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS facts_by_time ON facts (ts_ms)",
)
"""Machine facts: the state a restart resumes from and the history ``report`` reads.

Made by the first commit that saves machine facts (``IF NOT EXISTS``), so a
site without ``analytics:`` has a file as before; an older agent ignores them."""

_SCHEMA = (
    """CREATE TABLE batches (
        seq INTEGER PRIMARY KEY,   -- given explicitly from meta.last_seq, never by SQLite
        device TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        n_values INTEGER NOT NULL,
        payload BLOB NOT NULL,
        acked INTEGER NOT NULL DEFAULT 0)  -- bit per destination that has it (2 or more)""",
    """CREATE TABLE meta (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        agent_id TEXT NOT NULL,
        last_seq INTEGER NOT NULL,
        dropped_batches INTEGER NOT NULL,
        pending_batches INTEGER NOT NULL,
        pending_bytes INTEGER NOT NULL,
        max_bytes INTEGER NOT NULL)""",
    _DESTINATIONS,
)


class _Corrupt(Exception):
    """The file failed quick_check or is not a database at all."""


def sqlite_code(exc: sqlite3.Error) -> int:
    """The primary SQLite result code of ``exc`` (of an extended one too); -1 if unknown."""
    return getattr(exc, "sqlite_errorcode", -1) & 0xFF


def no_space(path: Path) -> bool:
    """The filesystem under ``path`` has (almost) no room left: bytes or inodes."""
    try:
        st = os.statvfs(path.parent)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < _NO_SPACE_BELOW or (st.f_files > 0 and st.f_favail == 0)


def space_refused(exc: BaseException, path: Path) -> bool:
    """Whether ``exc`` (or what caused it) says the disk under ``path`` has no room.

    ENOSPC or EDQUOT from the OS, SQLITE_FULL; an I/O or cannot-open error
    counts when the filesystem has (almost) no bytes or no inodes left. A
    corrupt file never does: it goes to corrupt-file recovery.
    """
    seen: BaseException | None = exc
    for _ in range(8):  # bounded: a cause chain
        if seen is None:
            break
        if isinstance(seen, _Corrupt):
            return False
        if isinstance(seen, sqlite3.Error):
            code = sqlite_code(seen)
            if code in (SQLITE_CORRUPT, SQLITE_NOTADB):
                return False
            if code == SQLITE_FULL:
                return True
        elif isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        seen = seen.__cause__ or seen.__context__
    return no_space(path)


def open_recovering(
    config: StoreConfig, seqfile: SeqReservation, floor: int | None = None
) -> sqlite3.Connection:
    """The write connection, ready to use; a corrupt file is moved aside and replaced.

    A new file starts at the sidecar's reservation, or at ``floor`` when given:
    the last seq known to be durable, after an unclean NORMAL run whose file
    may be gone; the caller then skips up to the reservation and counts it.
    """
    path = config.path
    low = seqfile.load() if floor is None else floor
    try:
        return _open(config, start=(low, 0))
    except _Corrupt as exc:
        salvage = _salvage(path)
        aside = _move_aside(path)
        start = max(low, salvage.last_seq)
        log.error(  # noqa: TRY400 - the cause is known and stated; no traceback needed
            "buffer %s is corrupt (%s): moved to %s; %s pending batches in it are not "
            "published; new seqs start after %s",
            path,
            exc,
            aside,
            salvage.pending if salvage.readable else "all",
            start,
        )
        return _open(config, start=(start, _dropped_after(salvage, start)))


def _open(config: StoreConfig, start: tuple[int, int]) -> sqlite3.Connection:
    path = config.path
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise StorageError(f"cannot open buffer {path}: {exc}") from exc
    try:
        _prepare(conn, config, start)
    except sqlite3.Error as exc:
        conn.close()
        if sqlite_code(exc) in (SQLITE_CORRUPT, SQLITE_NOTADB):
            raise _Corrupt(str(exc)) from exc
        raise StorageError(f"cannot open buffer {path}: {exc}") from exc
    except BaseException:
        conn.close()
        raise
    return conn


def _prepare(conn: sqlite3.Connection, cfg: StoreConfig, start: tuple[int, int]) -> None:
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    if conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0:
        # Only settable before the first table exists. Incremental auto-vacuum
        # lets a lowered max_bytes shrink the file on the next open.
        conn.execute(f"PRAGMA page_size={_PAGE_SIZE}")
        conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
    if conn.execute("PRAGMA journal_mode=WAL").fetchone()[0].lower() != "wal":
        raise StorageError(f"buffer {cfg.path}: cannot switch to WAL mode")
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
    elif version == 1:
        _upgrade_v1(conn)
    elif version != SCHEMA_VERSION:
        raise StorageError(
            f"buffer {cfg.path} has schema version {version}; this agent knows "
            f"{SCHEMA_VERSION}. Use the newer agent or move the file away."
        )
    old = conn.execute("SELECT agent_id FROM meta").fetchone()[0]
    if old != cfg.agent_id:
        log.warning(
            "buffer %s was written by agent %s, now used by %s", cfg.path, old, cfg.agent_id
        )
    conn.execute("UPDATE meta SET agent_id = ?, max_bytes = ?", (cfg.agent_id, cfg.max_bytes))
    sync_destinations(conn, cfg.destinations)


def _upgrade_v1(conn: sqlite3.Connection) -> None:
    """Version 1 (one destination, acked rows deleted) to 2: nothing to move, two additions."""
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("ALTER TABLE batches ADD COLUMN acked INTEGER NOT NULL DEFAULT 0")
    conn.execute(_DESTINATIONS)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    conn.execute("COMMIT")


def sync_destinations(conn: sqlite3.Connection, wanted: tuple[str, ...]) -> None:
    """Make the ``destinations`` table hold ``wanted``, in one transaction when it changes.

    A new destination gets a free bit and every row in the file as pending (it
    receives what the buffer still holds). A removed one's bit is cleared, and
    rows every remaining destination has are deleted. With one destination
    left, acked rows are deleted at once, so no row carries its bit.
    """
    have = dict(conn.execute("SELECT id, bit FROM destinations").fetchall())
    if set(have) == set(wanted):
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        for gone in set(have) - set(wanted):
            mask = 1 << have.pop(gone)
            conn.execute("UPDATE batches SET acked = acked & ? WHERE acked & ? != 0", (~mask, mask))
            conn.execute("DELETE FROM destinations WHERE id = ?", (gone,))
            log.info("buffer: destination %s removed; its cursor is gone", gone)
        rows = conn.execute("SELECT count(*) FROM batches").fetchone()[0]
        dropped = conn.execute("SELECT dropped_batches FROM meta").fetchone()[0]
        free = (bit for bit in range(MAX_DESTINATIONS) if bit not in have.values())
        for new in (d for d in wanted if d not in have):
            have[new] = next(free)
            conn.execute(
                "INSERT INTO destinations VALUES (?, ?, ?, ?)", (new, have[new], rows, dropped)
            )
        full = sum(1 << bit for bit in have.values())
        n, nbytes = conn.execute(
            "SELECT count(*), coalesce(sum(length(payload)), 0) FROM batches WHERE acked & ? = ?",
            (full, full),
        ).fetchone()
        if n:
            conn.execute("DELETE FROM batches WHERE acked & ? = ?", (full, full))
            conn.execute(
                "UPDATE meta SET pending_batches = pending_batches - ?,"
                " pending_bytes = pending_bytes - ?",
                (n, nbytes),
            )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


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


def _dropped_after(salvage: _Salvage, start: int) -> int:
    """The new file's ``dropped_batches``: every seq up to ``start`` no consumer will see.

    The old drops, its unpublished rows, and the seqs between its last one and
    ``start`` (the unused rest of the sidecar's reservation), so that the gap a
    consumer sees is explained by the counter. An unreadable file has no known
    last seq: every seq up to ``start`` is counted, an upper bound.
    """
    return salvage.dropped + salvage.pending + max(0, start - salvage.last_seq)


def _move_aside(path: Path) -> Path:
    """Rename the file (and its WAL) to a name no earlier corrupt file has."""
    stem = f"{path.name}.corrupt-{time.time_ns() // 1_000_000}"
    aside = path.with_name(stem)
    for n in itertools.count(2):  # never overwrite: two corruptions in one ms stay apart
        if not any(os.path.lexists(f"{aside}{s}") for s in ("", "-wal")):
            break
        aside = path.with_name(f"{stem}.{n}")
    for suffix in ("", "-wal"):
        with contextlib.suppress(FileNotFoundError):
            Path(f"{path}{suffix}").rename(f"{aside}{suffix}")
    with contextlib.suppress(FileNotFoundError):
        Path(f"{path}-shm").unlink()  # derived from the WAL; worthless without the db
    return aside
