"""The durable SQLite queue: round trips, seq rules, the size cap, crashes, corruption."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sqlite3
import sys
import tempfile
import textwrap
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from agent.buffer import Buffer, OnFull, PendingBatch
from agent.errors import StorageError
from agent.message import decode_message
from drivers.base import Reading

REPO = Path(__file__).resolve().parents[3]
T = TypeVar("T")


def batch(marker: int, pad: int = 0) -> list[Reading]:
    """A batch that identifies itself by ``marker``."""
    return [Reading(ts=1_764_270_000_000 + marker, values={"m": marker, "pad": "x" * pad})]


def marker(row: PendingBatch) -> int:
    value = decode_message(row.payload)["readings"][0]["values"]["m"]
    assert isinstance(value, int)
    return value


async def fill(buf: Buffer, start: int, count: int, *, device: str = "dev", pad: int = 0) -> None:
    for m in range(start, start + count):
        buf.put(device, batch(m, pad))
    await buf.flush()


def corrupt_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("b.db.corrupt-*"))


def quick_check(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return [row[0] for row in conn.execute("PRAGMA quick_check")]
    finally:
        conn.close()


# --------------------------------------------------------------------------- basics


async def test_put_flush_fetch_ack_round_trip(tmp_path: Path) -> None:
    async with Buffer(tmp_path / "b.db", agent_id="box-1") as buf:
        readings = [
            Reading(ts=1764270000123, values={"speed_rpm": 1480, "current_a": 12.3}),
            Reading(ts=1764270000200, values={}, errors={"temp_c": "timeout"}),
        ]
        buf.put("motor-01", readings)
        await fill(buf, 1, 9)
        assert buf.last_seq == 10
        rows = await buf.fetch(0, 100)
        assert [r.seq for r in rows] == list(range(1, 11))
        first = rows[0]
        assert (first.device, first.n_values) == ("motor-01", 2)
        assert decode_message(first.payload) == {
            "v": 1,
            "agent": "box-1",
            "device": "motor-01",
            "seq": 1,
            "readings": [
                {"ts": 1764270000123, "values": {"speed_rpm": 1480, "current_a": 12.3}},
                {"ts": 1764270000200, "values": {}, "errors": {"temp_c": "timeout"}},
            ],
        }
        assert [decode_message(r.payload)["seq"] for r in rows] == [r.seq for r in rows]
        assert [r.seq for r in await buf.fetch(4, 3)] == [5, 6, 7]

        buf.ack([1, 2, 3, 7])
        # Acked rows are hidden at once, before the delete is committed.
        assert [r.seq for r in await buf.fetch(0, 4)] == [4, 5, 6, 8]
        assert await buf.first_pending_seq() == 4
        await buf.flush()
        stats = await buf.stats()
        assert stats.pending_batches == 6
        assert stats.pending_bytes == sum(len(r.payload) for r in rows if r.seq not in {1, 2, 3, 7})
        assert stats.oldest_created_ms == rows[3].created_ms
        assert (stats.last_seq, stats.dropped_batches) == (10, 0)

        buf.ack(r.seq for r in rows)
        await buf.flush()
        assert await buf.fetch(0, 100) == []
        assert await buf.first_pending_seq() is None
        stats = await buf.stats()
        assert (stats.pending_batches, stats.pending_bytes, stats.oldest_created_ms) == (0, 0, None)


async def test_seq_persists_and_is_never_reused(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    async with Buffer(path, agent_id="a") as buf:
        await fill(buf, 1, 5)
        buf.ack(range(1, 6))
        await buf.flush()
    async with Buffer(path, agent_id="a") as buf:
        assert buf.last_seq == 5
        await fill(buf, 6, 2)
        assert [r.seq for r in await buf.fetch(0, 10)] == [6, 7]
    async with Buffer(path, agent_id="a", max_bytes=64 * 1024) as buf:
        await fill(buf, 8, 200, pad=400)  # overflows the small cap: old rows dropped
        stats = await buf.stats()
        assert stats.dropped_batches > 0
        last = buf.last_seq
    async with Buffer(path, agent_id="a", max_bytes=64 * 1024) as buf:
        await fill(buf, 1000, 1)
        rows = await buf.fetch(0, 1000)
        assert rows[-1].seq == last + 1
        assert marker(rows[-1]) == 1000


async def test_fifo_per_device_and_contiguous_seq(tmp_path: Path) -> None:
    async with Buffer(tmp_path / "b.db", agent_id="a", commit_interval=0.01) as buf:
        for m in range(300):
            buf.put(f"dev-{m % 3}", batch(m))
            if m % 37 == 0:
                await asyncio.sleep(0.005)  # spread the puts over several commits
        await buf.flush()
        rows = await buf.fetch(0, 1000)
    assert [r.seq for r in rows] == list(range(1, 301))
    for device in ("dev-0", "dev-1", "dev-2"):
        markers = [marker(r) for r in rows if r.device == device]
        assert markers == sorted(markers)
        assert len(markers) == 100


async def test_max_batch_rows_splits_commits_but_keeps_order(tmp_path: Path) -> None:
    async with Buffer(tmp_path / "b.db", agent_id="a", max_batch_rows=7) as buf:
        await fill(buf, 0, 50)
        rows = await buf.fetch(0, 100)
    assert [marker(r) for r in rows] == list(range(50))
    assert [r.seq for r in rows] == list(range(1, 51))


async def test_wait_committed(tmp_path: Path) -> None:
    async with Buffer(tmp_path / "b.db", agent_id="a") as buf:
        assert not await buf.wait_committed(0, timeout=0.05)
        waiter = asyncio.create_task(buf.wait_committed(0, timeout=30))
        buf.put("d", batch(1))
        assert await waiter
        assert buf.last_seq == 1
        assert await buf.wait_committed(0, timeout=0)


async def test_misuse_is_a_clear_error(tmp_path: Path) -> None:
    buf = Buffer(tmp_path / "b.db", agent_id="a")
    with pytest.raises(StorageError, match="not open"):
        buf.put("d", batch(1))
    with pytest.raises(ValueError, match="max_bytes"):
        Buffer(tmp_path / "c.db", agent_id="a", max_bytes=1000)
    with pytest.raises(ValueError, match="on_full"):
        Buffer(tmp_path / "c.db", agent_id="a", on_full="drop_random")  # type: ignore[arg-type]
    async with buf:
        with pytest.raises(ValueError, match="encoded"):
            buf.put("d", [Reading(ts=1, values={"x": 2**80})])
        with pytest.raises(StorageError, match="already open"):
            await buf.__aenter__()
    with pytest.raises(StorageError, match="not open"):
        await buf.fetch(0, 1)


# --------------------------------------------------------------------------- cap


async def test_cap_drop_oldest_keeps_file_within_cap(tmp_path: Path) -> None:
    path, cap = tmp_path / "b.db", 128 * 1024
    total = 0
    async with Buffer(path, agent_id="a", max_bytes=cap) as buf:
        for round_ in range(40):
            await fill(buf, total, 25, device=f"d{round_ % 2}", pad=300)
            total += 25
            assert path.stat().st_size <= cap
        rows = await buf.fetch(0, 10_000)
        stats = await buf.stats()
    assert path.stat().st_size <= cap  # after the final checkpoint: everything is in the file
    assert quick_check(path) == ["ok"]
    seqs = [r.seq for r in rows]
    assert seqs == list(range(seqs[0], total + 1))  # the newest, contiguous, up to the last put
    assert [marker(r) for r in rows] == list(range(total - len(rows), total))
    assert stats.dropped_batches == seqs[0] - 1 > 0  # exactly the missing oldest
    assert stats.last_seq == total
    assert Buffer.read_stats(path).dropped_batches == stats.dropped_batches


async def test_cap_drop_newest_refuses_new_batches(tmp_path: Path) -> None:
    path, cap = tmp_path / "b.db", 128 * 1024
    async with Buffer(path, agent_id="a", max_bytes=cap, on_full="drop_newest") as buf:
        for start in range(0, 1000, 25):
            await fill(buf, start, 25, pad=300)
            assert path.stat().st_size <= cap
        rows = await buf.fetch(0, 10_000)
        stats = await buf.stats()
        assert [r.seq for r in rows] == list(range(1, len(rows) + 1))  # the oldest kept
        markers = [marker(r) for r in rows]
        assert markers[:150] == list(range(150))  # the oldest are all kept
        assert markers == sorted(markers)
        assert 999 not in markers  # the newest were refused
        assert stats.dropped_batches == 1000 - len(rows) > 0
        assert stats.last_seq == len(rows)  # refused batches took no seq
        # Once acked rows make room, new batches are taken again.
        buf.ack(r.seq for r in rows)
        await fill(buf, 5000, 1)
        assert [marker(r) for r in await buf.fetch(0, 10)] == [5000]
    assert path.stat().st_size <= cap


async def test_one_batch_bigger_than_the_cap_is_dropped_and_counted(tmp_path: Path) -> None:
    async with Buffer(tmp_path / "b.db", agent_id="a", max_bytes=64 * 1024) as buf:
        await fill(buf, 0, 1, pad=200_000)
        await fill(buf, 1, 1)
        rows = await buf.fetch(0, 10)
        assert [marker(r) for r in rows] == [1]
        assert (await buf.stats()).dropped_batches == 1


async def test_lowered_cap_shrinks_the_file_on_open(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    async with Buffer(path, agent_id="a", max_bytes=2_000_000) as buf:
        await fill(buf, 0, 2000, pad=400)
    assert path.stat().st_size > 500_000
    async with Buffer(path, agent_id="a", max_bytes=200_000) as buf:
        rows = await buf.fetch(0, 10_000)
        stats = await buf.stats()
        assert rows[-1].seq == 2000
        assert stats.dropped_batches == rows[0].seq - 1 > 0
    assert path.stat().st_size <= 200_000
    assert quick_check(path) == ["ok"]


# --------------------------------------------------------------------------- durability

CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from agent.buffer import Buffer
    from drivers.base import Reading

    async def main() -> None:
        async with Buffer(Path(sys.argv[1]), agent_id="child", commit_interval=0.01) as buf:
            for m in range(1_000_000):
                buf.put(f"d{m % 3}", [Reading(ts=m, values={"m": m, "pad": "x" * 200})])
                if m % 20 == 19:
                    await buf.flush()
                    print("flushed", buf.last_seq, flush=True)

    asyncio.run(main())
    """
)


async def test_kill_9_loses_nothing_flushed(tmp_path: Path) -> None:
    path, script = tmp_path / "b.db", tmp_path / "child.py"
    script.write_text(CHILD, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(script), str(path), stdout=asyncio.subprocess.PIPE, env=env
    )
    assert proc.stdout is not None
    flushed = 0
    try:
        async with asyncio.timeout(60):
            while flushed < 600:
                line = await proc.stdout.readline()
                assert line, "the child exited early"
                flushed = int(line.split()[1])
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert quick_check(path) == ["ok"]
    async with Buffer(path, agent_id="child") as buf:
        rows = await buf.fetch(0, 1_000_000)
    assert not corrupt_files(tmp_path)
    assert len(rows) >= flushed
    assert [r.seq for r in rows] == list(range(1, len(rows) + 1))
    assert [marker(r) for r in rows] == list(range(len(rows)))


async def test_corrupt_file_is_moved_aside_and_seq_not_reused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "b.db"
    async with Buffer(path, agent_id="a") as buf:
        await fill(buf, 0, 10)
    with path.open("r+b") as f:
        f.write(b"garbage!" * 16)  # over the header
    async with Buffer(path, agent_id="a") as buf:
        assert buf.last_seq >= 10
        await fill(buf, 100, 1)
        rows = await buf.fetch(0, 10)
    assert [marker(r) for r in rows] == [100]
    assert rows[0].seq > 10
    aside = corrupt_files(tmp_path)
    assert len(aside) == 1
    assert aside[0].read_bytes().startswith(b"garbage!")
    assert "corrupt" in caplog.text
    assert quick_check(path) == ["ok"]


async def test_corrupt_file_without_sidecar_keeps_seq_from_readable_meta(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    async with Buffer(path, agent_id="a") as buf:
        await fill(buf, 0, 300, pad=300)
    (tmp_path / "b.db.seq").unlink()
    # Damage the last page (batch rows) and keep the header, schema and meta readable.
    size = path.stat().st_size
    with path.open("r+b") as f:
        f.seek(size - 4096)
        f.write(b"\xff" * 4096)
    async with Buffer(path, agent_id="a") as buf:
        assert buf.last_seq >= 300
        assert (await buf.stats()).dropped_batches > 0  # the unpublished rows are counted lost
    assert corrupt_files(tmp_path)


# --------------------------------------------------------------------------- read_stats


async def test_read_stats_while_open_and_without_agent(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    async with Buffer(path, agent_id="a", max_bytes=1_000_000) as buf:
        await fill(buf, 0, 12)
        stats = await asyncio.to_thread(Buffer.read_stats, path)
        assert (stats.pending_batches, stats.last_seq, stats.max_bytes) == (12, 12, 1_000_000)
        assert stats == await buf.stats()
        await fill(buf, 12, 1)  # the writer is not blocked by the reader
        assert buf.last_seq == 13
    stats = Buffer.read_stats(path)
    assert (stats.pending_batches, stats.last_seq) == (13, 13)
    assert stats.file_bytes == path.stat().st_size > 0


def test_read_stats_on_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "none.db"
    with pytest.raises(StorageError, match="no buffer database"):
        Buffer.read_stats(path)
    assert list(tmp_path.iterdir()) == []


def test_read_stats_on_a_foreign_file_is_a_buffer_error(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    path.write_bytes(b"hello" * 100)
    with pytest.raises(StorageError):
        Buffer.read_stats(path)


# --------------------------------------------------------------------------- state machine


class BufferMachine(RuleBasedStateMachine):
    """F14: put, flush, fetch, ack, reopen under a cap; nothing lost or invented."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.dir = Path(tempfile.mkdtemp(prefix="buffer-sm-"))
        self.path = self.dir / "b.db"
        self.buf: Buffer | None = None
        self.next_marker = 0
        self.acked: set[int] = set()  # markers
        self.seq_of: dict[int, int] = {}  # marker -> seq, once seen
        self.max_seq = 0

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def open(self) -> Buffer:
        buf = Buffer(
            self.path,
            agent_id="sm",
            max_bytes=self.cap,
            on_full=self.on_full,
            commit_interval=0.005,
        )
        return self.run(buf.__aenter__())

    @initialize(
        cap=st.sampled_from([64 * 1024, 96 * 1024, 10_000_000]),
        on_full=st.sampled_from(["drop_oldest", "drop_newest"]),
    )
    def start(self, cap: int, on_full: OnFull) -> None:
        self.cap, self.on_full = cap, on_full
        self.buf = self.open()

    @rule(
        device=st.sampled_from(["a", "b", "c"]),
        pads=st.lists(st.integers(0, 6000), min_size=1, max_size=6),
        flush=st.booleans(),
    )
    def put(self, device: str, pads: list[int], flush: bool) -> None:
        assert self.buf is not None
        for pad in pads:
            self.buf.put(device, batch(self.next_marker, pad))
            self.next_marker += 1
        if flush:
            self.run(self.buf.flush())

    @rule(data=st.data(), limit=st.integers(1, 50))
    def fetch_and_ack(self, data: st.DataObject, limit: int) -> None:
        assert self.buf is not None
        rows = self.run(self.buf.fetch(0, limit))
        assert len(rows) <= limit
        chosen = (
            data.draw(st.lists(st.sampled_from(rows), unique_by=lambda r: r.seq)) if rows else []
        )
        self.buf.ack(r.seq for r in chosen)
        self.acked.update(marker(r) for r in chosen)

    @rule()
    def reopen(self) -> None:
        assert self.buf is not None
        self.run(self.buf.__aexit__(None, None, None))
        assert self.path.stat().st_size <= self.cap
        self.buf = self.open()

    @invariant()
    def consistent(self) -> None:
        if self.buf is None:
            return
        self.run(self.buf.flush())
        rows = self.run(self.buf.fetch(0, 100_000))
        stats = self.run(self.buf.stats())
        seqs = [r.seq for r in rows]
        markers = [marker(r) for r in rows]
        assert seqs == sorted(set(seqs)), "seq strictly increasing"
        assert markers == sorted(markers), "FIFO: put order is seq order, per device too"
        assert all(0 <= m < self.next_marker for m in markers), "no invented rows"
        assert not self.acked & set(markers), "acked rows are gone"
        for row, m in zip(rows, markers, strict=True):
            assert decode_message(row.payload)["seq"] == row.seq
            if m in self.seq_of:
                assert self.seq_of[m] == row.seq
            else:
                assert row.seq > self.max_seq, "a seq is never reused"
                self.seq_of[m] = row.seq
        self.max_seq = max(self.max_seq, stats.last_seq)
        gone = set(range(self.next_marker)) - set(markers)
        assert len(gone - self.acked) <= stats.dropped_batches <= len(gone), "drops are counted"
        if self.cap >= 10_000_000:
            assert stats.dropped_batches == 0
        assert stats.pending_batches == len(rows)
        assert stats.pending_bytes == sum(len(r.payload) for r in rows)
        assert self.path.stat().st_size <= self.cap

    def teardown(self) -> None:
        try:
            if self.buf is not None:
                self.run(self.buf.__aexit__(None, None, None))
                assert self.path.stat().st_size <= self.cap
                assert quick_check(self.path) == ["ok"]
        finally:
            self.loop.close()
            shutil.rmtree(self.dir, ignore_errors=True)


BufferMachine.TestCase.settings = settings(
    max_examples=12,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestBufferStateMachine = BufferMachine.TestCase
