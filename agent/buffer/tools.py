"""Offline upkeep of a buffer file (``edge-agent buffer export|purge``).

Both are safe next to a running agent: they use their own connections and
short transactions, and the agent's writer reads the counters inside each of
its transactions.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from agent.buffer.reader import connect_ro, fetch_rows, query_stats, translate
from agent.buffer.records import BUSY_TIMEOUT_MS, SCHEMA_VERSION
from agent.errors import StorageError

_EXPORT_PAGE = 500


def export_pending(path: Path) -> Iterator[bytes]:
    """Yield the payload (the exact MQTT message) of every pending batch, in seq order.

    Read-only and safe next to a running agent: each page is its own short read
    transaction, and batches committed after the export began are not included.
    Raise :class:`StorageError` if the file is missing or not a buffer.
    """
    path = Path(path)
    conn = connect_ro(path)
    try:
        last = translate(path, query_stats, conn, path).last_seq
        after = 0
        while after < last:
            rows = translate(path, fetch_rows, conn, after, _EXPORT_PAGE, frozenset())
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
        raise StorageError(f"no buffer database at {path}")
    try:
        conn = sqlite3.connect(path.resolve().as_uri() + "?mode=rw", uri=True, isolation_level=None)
    except sqlite3.Error as exc:
        raise StorageError(f"cannot open buffer {path}: {exc}") from exc
    try:
        return translate(path, _purge_rows, conn, path)
    finally:
        conn.close()


def _purge_rows(conn: sqlite3.Connection, path: Path) -> int:
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA synchronous=FULL")
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version not in (1, SCHEMA_VERSION):
        raise StorageError(f"{path} is not a buffer of schema version 1 or {SCHEMA_VERSION}")
    conn.execute("BEGIN IMMEDIATE")
    try:
        n = conn.execute("SELECT count(*) FROM batches").fetchone()[0]
        if version == SCHEMA_VERSION:  # what a destination had already is not lost to it
            conn.execute(
                "UPDATE destinations SET pending = 0, spared = spared + (SELECT count(*)"
                " FROM batches WHERE batches.acked & (1 << destinations.bit) != 0)"
            )
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
