"""Machine facts in the buffer: events share the seq, state lands with them or not at all."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path

import orjson

from agent.buffer import Buffer, FactRow, FactsSave
from agent.message import decode_events, decode_message, is_events
from drivers.base import Reading

REPO = Path(__file__).resolve().parents[3]


def event(ts: int, kind: str = "state") -> dict[str, object]:
    return {"type": kind, "id": f"m/{kind}/{ts}", "ts": ts, "state": "running", "end": None}


async def test_events_and_readings_share_one_seq_in_commit_order(tmp_path: Path) -> None:
    async with Buffer(tmp_path / "b.db", agent_id="box") as buf:
        buf.put("dev", [Reading(1, {"a": 1})])
        buf.put_events("press", [event(2)], FactsSave("press", b'{"n":1}'))
        buf.put("dev", [Reading(3, {"a": 2})])
        await buf.flush()
        rows = await buf.fetch(0, 10)
        assert [(r.seq, r.device, is_events(r.payload)) for r in rows] == [
            (1, "dev", False),
            (2, "press", True),
            (3, "dev", False),
        ]
        message = decode_events(rows[1].payload)
        assert (message["seq"], message["source"], message["events"]) == (2, "press", [event(2)])
        decode_message(rows[0].payload)
        assert await buf.load_state() == {"press": b'{"n":1}'}


async def test_state_alone_and_the_last_save_of_a_key_wins(tmp_path: Path) -> None:
    async with Buffer(tmp_path / "b.db", agent_id="box") as buf:
        buf.save_facts(FactsSave("m", b"1"))
        buf.put_events("m", [event(5)], FactsSave("m", b"2"))
        buf.save_facts(FactsSave("m", b"3", facts=(FactRow("m", 5, "state", b"{}"),)))
        await buf.flush()
        assert await buf.load_state() == {"m": b"3"}
    rows = Buffer.read_facts(tmp_path / "b.db")
    assert rows == [FactRow("m", 5, "state", b"{}")]


async def test_history_is_pruned_and_read_by_window(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    async with Buffer(path, agent_id="box") as buf:
        facts = tuple(FactRow("m" if i % 2 else "n", i * 10, "state", b"{}") for i in range(10))
        buf.save_facts(FactsSave("m", None, facts))
        await buf.flush()
        buf.save_facts(FactsSave("m", None, prune_before_ms=30))
        await buf.flush()
    assert [r.ts_ms for r in Buffer.read_facts(path)] == [30, 40, 50, 60, 70, 80, 90]
    assert [r.ts_ms for r in Buffer.read_facts(path, 40, 80, source="m")] == [50, 70]


async def test_an_events_message_too_large_is_cut_and_the_state_goes_with_the_last(
    tmp_path: Path,
) -> None:
    async with Buffer(tmp_path / "b.db", agent_id="box", max_message_bytes=1024) as buf:
        big = [{**event(i), "reason": "x" * 200} for i in range(10)]
        buf.put_events("m", big, FactsSave("m", b"s"))
        await buf.flush()
        rows = await buf.fetch(0, 100)
    assert len(rows) > 1
    assert all(len(r.payload) <= 1024 for r in rows)
    got = [e for r in rows for e in decode_events(r.payload)["events"]]
    assert got == big


async def test_a_resplit_events_batch_keeps_every_event(tmp_path: Path) -> None:
    async with Buffer(tmp_path / "b.db", agent_id="box") as buf:
        big = [{**event(i), "reason": "x" * 200} for i in range(10)]
        buf.put_events("m", big)
        await buf.flush()
        [row] = await buf.fetch(0, 10)
        assert buf.resplit(row.seq, row.device, row.payload, 1024) == 0
        await buf.flush()
        rows = await buf.fetch(0, 100)
    assert [e for r in rows for e in decode_events(r.payload)["events"]] == big
    assert rows[0].seq > row.seq


def test_a_kill_leaves_state_and_events_together(tmp_path: Path) -> None:
    """kill -9 at any point: the state stored is the one committed with the last events."""
    path = tmp_path / "b.db"
    script = textwrap.dedent(
        f"""
        import asyncio, os, signal, sys
        sys.path.insert(0, {str(REPO)!r})
        from agent.buffer import Buffer, FactsSave
        async def main():
            async with Buffer({str(path)!r}, agent_id="box", commit_interval=0.001) as buf:
                for n in range(1, 100_000):
                    ev = {{"type": "count", "id": f"m/{{n}}", "ts": n, "delta": 1}}
                    buf.put_events("m", [ev], FactsSave("m", str(n).encode()))
                    if n % 50 == 0:
                        await asyncio.sleep(0)
                    if n == 3000:
                        await buf.flush()
                        print("ready", flush=True)
        asyncio.run(main())
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    proc.kill()
    proc.wait(10)

    async def check() -> None:
        async with Buffer(path, agent_id="box") as buf:
            state = int((await buf.load_state())["m"])
            rows = await buf.fetch(0, 1_000_000)
            deltas = sum(e["delta"] for r in rows for e in orjson.loads(r.payload)["events"])
        assert state >= 3000
        assert deltas == state  # every committed event, and the state that produced them

    asyncio.run(check())
