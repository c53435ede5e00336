"""``edge-agent report`` from the facts history: the shift's figures, timeline and alarms."""

from __future__ import annotations

from typing import Any

from agent.cli.report import build, render
from agent.compute.engine import Machine
from tests.agent.compute.test_engine import plan, t5_reads


def history() -> list[dict[str, Any]]:
    machine = Machine(plan(publish_every_ms=3_600_000))
    kept: list[dict[str, Any]] = []
    for device, reading in t5_reads():
        machine.feed(device, reading)
        machine.tick(reading.ts)
        kept += [e | {"source": "press_01"} for e in machine.drain(reading.ts).history]
    return kept


def test_the_latest_shift_with_its_final_figures_and_timeline() -> None:
    doc = build(history(), None)
    assert doc is not None
    assert doc["shift"] == "2026-03-02/day"
    m = doc["machines"]["press_01"]
    f = m["figures"]
    assert (f["final"], f["total"], f["good"], f["OEE"]) == (True, 19_271, 18_848, 0.747937)
    assert [s["state"] for s in m["states"]] == [
        "running",
        "stopped",
        "running",
        "fault",
        "running",
        "idle",
        "running",
    ]
    text = render(doc)
    assert "OEE 74.8 %" in text
    assert "pieces 19271 (good 18848, reject 423)" in text


def test_a_running_figure_before_the_end_and_an_unknown_shift() -> None:
    events = [e for e in history() if not (e["type"] == "shift" and e["final"])]
    doc = build(events, "2026-03-02/day")
    assert doc is not None
    assert doc["machines"]["press_01"]["figures"]["final"] is False
    assert build(events, "2026-03-03/night") is None
    assert build([], None) is None
