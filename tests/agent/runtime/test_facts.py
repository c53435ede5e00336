"""The machines in the running agent: one failing machine, the box's clock, stamps ahead."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from agent.buffer import Buffer
from agent.compute.engine import Machine
from agent.compute.plan import EnergyPlan, Source
from agent.message import decode_events, is_events
from agent.runtime.facts import Facts
from drivers.base import Reading
from tests.agent.compute.test_engine import plan
from tests.agent.compute.test_oee import MINUTE, t


async def _events(buf: Buffer) -> list[tuple[str, dict[str, object]]]:
    await buf.flush()
    return [
        (decode_events(r.payload)["source"], e)
        for r in await buf.fetch(0, 10_000)
        if is_events(r.payload)
        for e in decode_events(r.payload)["events"]
    ]


async def test_a_machine_that_fails_leaves_the_others_committing(tmp_path: Path) -> None:
    """A meter value above float32's range once raised in the energy split of one machine;
    every machine after it in the commit loop was never committed again."""
    meter = EnergyPlan(Source("meter", "kwh"), poll_ms=MINUTE)
    first = plan(name="press_01", energy=meter, publish_every_ms=60_000)
    second = dataclasses.replace(plan(name="press_02"), inputs={"st": Source("drive2", "st")})
    async with Buffer(tmp_path / "b.db", agent_id="box") as buf:
        facts = Facts(buf, [first, second])
        await facts.start()
        for i in range(6):
            ts = t("08:00") + i * MINUTE
            facts.reading("meter", Reading(ts, {"kwh": 1e39 if i == 2 else 100.0 + i}))
            facts.reading("drive", Reading(ts, {"st": 0}))
            facts.reading("drive2", Reading(ts, {"st": 0 if i < 3 else 2}))
            facts.commit(ts)
        got = await _events(buf)
    assert ("press_02", "fault") in [(s, e.get("state")) for s, e in got if e["type"] == "state"]
    assert any("float32" in p for p in facts.machines["press_01"].problems)


async def test_the_clock_trusted_again_after_a_restart_is_told(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    async with Buffer(path, agent_id="box") as buf:
        facts = Facts(buf, [plan()])
        await facts.start()
        reading = Reading(t("08:00"), {"st": 0}, clock="unsynced")
        facts.reading("drive", reading)
        facts.commit(t("08:00"), force=True)
        assert [e["state"] for s, e in await _events(buf) if s == "_box"] == ["unsynced"]
    async with Buffer(path, agent_id="box") as buf:  # restarted; NTP synced meanwhile
        facts = Facts(buf, [plan()])
        await facts.start()
        facts.reading("drive", Reading(t("08:10"), {"st": 0}))
        facts.commit(t("08:10"), force=True)
        assert [e["state"] for s, e in await _events(buf) if s == "_box"] == ["unsynced", "ok"]


def test_a_stamp_hours_ahead_neither_ends_the_shift_nor_freezes_the_machine() -> None:
    machine = Machine(plan())
    events: list[dict[str, object]] = []
    for minute in range(8 * 60 + 10):
        seen = t("08:00") + minute * MINUTE
        ts = t("17:10") if minute == 10 else seen  # one read stamped 9 h ahead
        machine.feed("drive", Reading(ts, {"st": 1 if minute > 60 else 0}), seen)
        machine.tick(seen)
        events += machine.drain(seen).events
    finals = [e for e in events if e["type"] == "shift" and e["final"]]
    assert [e["id"] for e in finals] == ["press_01/2026-03-02/day/0"]
    assert finals[0]["as_of_ms"] == t("16:00")
    stops = [e for e in events if e["type"] == "state" and e["state"] == "stopped"]
    assert stops[0]["start"] == t("09:01")
