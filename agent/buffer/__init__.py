"""The durable queue between polling and publishing: one SQLite file, WAL mode.

Every batch a device task hands to :meth:`Buffer.put` is committed to SQLite
before the publisher can see it; a row is deleted only when the publisher acks
it (after the broker's PUBACK). This package is the only one that imports sqlite3.

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
A run marker ``<db>.open`` (removed on a clean close) tells the next open that
a ``NORMAL`` run was cut: its last commits may have been published and lost,
so seqs continue above the reservation (block 1,000 under NORMAL) and the
skipped range counts as dropped, also when the whole file was lost (a cut
before its first checkpoint: the marker holds the seq the run started from;
docs/decisions/0010-seq-after-power-loss.md).

Destinations. A buffer opened with several destinations (``destinations=``,
one per north connection) keeps one cursor per destination: ``buf.view(id)``
fetches what that destination has not acknowledged and acks for it alone (a
bit in ``batches.acked``); a row is deleted once every destination has acked
it, so a destination that is down holds back only its own cursor. With one
destination an ack deletes at once, as before. The cap still drops the oldest
rows; per destination ``never_received`` counts the dropped batches it had
not acknowledged (``destinations`` table, schema version 2; a version 1 file
is upgraded on open). Destinations missing from the list on open are
forgotten; a new one receives what the file still holds.

Size. ``PRAGMA max_page_count`` (set on every open, it is not persistent) caps
the main file at ``max_bytes``. Before inserting, the writer compares the pages
the new rows need with the free pages (``page_count``/``freelist_count``) and
drops the oldest rows (``drop_oldest``) or refuses the new batches
(``drop_newest``), counting them. If SQLite still reports SQLITE_FULL, the
transaction is measured again with the cap lifted (rolled back): only one that
needs more pages than the cap was refused by the cap (the estimate was short),
and it is retried with that much more room made. A full disk is not the cap:
SQLITE_FULL from a transaction that fits, or ENOSPC on the seq sidecar, is
:class:`~agent.errors.DiskFull` and drops nothing, old or new. If commits
fail (disk full, I/O errors) the writer keeps the batches in RAM (up to 32 MiB,
the work being retried included; beyond that new batches are refused and
counted) and retries with backoff up to 10 s, so it recovers once space
returns; if the file cannot even be opened on a full disk (no bytes, no inode,
a quota), the buffer opens without it, ``flush`` fails at once, stats read the
file's counters read-only, and the writer retries the open. ``disk_full`` and
``held_batches`` in the stats say so, and ``healthy()`` stays true (a full
disk is not a hung writer; a commit or open stuck past the stall limit is).
The WAL (bounded by ``journal_size_limit`` and the auto-checkpoint) and
``-shm`` live
outside the cap: keep the cap well below free disk.

Corruption. ``PRAGMA quick_check`` runs on open. A corrupt file is renamed
``<db>.corrupt-<unix time in ms>`` (its ``-wal`` too; never over an earlier
one) for offline inspection, an error is logged, and a fresh database starts
above the highest seq known from the sidecar or still readable from the old
file. Every seq it skips counts in ``dropped_batches``, so a consumer's gap is
explained (an unreadable file: every seq up to the new start, an upper bound).

Modules. Callers import from ``agent.buffer`` only; the modules behind it are
internal and may change:

==========  ================================================================
module      what it answers
==========  ================================================================
records     the public records (``PendingBatch``, ``BufferStats``), limits
buffer      :class:`Buffer`, the event-loop side (inbox, waiters, reader executor)
inbox       the loop-to-writer hand-off of batches and acks (no SQLite)
seqfile     the seq reservation sidecar ``<db>.seq`` (no SQLite)
split       a batch cut to ``mqtt.max_message_size`` before it is queued
schema      opening the file: schema, PRAGMAs, quick_check, corrupt files
store       the write connection: commits, the size cap and its page estimates
writer      the writer thread and its group-commit budget
reader      read-only connections, pending rows in seq order, stats
tools       ``export_pending`` and ``purge`` for ``edge-agent buffer``
peek        the counters of a file on disk for ``status`` with no agent: sqlite3
            and the standard library only, imported as ``agent.buffer.peek``
==========  ================================================================

``Buffer``, ``export_pending`` and ``purge`` are imported on first use, so that
``agent.buffer.peek`` costs no more than sqlite3. Errors are :class:`agent.errors.StorageError`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agent.buffer.records import (
    SCHEMA_VERSION,
    BufferStats,
    DestinationStats,
    FactRow,
    FactsSave,
    OnFull,
    PendingBatch,
    Synchronous,
)

if TYPE_CHECKING:
    from agent.buffer.buffer import Buffer, BufferView
    from agent.buffer.tools import export_pending, purge

__all__ = [
    "SCHEMA_VERSION",
    "Buffer",
    "BufferStats",
    "BufferView",
    "DestinationStats",
    "FactRow",
    "FactsSave",
    "OnFull",
    "PendingBatch",
    "Synchronous",
    "export_pending",
    "purge",
]

_LAZY = {"Buffer": "agent.buffer.buffer", "BufferView": "agent.buffer.buffer",
         "export_pending": "agent.buffer.tools",
         "purge": "agent.buffer.tools"}  # fmt: skip


def __getattr__(name: str) -> Any:
    # The writer side pulls in the message codec and pydantic (~100 ms); importing
    # it on first use keeps ``agent.buffer.peek`` (``status`` without an agent) light.
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
