"""F8 at the :class:`Buffer` level: what a full disk does to held batches, flush, health, stats.

Each test runs the real buffer (writer thread, SQLite) on a real small tmpfs.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from pathlib import Path

import pytest

from agent.buffer import Buffer, PendingBatch
from agent.errors import DiskFull, StorageError
from agent.message import decode_message
from drivers.base import Reading
from tests.faults.harness import AGENT
from tests.support.smalldisk import fill, fill_inodes, small_disk


def _batch(marker: int, pad: int = 0) -> list[Reading]:
    return [Reading(ts=1_764_270_000_000 + marker, values={"m": marker, "pad": "x" * pad})]


def _marker(row: PendingBatch) -> int:
    value = decode_message(row.payload)["readings"][0]["values"]["m"]
    assert isinstance(value, int)
    return value


def _buffer(path: Path) -> Buffer:
    return Buffer(path, agent_id=AGENT, max_bytes=64_000_000, commit_interval=0)


async def _prefill(path: Path, n: int) -> None:
    async with _buffer(path) as buf:
        for i in range(n):
            buf.put("c1", _batch(i))
        await buf.flush()


async def _flush_once_space_returns(buf: Buffer, within_s: float = 30.0) -> None:
    deadline = time.monotonic() + within_s
    while True:
        try:
            async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
                await buf.flush()
            return
        except StorageError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def test_f08_held_batches_all_committed_after_spell(tmp_path: Path) -> None:
    """Every batch put while the disk was full is committed once space returns, in order."""
    with small_disk(tmp_path / "data", "4m") as disk:
        async with _buffer(disk / "buffer.db") as buf:
            n = 0
            for n in range(20):
                buf.put("c1", _batch(n))
            await buf.flush()
            filler = fill(disk)
            deadline = time.monotonic() + 30
            while not buf.disk_full and time.monotonic() < deadline:  # the WAL's room used up
                n += 1
                buf.put("c1", _batch(n))
                await asyncio.sleep(0.005)
            assert buf.disk_full, "the disk never filled"
            for _ in range(300):  # a spell of puts held in RAM, across several retries
                n += 1
                buf.put("c1", _batch(n))
                await asyncio.sleep(0.005)
            assert (await buf.stats()).held_batches > 0
            filler.unlink()
            await _flush_once_space_returns(buf)
            rows = await buf.fetch(0, n + 100)
            stats = await buf.stats()
    assert [_marker(r) for r in rows] == list(range(n + 1)), "batches held in RAM were lost"
    assert [r.seq for r in rows] == list(range(1, n + 2))
    assert stats.dropped_batches == 0
    assert stats.held_batches == 0


async def test_f08_started_full_flush_answered_and_loss_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Not open yet: flush() fails at once (DiskFull); the stop names what RAM loses."""
    with small_disk(tmp_path / "data", "4m") as disk:
        path = disk / "buffer.db"
        await _prefill(path, 30)
        filler = fill(disk)
        async with _buffer(path) as buf:
            assert buf.disk_full
            for i in range(10):
                buf.put("c1", _batch(i))
            with pytest.raises(DiskFull):
                async with asyncio.timeout(8):  # loose: a flush waiting for ever fails here
                    await buf.flush()
            stats = await buf.stats()
        filler.unlink()
    assert stats.held_batches == 10
    assert "10 batches held in RAM are lost" in caplog.text, caplog.text


async def test_f08_stats_while_not_open_read_from_the_file(tmp_path: Path) -> None:
    """Started on a full disk: status shows the file's backlog and counters, not zeros."""
    with small_disk(tmp_path / "data", "4m") as disk:
        path = disk / "buffer.db"
        await _prefill(path, 30)
        filler = fill(disk)
        async with _buffer(path) as buf:
            assert buf.disk_full
            stats = await buf.stats()
            first = await buf.first_pending_seq()
        filler.unlink()
    assert (stats.pending_batches, stats.last_seq, stats.dropped_batches) == (30, 30, 0)
    assert stats.oldest_created_ms is not None
    assert first is None or first == 1


async def test_f08_open_without_free_inodes_is_disk_full(tmp_path: Path) -> None:
    """No inode left (bytes free): the start goes on into RAM instead of failing."""
    with small_disk(tmp_path / "data", "8m", inodes=64) as disk:
        path = disk / "buffer.db"
        await _prefill(path, 30)
        assert fill_inodes(disk) > 0
        assert os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize > 4_000_000
        async with _buffer(path) as buf:
            assert buf.disk_full
            buf.put("c1", _batch(30))
            for extra in disk.glob("inode-*"):
                extra.unlink()
            await _flush_once_space_returns(buf)
            assert buf.last_seq == 31


async def test_f08_stuck_commit_is_unhealthy(tmp_path: Path) -> None:
    """A commit waiting past the stall limit (here on a lock) makes healthy() False."""
    path = tmp_path / "buffer.db"
    async with _buffer(path) as buf:
        buf.put("c1", _batch(0))
        await buf.flush()
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # the writer's next commit waits busy_timeout (5 s)
        try:
            buf.put("c1", _batch(1))
            assert await _becomes_unhealthy(buf, stall=1.0, within_s=4.5)
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        await _flush_once_space_returns(buf)


async def test_f08_stuck_open_retry_is_unhealthy(tmp_path: Path) -> None:
    """Started on a full disk, an open retry hung past the stall limit makes healthy() False."""
    with small_disk(tmp_path / "data", "4m") as disk:
        path = disk / "buffer.db"
        await _prefill(path, 30)
        filler = fill(disk)
        async with _buffer(path) as buf:
            assert buf.disk_full
            assert buf.healthy(stall=1.0)
            # Room for another connection's -shm, the disk still almost full; its write
            # lock makes the writer's next open attempt wait busy_timeout (5 s).
            os.truncate(filler, filler.stat().st_size - 256 * 1024)
            blocker = sqlite3.connect(path, isolation_level=None)
            blocker.execute("BEGIN IMMEDIATE")
            try:
                assert await _becomes_unhealthy(buf, stall=1.0, within_s=15)
            finally:
                blocker.execute("ROLLBACK")
                blocker.close()
            filler.unlink()
            buf.put("c1", _batch(30))
            await _flush_once_space_returns(buf)
            assert buf.last_seq == 31


async def _becomes_unhealthy(buf: Buffer, stall: float, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not buf.healthy(stall):
            return True
        await asyncio.sleep(0.1)
    return False


async def test_f08_dropped_batches_never_counted_twice(tmp_path: Path) -> None:
    """Refusals are counted once, also while the commit that writes them checkpoints."""
    path = tmp_path / "buffer.db"
    async with _buffer(path) as buf:
        for i in range(400):  # a WAL above 1 MiB: the commit that empties the file truncates it
            buf.put("c1", _batch(i, pad=4000))
        await buf.flush()
        seqs = [r.seq for r in await buf.fetch(0, 1000)]
        reader = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM batches").fetchone()  # holds the checkpoint back
        try:
            buf._inbox._ram_limit = 0  # RAM full: the next put is refused and counted
            buf.put("c1", _batch(-1))
            buf.ack(seqs)
            flushing = asyncio.ensure_future(buf.flush())
            seen = []
            deadline = time.monotonic() + 4
            while not flushing.done() and time.monotonic() < deadline:
                seen.append((await buf.stats()).dropped_batches)
                await asyncio.sleep(0.05)
        finally:
            reader.execute("ROLLBACK")
            reader.close()
        await flushing
        seen.append((await buf.stats()).dropped_batches)
    assert set(seen) == {1}, seen
