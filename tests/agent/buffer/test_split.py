"""Batches larger than the broker's message limit: split at commit, one seq per piece."""

from __future__ import annotations

from pathlib import Path

from agent.buffer import Buffer
from agent.message import decode_message, encode_message
from drivers.base import Reading

AGENT = "split-box"
LIMIT = 2000


def readings(n: int, pad: int = 40) -> list[Reading]:
    return [Reading(ts=1_764_270_000_000 + i, values={"i": i, "pad": "x" * pad}) for i in range(n)]


async def test_a_large_batch_is_committed_as_several_messages_each_with_its_seq(
    tmp_path: Path,
) -> None:
    async with Buffer(tmp_path / "b.db", agent_id=AGENT, max_message_bytes=LIMIT) as buf:
        buf.put("dev", readings(100))
        await buf.flush()
        rows = await buf.fetch(0, 1000)
    assert len(rows) > 1
    assert [r.seq for r in rows] == list(range(1, len(rows) + 1))  # contiguous, none shared
    assert all(len(r.payload) <= LIMIT for r in rows)
    got = [x["values"]["i"] for r in rows for x in decode_message(r.payload)["readings"]]
    assert got == list(range(100))  # nothing lost, in order
    assert sum(r.n_values for r in rows) == 200


async def test_a_batch_that_fits_stays_one_message(tmp_path: Path) -> None:
    async with Buffer(tmp_path / "b.db", agent_id=AGENT, max_message_bytes=LIMIT) as buf:
        buf.put("dev", readings(3))
        await buf.flush()
        rows = await buf.fetch(0, 10)
    assert len(rows) == 1
    assert buf.refused_readings == 0


async def test_a_single_reading_too_large_is_refused_and_counted_not_queued(
    tmp_path: Path,
) -> None:
    async with Buffer(tmp_path / "b.db", agent_id=AGENT, max_message_bytes=LIMIT) as buf:
        buf.put("dev", [*readings(2), Reading(1, {"huge": "y" * 5000}), *readings(2)])
        await buf.flush()
        rows = await buf.fetch(0, 10)
    assert buf.refused_readings == 1
    got = [x["values"]["i"] for r in rows for x in decode_message(r.payload)["readings"]]
    assert got == [0, 1, 0, 1]


async def test_a_stored_row_too_large_is_resplit_under_new_seqs(tmp_path: Path) -> None:
    async with Buffer(tmp_path / "b.db", agent_id=AGENT) as buf:
        buf.put("dev", readings(100))
        await buf.flush()
        (old,) = await buf.fetch(0, 10)
        assert len(old.payload) > LIMIT
        refused = buf.resplit(old.seq, old.device, old.payload, LIMIT)
        await buf.flush()
        rows = await buf.fetch(0, 1000)
    assert refused == 0
    assert old.seq not in [r.seq for r in rows]  # the old row is gone, its data is not
    assert all(r.seq > old.seq and len(r.payload) <= LIMIT for r in rows)
    got = [x["values"]["i"] for r in rows for x in decode_message(r.payload)["readings"]]
    assert got == list(range(100))


async def test_resplit_of_a_single_huge_reading_refuses_it(tmp_path: Path) -> None:
    async with Buffer(tmp_path / "b.db", agent_id=AGENT) as buf:
        buf.put("dev", [Reading(1, {"huge": "y" * 5000})])
        await buf.flush()
        (old,) = await buf.fetch(0, 10)
        assert buf.resplit(old.seq, old.device, old.payload, LIMIT) == 1
        await buf.flush()
        assert await buf.fetch(0, 10) == []
    assert buf.refused_readings == 1
    assert len(encode_message(AGENT, "dev", 1, [Reading(1, {"huge": "y" * 5000})])) > LIMIT
