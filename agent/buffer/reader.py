"""Reading the buffer file: read-only connections, pending rows in seq order, stats.

In WAL mode a reader sees the last committed snapshot without waiting for the
writer. Each read is one short transaction, so readers never hold back a
checkpoint. Safe next to a running agent, and never creates the file.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from agent.buffer.records import BUSY_TIMEOUT_MS, BufferStats, PendingBatch
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
    conn: sqlite3.Connection, after_seq: int, limit: int, acked: frozenset[int]
) -> list[PendingBatch]:
    """Up to ``limit`` rows with ``seq > after_seq`` in seq order, skipping ``acked`` seqs."""
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


def query_stats(conn: sqlite3.Connection, path: Path) -> BufferStats:
    """The committed counters of the file behind ``conn``, read in one transaction."""
    conn.execute("BEGIN")
    try:
        meta = conn.execute(
            "SELECT pending_batches, pending_bytes, dropped_batches, last_seq, max_bytes FROM meta"
        ).fetchone()
        oldest = conn.execute("SELECT created_ms FROM batches ORDER BY seq LIMIT 1").fetchone()
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
    )


def read_stats(path: Path, *, immutable: bool = False) -> BufferStats:
    """Stats of the buffer file at ``path`` on a connection of its own."""
    conn = connect_ro(path, immutable=immutable)
    try:
        return translate(path, query_stats, conn, path)
    finally:
        conn.close()
