"""Reading the buffer file: read-only connections, pending rows in seq order, stats.

In WAL mode a reader sees the last committed snapshot without waiting for the
writer. Each read is one short transaction, so readers never hold back a
checkpoint. Safe next to a running agent, and never creates the file.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from agent.buffer.records import (
    BUSY_TIMEOUT_MS,
    BufferStats,
    DestinationStats,
    FactRow,
    PendingBatch,
)
from agent.errors import StorageError

T = TypeVar("T")


def translate(path: Path, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)``, with any sqlite3 error raised as a :class:`StorageError` naming ``path``."""
    try:
        return fn(*args)
    except sqlite3.Error as exc:
        raise StorageError(f"buffer {path}: {exc}") from exc


def connect_ro(path: Path, *, immutable: bool = False) -> sqlite3.Connection:
    """A read-only connection to an existing buffer file (usable from any one thread).

    ``immutable``: no locks and no -shm (nothing may write the file meanwhile).
    """
    if not path.is_file():
        raise StorageError(f"no buffer database at {path}")
    uri = path.resolve().as_uri() + ("?mode=ro&immutable=1" if immutable else "?mode=ro")
    try:
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    except sqlite3.Error as exc:
        raise StorageError(f"cannot open buffer {path} read-only: {exc}") from exc
    return conn


def fetch_rows(
    conn: sqlite3.Connection, after_seq: int, limit: int, acked: frozenset[int], mask: int = 0
) -> list[PendingBatch]:
    """Up to ``limit`` rows with ``seq > after_seq`` in seq order, skipping ``acked`` seqs.

    ``mask``: the destination's bit when several share the file; rows with it
    set are skipped (that destination has them, another has not yet).
    """
    # ``acked`` holds seqs acked but maybe not committed yet. It was copied before
    # this read began, and the writer forgets a seq only after committing its
    # delete, so a row this snapshot still shows is always filtered out.
    out: list[PendingBatch] = []
    while len(out) < limit:
        want = limit - len(out)
        if mask:
            rows = conn.execute(
                "SELECT seq, device, created_ms, n_values, payload, acked FROM batches"
                " WHERE seq > ? ORDER BY seq LIMIT ?",
                (after_seq, want),
            ).fetchall()
            out.extend(
                PendingBatch(*row[:5]) for row in rows if not row[5] & mask and row[0] not in acked
            )
        else:
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


def query_stats(
    conn: sqlite3.Connection, path: Path, floors: Mapping[str, int] | None = None
) -> BufferStats:
    """The committed counters of the file behind ``conn``, read in one transaction.

    ``floors``: per destination a seq below which it has nothing pending (a
    hint that spares a scan over rows only others still need).
    """
    conn.execute("BEGIN")
    try:
        meta = conn.execute(
            "SELECT pending_batches, pending_bytes, dropped_batches, last_seq, max_bytes FROM meta"
        ).fetchone()
        oldest = conn.execute("SELECT created_ms FROM batches ORDER BY seq LIMIT 1").fetchone()
        if meta is not None:
            dests = _destinations(conn, meta[2], floors or {})
    finally:
        conn.execute("COMMIT")
    if meta is None:
        raise StorageError(f"buffer {path} has no meta row")
    pending, nbytes, dropped, last_seq, max_bytes = meta
    return BufferStats(
        pending_batches=pending,
        pending_bytes=nbytes,
        oldest_created_ms=oldest[0] if oldest else None,
        dropped_batches=dropped,
        last_seq=last_seq,
        file_bytes=path.stat().st_size,
        max_bytes=max_bytes,
        destinations=dests,
    )


def _destinations(
    conn: sqlite3.Connection, dropped: int, floors: Mapping[str, int]
) -> tuple[DestinationStats, ...]:
    try:
        rows = conn.execute(
            "SELECT id, bit, pending, spared FROM destinations ORDER BY bit"
        ).fetchall()
    except sqlite3.OperationalError:  # a version 1 file (no such table): one implicit destination
        return ()
    out = []
    single = len(rows) == 1
    for dest, bit, pending, spared in rows:
        first = conn.execute(
            "SELECT seq, created_ms FROM batches WHERE seq >= ? AND (? OR acked & ? = 0)"
            " ORDER BY seq LIMIT 1",
            (floors.get(dest, 0), single, 1 << bit),
        ).fetchone()
        out.append(
            DestinationStats(
                dest, pending, None if first is None else first[1],
                None if first is None else first[0], dropped - spared,
            )
        )  # fmt: skip
    return tuple(out)


def read_stats(path: Path, *, immutable: bool = False) -> BufferStats:
    """Stats of the buffer file at ``path`` on a connection of its own."""
    conn = connect_ro(path, immutable=immutable)
    try:
        return translate(path, query_stats, conn, path)
    finally:
        conn.close()


def _has_facts(conn: sqlite3.Connection) -> bool:
    """Whether the file has the machine-facts tables (a file an older agent made has not)."""
    found = conn.execute(
        "SELECT count(*) FROM sqlite_master WHERE name IN ('compute_state', 'facts')"
    ).fetchone()[0]
    return bool(found == 2)


def load_state(conn: sqlite3.Connection) -> dict[str, bytes]:
    """Every machine-facts state stored, by key."""
    if not _has_facts(conn):
        return {}
    rows = conn.execute("SELECT key, value FROM compute_state")
    return {key: bytes(value) for key, value in rows}


def read_facts(
    conn: sqlite3.Connection,
    since_ms: int | None = None,
    until_ms: int | None = None,
    source: str | None = None,
) -> list[FactRow]:
    """The facts history in ``[since_ms, until_ms)`` (of one source), in time then insert order."""
    if not _has_facts(conn):
        return []
    sql = "SELECT source, ts_ms, type, body FROM facts WHERE ts_ms >= ? AND ts_ms < ?"
    args: list[Any] = [-(1 << 62) if since_ms is None else since_ms,
                       1 << 62 if until_ms is None else until_ms]  # fmt: skip
    if source is not None:
        sql += " AND source = ?"
        args.append(source)
    rows = conn.execute(sql + " ORDER BY ts_ms, id", args)
    return [FactRow(src, ts, kind, bytes(body)) for src, ts, kind, body in rows]
