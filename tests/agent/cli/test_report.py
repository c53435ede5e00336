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


def test_two_machines_roll_up_by_their_times_and_pieces_never_averaged() -> None:
    one = history()
    # a second press: the same states, a tenth of the pieces at a ten times longer cycle
    other = [
        e | {"source": "press_02"}
        | ({"total": 1927, "good": 1884, "reject": 43, "ideal_cycle_s": 10.0}
           if e["type"] == "shift" else {})
        for e in one
    ]  # fmt: skip
    doc = build(one + other, None)
    assert doc is not None
    every = doc["all"]
    assert every["total"] == 19_271 + 1927
    assert every["planned_s"] == 2 * 420 * 60
    operating = 2 * 373 * 60
    assert every["P"] == round((19_271 * 1.0 + 1927 * 10.0) / operating, 6)  # not the mean of P
    assert every["OEE"] == round((18_848 * 1.0 + 1884 * 10.0) / (2 * 420 * 60), 6)
    assert "all machines: pieces 21198" in render(doc)
    single = build(one, None)
    assert single is not None
    assert single["all"] is None
