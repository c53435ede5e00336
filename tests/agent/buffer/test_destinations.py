"""One buffer, one cursor per destination: each acknowledges for itself, a row goes when all have.

Real SQLite files; the counters are checked against what the views return.
"""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from agent.buffer import Buffer, BufferStats, DestinationStats, PendingBatch
from agent.buffer.peek import read_stats
from agent.buffer.tools import purge
from agent.message import decode_message
from drivers.base import Reading

T = TypeVar("T")
TWO = ("county", "factory")


def batch(marker: int, pad: int = 0) -> list[Reading]:
    return [Reading(ts=1_764_270_000_000 + marker, values={"m": marker, "pad": "x" * pad})]


def marker(row: PendingBatch) -> int:
    value = decode_message(row.payload)["readings"][0]["values"]["m"]
    assert isinstance(value, int)
    return value


async def fill(buf: Buffer, start: int, count: int, *, pad: int = 0) -> None:
    for m in range(start, start + count):
        buf.put("dev", batch(m, pad))
    await buf.flush()


def dest(stats: BufferStats, name: str) -> DestinationStats:
    return next(d for d in stats.destinations if d.id == name)


def rows_in_file(path: Path) -> list[tuple[int, int]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT seq, acked FROM batches ORDER BY seq").fetchall()
    finally:
        conn.close()


async def test_a_row_goes_only_when_every_destination_acked_it(tmp_path: Path) -> None:
    async with Buffer(tmp_path / "b.db", agent_id="box", destinations=TWO) as buf:
        county, factory = buf.view("county"), buf.view("factory")
        await fill(buf, 1, 10)
        county.ack(range(1, 11))
        # hidden from the county at once, still there for the factory
        assert await county.fetch(0, 100) == []
        assert [r.seq for r in await factory.fetch(0, 100)] == list(range(1, 11))
        await buf.flush()
        stats = await buf.stats()
        assert stats.pending_batches == 10
        assert [d.id for d in stats.destinations] == list(TWO)
        assert (dest(stats, "county").pending_batches, dest(stats, "factory").pending_batches) == (
            0,
            10,
        )
        assert dest(stats, "county").oldest_created_ms is None
        assert dest(stats, "factory").first_pending_seq == 1
        assert await county.first_pending_seq() is None
        factory.ack([1, 2, 3, 5])
        await buf.flush()
        assert [seq for seq, _ in rows_in_file(buf.path)] == [4, *range(6, 11)]
        stats = await buf.stats()
        assert stats.pending_batches == 6
        assert dest(stats, "factory").pending_batches == 6
        assert dest(stats, "factory").first_pending_seq == 4
        assert await factory.first_pending_seq() == 4


async def test_a_destination_that_is_down_holds_back_only_its_own_cursor(tmp_path: Path) -> None:
    async with Buffer(tmp_path / "b.db", agent_id="box", destinations=TWO) as buf:
        live, down = buf.view("county"), buf.view("factory")
        after = 0
        for round_ in range(20):
            await fill(buf, round_ * 5 + 1, 5)
            rows = await live.fetch(after, 100)
            assert [r.seq for r in rows] == list(range(after + 1, after + 6))
            live.ack(r.seq for r in rows)
            after = rows[-1].seq
        await buf.flush()
        stats = await buf.stats()
        assert dest(stats, "county").pending_batches == 0
        assert dest(stats, "factory").pending_batches == 100
        got = await down.fetch(0, 1000)
        assert [marker(r) for r in got] == list(range(1, 101))


async def test_cursors_and_counters_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    async with Buffer(path, agent_id="box", destinations=TWO) as buf:
        await fill(buf, 1, 6)
        buf.view("county").ack([1, 2, 3])
        buf.view("factory").ack([2, 6])
    async with Buffer(path, agent_id="box", destinations=TWO) as buf:
        assert [r.seq for r in await buf.view("county").fetch(0, 10)] == [4, 5, 6]
        assert [r.seq for r in await buf.view("factory").fetch(0, 10)] == [1, 3, 4, 5]
        assert [seq for seq, _ in rows_in_file(path)] == [1, 3, 4, 5, 6]
        stats = await buf.stats()
        assert [d.pending_batches for d in stats.destinations] == [3, 4]
    # read without an agent (status on the box)
    offline = read_stats(path)
    assert {d.id: d.pending_batches for d in offline.destinations} == {"county": 3, "factory": 4}


async def test_the_cap_counts_what_each_destination_never_received(tmp_path: Path) -> None:
    async with Buffer(
        tmp_path / "b.db", agent_id="box", max_bytes=256 * 1024, destinations=TWO,
        commit_interval=0.0,
    ) as buf:  # fmt: skip
        county = buf.view("county")
        after, n = 0, 0
        for _ in range(60):  # bounded: far more than the cap holds
            await fill(buf, n + 1, 10, pad=2000)
            n += 10
            rows = await county.fetch(after, 1000)
            county.ack(r.seq for r in rows)
            after = max([after, *(r.seq for r in rows)])
            await buf.flush()
        stats = await buf.stats()
        assert stats.dropped_batches > 0
        county_s, factory_s = dest(stats, "county"), dest(stats, "factory")
        # the county had everything acked before any drop: it missed nothing
        assert county_s.never_received == 0
        assert county_s.pending_batches == 0
        # the factory received nothing: every dropped batch is one it never got
        assert factory_s.never_received == stats.dropped_batches
        left = await buf.view("factory").fetch(0, 10_000)
        assert factory_s.pending_batches == len(left) == stats.pending_batches
        # what it still gets is the newest, contiguous, and it plus the drops is everything
        assert [marker(r) for r in left] == list(range(n - len(left) + 1, n + 1))
        assert len(left) + factory_s.never_received == n


async def test_never_received_counts_only_rows_a_destination_did_not_have(tmp_path: Path) -> None:
    async with Buffer(
        tmp_path / "b.db", agent_id="box", max_bytes=256 * 1024, destinations=TWO,
        commit_interval=0.0,
    ) as buf:  # fmt: skip
        await fill(buf, 1, 20, pad=2000)
        buf.view("county").ack(range(1, 11))  # the county has the first ten only
        await buf.flush()
        for i in range(60):  # push the first twenty out
            await fill(buf, 100 + i * 10, 10, pad=2000)
            if 1 not in {seq for seq, _ in rows_in_file(buf.path)} and i > 5:
                break
        stats = await buf.stats()
        dropped = stats.dropped_batches
        assert dropped >= 20
        county_s, factory_s = dest(stats, "county"), dest(stats, "factory")
        assert factory_s.never_received == dropped
        assert county_s.never_received == dropped - 10


async def test_resplit_for_one_destination_gives_nobody_a_duplicate(tmp_path: Path) -> None:
    async with Buffer(tmp_path / "b.db", agent_id="box", destinations=TWO) as buf:
        county, factory = buf.view("county"), buf.view("factory")
        buf.put(
            "dev", [Reading(1_764_270_000_000 + i, {"m": i, "pad": "x" * 500}) for i in range(8)]
        )
        await buf.flush()
        (row,) = await county.fetch(0, 10)
        refused = county.resplit(row.seq, row.device, row.payload, 1200)
        await buf.flush()
        assert refused == 0
        pieces = await county.fetch(0, 100)
        assert len(pieces) > 1
        assert all(r.seq > row.seq for r in pieces)
        got = [r["values"]["m"] for p in pieces for r in decode_message(p.payload)["readings"]]
        assert got == list(range(8))
        # the factory gets the original only, and the pieces never
        assert [r.seq for r in await factory.fetch(0, 100)] == [row.seq]
        factory.ack([row.seq])
        county.ack(r.seq for r in pieces)
        await buf.flush()
        stats = await buf.stats()
        assert stats.pending_batches == 0
        assert [d.pending_batches for d in stats.destinations] == [0, 0]


async def test_a_removed_destination_releases_its_rows_an_added_one_gets_the_backlog(
    tmp_path: Path,
) -> None:
    path = tmp_path / "b.db"
    async with Buffer(path, agent_id="box", destinations=TWO) as buf:
        await fill(buf, 1, 5)
        buf.view("county").ack([1, 2, 3])
    # the factory's broker is taken out of the site file: rows only it needed go
    async with Buffer(path, agent_id="box", destinations=("county",)) as buf:
        assert [r.seq for r in await buf.fetch(0, 10)] == [4, 5]
        assert rows_in_file(path) == [(4, 0), (5, 0)]
        assert (await buf.stats()).pending_batches == 2
        # one destination again: an ack deletes at once
        buf.ack([4])
        await buf.flush()
        assert rows_in_file(path) == [(5, 0)]
    # a new destination receives what the buffer still holds
    async with Buffer(path, agent_id="box", destinations=("county", "cloud")) as buf:
        assert [r.seq for r in await buf.view("cloud").fetch(0, 10)] == [5]
        stats = await buf.stats()
        assert [(d.id, d.pending_batches, d.never_received) for d in stats.destinations] == [
            ("county", 1, 0),
            ("cloud", 1, 0),
        ]


_V1_SCHEMA = """
CREATE TABLE batches (seq INTEGER PRIMARY KEY, device TEXT NOT NULL,
    created_ms INTEGER NOT NULL, n_values INTEGER NOT NULL, payload BLOB NOT NULL);
CREATE TABLE meta (id INTEGER PRIMARY KEY CHECK (id = 1), agent_id TEXT NOT NULL,
    last_seq INTEGER NOT NULL, dropped_batches INTEGER NOT NULL,
    pending_batches INTEGER NOT NULL, pending_bytes INTEGER NOT NULL,
    max_bytes INTEGER NOT NULL);
"""


async def test_a_version_1_file_is_upgraded_and_every_destination_gets_its_rows(
    tmp_path: Path,
) -> None:
    path = tmp_path / "b.db"
    conn = sqlite3.connect(path)
    conn.executescript(_V1_SCHEMA)
    conn.executemany("INSERT INTO batches VALUES (?, 'dev', 1, 1, ?)", [(7, b"{}"), (8, b"{}")])
    conn.execute("INSERT INTO meta VALUES (1, 'box', 8, 3, 2, 4, 1000000)")
    conn.execute("PRAGMA user_version=1")
    conn.commit()
    conn.close()
    assert read_stats(path).destinations == ()  # an old file reads as before
    async with Buffer(path, agent_id="box", destinations=TWO) as buf:
        assert [r.seq for r in await buf.view("county").fetch(0, 10)] == [7, 8]
        assert [r.seq for r in await buf.view("factory").fetch(0, 10)] == [7, 8]
        stats = await buf.stats()
        assert (stats.last_seq, stats.dropped_batches) == (8, 3)
        assert [(d.pending_batches, d.never_received) for d in stats.destinations] == [
            (2, 0),
            (2, 0),
        ]
        buf.put("dev", batch(1))
        await buf.flush()
        assert buf.last_seq == 9


async def test_purge_counts_as_never_received_only_what_a_destination_lacked(
    tmp_path: Path,
) -> None:
    path = tmp_path / "b.db"
    async with Buffer(path, agent_id="box", destinations=TWO) as buf:
        await fill(buf, 1, 4)
        buf.view("county").ack([1, 2])
    assert purge(path) == 4
    stats = read_stats(path)
    assert [(d.pending_batches, d.never_received) for d in stats.destinations] == [(0, 2), (0, 4)]


async def test_a_view_of_an_unknown_destination_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="distinct"):
        Buffer(tmp_path / "b.db", agent_id="box", destinations=("a", "a"))
    with pytest.raises(ValueError, match="distinct"):
        Buffer(tmp_path / "b.db", agent_id="box", destinations=())
    buf = Buffer(tmp_path / "b.db", agent_id="box", destinations=TWO)
    with pytest.raises(ValueError, match=r"no destination 'cloud'.*county, factory"):
        buf.view("cloud")


async def test_the_put_split_follows_the_smallest_edge_json_limit(tmp_path: Path) -> None:
    async with Buffer(tmp_path / "b.db", agent_id="box", destinations=TWO) as buf:
        buf.view("county").max_message_bytes = 200_000
        buf.view("factory").max_message_bytes = 2_000
        assert buf.max_message_bytes == 2_000
        buf.put("dev", [Reading(1_764_270_000_000 + i, {"pad": "x" * 500}) for i in range(10)])
        await buf.flush()
        rows = await buf.view("county").fetch(0, 100)
        assert len(rows) > 1
        assert all(len(r.payload) <= 2_000 for r in rows)


# --------------------------------------------------------------------------- state machine


class DestinationsMachine(RuleBasedStateMachine):
    """Puts, acks by each destination, reopen, a cap: each destination gets every batch once
    unless it is counted as never received, and a row stays while anyone lacks it."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.dir = Path(tempfile.mkdtemp(prefix="buffer-dest-"))
        self.path = self.dir / "b.db"
        self.names = ("a", "b", "c")
        self.buf: Buffer | None = None
        self.next_marker = 0
        self.got: dict[str, set[int]] = {n: set() for n in self.names}  # seqs acked

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def open(self) -> Buffer:
        buf = Buffer(
            self.path, agent_id="sm", max_bytes=96 * 1024, commit_interval=0.0,
            destinations=self.names,
        )  # fmt: skip
        return self.run(buf.__aenter__())

    @initialize()
    def start(self) -> None:
        self.buf = self.open()

    @rule(count=st.integers(1, 8), pad=st.sampled_from([10, 1500]))
    def put(self, count: int, pad: int) -> None:
        assert self.buf is not None
        for _ in range(count):
            self.buf.put("dev", batch(self.next_marker, pad))
            self.next_marker += 1

    @rule(which=st.sampled_from(["a", "b", "c"]), limit=st.integers(1, 20), flush=st.booleans())
    def ack_some(self, which: str, limit: int, flush: bool) -> None:
        assert self.buf is not None
        view = self.buf.view(which)
        rows = self.run(view.fetch(0, limit))
        assert not {r.seq for r in rows} & self.got[which], "an acked batch came back"
        view.ack(r.seq for r in rows)
        self.got[which] |= {r.seq for r in rows}
        if flush:
            self.run(self.buf.flush())

    @rule()
    def reopen(self) -> None:
        assert self.buf is not None
        self.run(self.buf.__aexit__(None, None, None))
        self.buf = self.open()

    @invariant()
    def counters_match_the_file(self) -> None:
        if self.buf is None:
            return
        self.run(self.buf.flush())
        stats = self.run(self.buf.stats())
        in_file = dict(rows_in_file(self.path))
        assert stats.pending_batches == len(in_file)
        total = self.next_marker  # every put is a seq or a counted refusal
        for d in stats.destinations:
            pending = [r.seq for r in self.run(self.buf.view(d.id).fetch(0, 100_000))]
            assert d.pending_batches == len(pending)
            assert set(pending).isdisjoint(self.got[d.id])
            # every seq is received, still pending, or counted as never received
            received = len(self.got[d.id])
            assert received + len(pending) + d.never_received == total
        # a row stays only while some destination lacks it
        for seq in in_file:
            assert any(seq not in self.got[n] for n in self.names)

    def teardown(self) -> None:
        if self.buf is not None:
            self.run(self.buf.__aexit__(None, None, None))
        self.loop.close()


TestDestinationsMachine = DestinationsMachine.TestCase
TestDestinationsMachine.settings = settings(
    max_examples=25, stateful_step_count=25, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)  # fmt: skip


async def test_the_pieces_of_a_cut_batch_keep_its_age(tmp_path: Path) -> None:
    """Re-cut readings are as old as they were: their rows keep the original created_ms."""
    async with Buffer(tmp_path / "b.db", agent_id="box", destinations=TWO) as buf:
        county = buf.view("county")
        buf.put(
            "dev", [Reading(1_764_270_000_000 + i, {"m": i, "pad": "x" * 500}) for i in range(8)]
        )
        await buf.flush()
        (row,) = await county.fetch(0, 10)
        old = row.created_ms - 3_600_000  # as if it had waited an hour for this destination
        assert county.resplit(row.seq, row.device, row.payload, 1200, created_ms=old) == 0
        await buf.flush()
        pieces = await county.fetch(0, 100)
        stats = await buf.stats()
    assert len(pieces) > 1
    assert {p.created_ms for p in pieces} == {old}
    assert dest(stats, "county").oldest_created_ms == old


async def test_a_cut_piece_refused_at_the_cap_is_lost_only_to_its_destination(
    tmp_path: Path,
) -> None:
    """drop_newest and a full file: the pieces of a cut are refused; the factory has the row."""
    path = tmp_path / "b.db"
    async with Buffer(
        path, agent_id="box", destinations=TWO, max_bytes=64 * 1024, on_full="drop_newest"
    ) as buf:
        county = buf.view("county")
        buf.put(
            "dev", [Reading(1_764_270_000_000 + i, {"m": i, "pad": "x" * 500}) for i in range(8)]
        )
        await buf.flush()
        (row,) = await county.fetch(0, 10)
        for i in range(200):  # to the cap: from there new rows are refused
            await fill(buf, 100 + i * 10, 10, pad=2000)
            if (await buf.stats()).dropped_batches:
                break
        before = (await buf.stats()).dropped_batches
        assert before > 0
        assert county.resplit(row.seq, row.device, row.payload, 1200) == 0
        await buf.flush()
        stats = await buf.stats()
    lost = stats.dropped_batches - before
    assert lost > 1  # the pieces did not fit
    assert dest(stats, "factory").never_received == before  # it has the original row
    assert dest(stats, "county").never_received == before + lost
