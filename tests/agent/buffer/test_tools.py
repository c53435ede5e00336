"""Buffer upkeep: export and purge (module functions and `edge-agent buffer`), writer health."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from agent.buffer import Buffer, export_pending, purge
from agent.cli.app import app
from agent.errors import StorageError
from drivers.base import Reading


def batch(marker: int) -> list[Reading]:
    return [Reading(ts=1_764_270_000_000 + marker, values={"m": marker})]


async def filled(path: Path, count: int, start: int = 1) -> list[bytes]:
    """Put ``count`` batches on two devices, close; the payloads as committed."""
    async with Buffer(path, agent_id="box", commit_interval=0) as buf:
        for m in range(start, start + count):
            buf.put("dev-a" if m % 2 else "dev-b", batch(m))
        await buf.flush()
        return [row.payload for row in await buf.fetch(0, 1000)]


def site_file(tmp_path: Path) -> Path:
    site = {
        "agent": {"id": "box", "data_dir": "data"},
        "mqtt": {"host": "127.0.0.1", "port": 1},
        "devices": [],
    }
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(site), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- export / purge


async def test_export_yields_every_pending_payload_in_seq_order(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    payloads = await filled(path, 7)
    exported = list(export_pending(path))
    assert exported == payloads
    assert [json.loads(p)["seq"] for p in exported] == list(range(1, 8))


async def test_export_next_to_an_open_buffer_sees_only_committed_rows(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    async with Buffer(path, agent_id="box", commit_interval=0) as buf:
        for m in range(3):
            buf.put("dev", batch(m))
        await buf.flush()
        buf.ack([1])
        await buf.flush()
        exported = await asyncio.to_thread(lambda: list(export_pending(path)))
    assert [json.loads(p)["seq"] for p in exported] == [2, 3]


async def test_purge_counts_drops_and_keeps_seq_monotonic(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    await filled(path, 5)
    before = Buffer.read_stats(path)
    assert purge(path) == 5
    after = Buffer.read_stats(path)
    assert (after.pending_batches, after.pending_bytes) == (0, 0)
    assert after.dropped_batches == before.dropped_batches + 5
    assert after.last_seq == 5
    assert list(export_pending(path)) == []
    again = await filled(path, 2, start=10)
    assert [json.loads(p)["seq"] for p in again] == [6, 7]


async def test_purge_next_to_a_running_writer_keeps_its_counters_right(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    async with Buffer(path, agent_id="box", commit_interval=0) as buf:
        for m in range(4):
            buf.put("dev", batch(m))
        await buf.flush()
        assert await asyncio.to_thread(purge, path) == 4
        buf.put("dev", batch(99))
        await buf.flush()
        stats = await buf.stats()
        rows = await buf.fetch(0, 10)
    assert [r.seq for r in rows] == [5]
    assert (stats.pending_batches, stats.dropped_batches, stats.last_seq) == (1, 4, 5)


def test_export_and_purge_refuse_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="no buffer"):
        list(export_pending(tmp_path / "none.db"))
    with pytest.raises(StorageError, match="no buffer"):
        purge(tmp_path / "none.db")
    assert not (tmp_path / "none.db").exists()


# --------------------------------------------------------------------------- health


async def test_healthy_while_committing_unhealthy_when_the_writer_is_stuck(
    tmp_path: Path,
) -> None:
    path = tmp_path / "b.db"
    buf = Buffer(path, agent_id="box", commit_interval=0)
    assert not buf.healthy(stall=1.0)  # not open
    async with buf:
        buf.put("dev", batch(1))
        await buf.flush()
        assert buf.healthy(stall=0.2)
        # Another process holds the write lock: the writer cannot commit.
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            buf.put("dev", batch(2))
            assert await wait_until(lambda: not buf.healthy(stall=0.2))
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert await wait_until(lambda: buf.healthy(stall=0.2))
        assert [r.seq for r in await buf.fetch(0, 10)] == [1, 2]
    assert not buf.healthy(stall=1.0)  # closed


async def wait_until(condition: Callable[[], bool], limit: float = 20.0) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if condition():
            return True
        await asyncio.sleep(0.05)
    return False


# --------------------------------------------------------------------------- CLI


async def test_buffer_commands(tmp_path: Path) -> None:
    site = site_file(tmp_path)
    db = tmp_path / "data" / "buffer.db"
    db.parent.mkdir()
    payloads = await filled(db, 4)
    runner = CliRunner()

    result = await asyncio.to_thread(runner.invoke, app, ["buffer", "stats", "-c", str(site)])
    assert result.exit_code == 0, result.output
    assert "pending_batches" in result.output
    stats = await asyncio.to_thread(
        runner.invoke, app, ["buffer", "stats", "-c", str(site), "--json"]
    )
    assert json.loads(stats.stdout)["pending_batches"] == 4

    out = tmp_path / "export.jsonl"
    result = await asyncio.to_thread(
        runner.invoke, app, ["buffer", "export", "-c", str(site), "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert out.read_bytes().splitlines() == payloads

    result = await asyncio.to_thread(
        runner.invoke, app, ["buffer", "purge", "-c", str(site)], input="n\n"
    )
    assert result.exit_code == 1
    assert Buffer.read_stats(db).pending_batches == 4

    result = await asyncio.to_thread(
        runner.invoke, app, ["buffer", "purge", "-c", str(site), "--yes"]
    )
    assert result.exit_code == 0, result.output
    assert "4 pending batches purged" in result.output
    assert Buffer.read_stats(db).dropped_batches == 4


def test_buffer_stats_without_a_buffer_file_exits_1(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["buffer", "stats", "-c", str(site_file(tmp_path))])
    assert result.exit_code == 1
    assert "no buffer database" in result.output
