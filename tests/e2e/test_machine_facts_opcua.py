"""End to end: a scripted PackML packaging line over a real OPC UA link, the agent, a broker.

The packaging-line simulator (simulators/packaging_line.py) follows a wall-clock
script (simulators/timeline.py); the agent reads it in poll mode through the
shipped packml-line profile, whose ``machine:`` block maps the PackML state,
the unit mode (Maintenance is planned downtime), the PackTags counters (INT32)
and the line alarm. The agent computes the line's facts on the box and
publishes them as events to a real Mosquitto.

What is checked, on what reached the broker:

- the states follow the script (running, Held as idle with reason "internal",
  running, Aborted as fault, running, stopped in maintenance as planned
  downtime, running), each change at the first poll that could see it;
- the line alarm raised at the abort and cleared when it ends, under one id;
- the pieces: the processed counter goes past 2,147,483,647 to -2,147,483,648
  and that is an ordinary rise of one poll's packs (no gap, no reset: a signed
  register is read as unsigned); the sum of the count events is what an independent int32 counter
  over the published raw reads gives, and the script's own count;
- the shift summary equals the one the computing core gives when fed the same
  raw reads in one run, with the maintenance period taken out of planned time.
"""

from __future__ import annotations

import math
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from agent.compute.counters import Counter, CounterSpec
from agent.compute.engine import Machine
from agent.runtime.machines import plan_machines
from agent.site.loader import load_site
from drivers.base import Reading
from simulators.packaging_line import LineHandle, run_packaging_line
from simulators.timeline import Step, Timeline
from tests.faults.loopthread import LoopThread
from tests.support.agentproc import AgentProcess, site_dict
from tests.support.facts import analytics, decoded, final_summary, machine_events
from tests.support.mosquitto import Mosquitto, Subscriber

AGENT = "e2e-line"
DEVICE = "line-01"
MACHINE = "packer-01"
RATE = 5  # packs per second in Execute
REJECT_RATE = Fraction(1, 2)
MAX_RATE = 20.0
POLL = "200ms"
LEAD = 5  # seconds from the timeline's start to the script's: the agent is up and polling
INT32_MAX = 2**31 - 1
WRAP_AT = 22  # script second at which the processed counter passes INT32_MAX
SHIFT = (1, 25)  # script seconds
MAINTENANCE = (17, 20)
SETTLE_S = 6.5  # offline_after 5 s + two polls + the 0.5 s tick, and some room

# Script seconds. The line is in Execute from the timeline's start, LEAD s ahead (no value
# of a stopped line stands still for offline_after before the script begins); the counter
# starts so that it passes INT32_MAX at WRAP_AT.
SCRIPT: list[dict[str, Any]] = [
    {"at": 3, "state": 11},  # Held
    {"at": 6, "run": True},
    {"at": 9, "fault": 3},  # Aborted, AlarmActive
    {"at": 12, "fault": 0},
    {"at": MAINTENANCE[0], "run": False, "mode": 2},  # Stopped, in Maintenance
    {"at": MAINTENANCE[1], "run": True, "mode": 1},
]


def _made(t: float) -> float:
    """Packs made from the timeline's start up to script second ``t``."""
    spans = [(-LEAD, 3.0), (6.0, 9.0), (12.0, 17.0), (20.0, math.inf)]
    return RATE * sum(max(0.0, min(t, b) - a) for a, b in spans)


PRESET = INT32_MAX + 1 - int(_made(WRAP_AT))  # the counter at the script's start


def _timeline(start: float) -> Timeline:
    steps = [Step.parse({"at": 0, "counter": PRESET, "run": True}, "preset")]
    steps += [Step.parse({**s, "at": s["at"] + LEAD}, f"step {i}") for i, s in enumerate(SCRIPT)]
    return Timeline(steps, start=start - LEAD, rate=Fraction(RATE), reject_rate=REJECT_RATE)


def _site(broker: int, endpoint: str, start: float) -> dict[str, Any]:
    line = {
        "id": DEVICE,
        "profile": "packml-line",
        "connection": {"opcua": {"endpoint": endpoint, "timeout": "2s"}},
        "poll_groups": {"fast": POLL, "slow": POLL},
    }
    site = site_dict(AGENT, broker, [line])
    site["mqtt"]["qos"] = 1
    counter = {"width": "int32", "max_rate": f"{MAX_RATE:g}/s"}
    machines = {
        MACHINE: {
            "devices": [DEVICE],
            "calendar": "e2e",
            "ideal_cycle": "0.2s",
            "counters": {
                "total": {"source": f"{DEVICE}/processed_count", **counter},
                "reject": {"source": f"{DEVICE}/defective_count", **counter},
            },
        }
    }
    site["analytics"] = analytics(start + SHIFT[0], start + SHIFT[1], machines)
    return site


def _raw(messages: dict[int, tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """The line's published raw reads, in seq order."""
    return [
        r
        for _, (_, body) in sorted(messages.items())
        if body.get("kind") != "events" and body.get("device") == DEVICE
        for r in body["readings"]
    ]


def _reference(site_file: Path, reads: list[dict[str, Any]], until: float) -> dict[str, Any] | None:
    """The core fed the published raw reads in seq order, as one uninterrupted run:
    its final shift summary."""
    [plan] = plan_machines(load_site(site_file))
    machine = Machine(plan)
    events: list[dict[str, Any]] = []
    for r in reads:
        reading = Reading(r["ts"], r["values"], r.get("errors", {}))
        machine.feed(DEVICE, reading)
        machine.tick(reading.ts)
        events += machine.drain(reading.ts).events
    end = int(until * 1000)
    machine.tick(end)
    events += machine.drain(end).events
    return final_summary(events)


def _steps(reads: list[dict[str, Any]], tag: str) -> list[tuple[int, int | None, str, int]]:
    """An independent int32 counter over the reads of ``tag``: (ts, delta, kind, raw) each."""
    counter = Counter(CounterSpec("int32", max_rate=MAX_RATE))
    out: list[tuple[int, int | None, str, int]] = []
    for r in reads:
        if tag not in r["values"] and tag not in r.get("errors", {}):
            continue
        step = counter.feed(r["ts"], r["values"].get(tag), error=r.get("errors", {}).get(tag))
        if step is not None:
            out.append((step.ts_ms, step.delta, step.kind, r["values"][tag]))
    return out


def test_a_scripted_packaging_line_gives_its_states_alarm_packs_and_shift(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    start = float(math.ceil(time.time()) + LEAD)
    loop = LoopThread("packaging-line")
    try:
        line: LineHandle = loop.enter(run_packaging_line(tick=0.05, timeline=_timeline(start)))
        site = _site(mosquitto.port, line.endpoint, start)
        with (
            Subscriber(mosquitto.port, f"edge/{AGENT}/#") as sub,
            AgentProcess(tmp_path, site) as agent,
        ):
            got = sub.wait_for(
                lambda got: final_summary(machine_events(decoded(got), MACHINE)) is not None,
                timeout=max(1.0, start + SHIFT[1] + SETTLE_S + 10 - time.time()),
            )
            status = agent.status()
            assert agent.stop() == 0
            log = agent.log()
    finally:
        loop.close()
    assert "Traceback" not in log, log
    messages = decoded(got)
    events = machine_events(messages, MACHINE)
    reads = _raw(messages)

    # -- states: each at the first poll that could see it (reads stamped at the change).
    # The mode is read in its own poll group: a state judged with the mode not yet read
    # is announced and replaced under the same id (closed with no length), as a
    # back-dated guess is: the last word on each id is what holds.
    latest: dict[str, dict[str, Any]] = {}
    for e in events:
        if e["type"] == "state":
            latest[e["id"]] = e
    held = [e for e in latest.values() if e["end"] is None or e["end"] > e["start"]]
    opened = [next(o for o in events if o["id"] == e["id"] and o["end"] is None
                   and o["mode"] == e["mode"]) for e in held]  # fmt: skip
    shown = [(e["state"], e["reason"], e["mode"], e["planned_downtime"]) for e in opened]
    assert shown == [
        ("running", None, "production", False),
        ("idle", "internal", "production", False),
        ("running", None, "production", False),
        ("fault", None, "production", False),
        ("running", None, "production", False),
        ("stopped", None, "maintenance", True),
        ("running", None, "production", False),
    ], (shown, opened)
    at = [e["start"] / 1000 - start for e in opened[1:]]
    for seen, planned in zip(at, [3, 6, 9, 12, MAINTENANCE[0], MAINTENANCE[1]], strict=True):
        assert planned - 0.1 <= seen <= planned + 0.5, (at, opened)

    # -- the line alarm: raised at the abort, cleared at its end, one id
    alarms = [e for e in events if e["type"] == "alarm"]
    active = [(a["name"], a["active"]) for a in alarms]
    assert active == [("line_alarm", True), ("line_alarm", False)], alarms
    assert alarms[0]["id"] == alarms[1]["id"]
    assert alarms[0]["start"] == alarms[1]["start"] == opened[3]["start"]
    assert alarms[1]["end"] == opened[4]["start"]
    assert alarms[1]["quality"] == "good"

    # -- packs: past INT32_MAX is an ordinary rise of one poll's packs, each counted once
    assert not [e for e in events if e["type"] == "counter_gap"]
    steps = _steps(reads, "processed_count")
    [(over_ts, over_delta, over_kind, over_raw)] = [
        s for i, s in enumerate(steps) if i and steps[i - 1][3] > 0 > s[3]
    ]
    before = next(s for s in reversed(steps) if s[0] < over_ts)
    assert over_kind == "normal"
    assert over_delta is not None
    assert before[3] <= INT32_MAX < before[3] + over_delta
    assert over_delta == over_raw - before[3] + 2**32
    assert 1 <= over_delta <= 2  # 5 packs/s, polled every 0.2 s
    assert abs(over_ts / 1000 - start - WRAP_AT) <= 0.5
    assert {s[2] for s in steps} == {"first", "normal"}, steps
    counts = [e for e in events if e["type"] == "count"]
    assert {k for e in counts for k in e["kinds"]} == {"normal"}, counts
    for role, tag in (("total", "processed_count"), ("reject", "defective_count")):
        mine = [e for e in counts if e["counter"] == role]
        last = max(e["to"] for e in mine)  # counts after it wait for the next count event
        expected = sum(d for ts, d, _, _ in _steps(reads, tag) if d is not None and ts <= last)
        assert sum(e["delta"] for e in mine) == expected, role
    # the script's own count, between the first and the last counted read
    total = [e for e in counts if e["counter"] == "total"]
    first_ts = steps[0][0] / 1000 - start
    last_ts = max(e["to"] for e in total) / 1000 - start
    made = _made(last_ts) - _made(first_ts)
    assert made - 2 <= sum(e["delta"] for e in total) <= made + 1

    # -- the shift (1 s .. 25 s): equal to the core's, maintenance out of planned time
    final = final_summary(events)
    assert final is not None
    assert final == _reference(tmp_path / "site.yaml", reads, start + SHIFT[1] + 60)
    assert 2.8 <= final["planned_down_s"] <= 3.2
    assert final["planned_s"] == pytest.approx(SHIFT[1] - SHIFT[0] - final["planned_down_s"])
    assert final["unknown_s"] == 0
    parts = final["run_s"] + final["micro_stop_s"] + final["down_s"]
    assert parts == pytest.approx(final["planned_s"])
    assert 2.8 * 2 <= final["micro_stop_s"] <= 3.2 * 2  # Held and Aborted, 3 s each
    assert final["total"] >= RATE * (2 + 3 + 5 + 5) - 2
    assert final["reject"] >= int(REJECT_RATE * (2 + 3 + 5 + 5)) - 1
    assert status["machines"][MACHINE]["problems"] == []
