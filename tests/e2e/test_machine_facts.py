"""End to end: a scripted press through real Modbus links, the agent, a real broker.

Two simulators follow one wall-clock script (simulators/timeline.py): a drive
(the shipped inovance-md500 profile: its run state and fault words) and a
piece counter (generic-counter, t0 uint16). The agent computes the press's
state, pieces and shift figures on the box and publishes them as events.

What is checked, on what reached the broker:

- the states follow the script (idle, running, fault, running, offline,
  running), each change at the first poll that could see it;
- the pieces: the sum of the count events is what an independent counter over
  the published raw reads gives, and the script's own count (a wrap at 65535
  counted, a reset losing at most the pieces of one poll);
- the shift summary equals the one the computing core gives when fed the same
  raw reads in one uninterrupted run, also when the agent is killed with
  SIGKILL mid-shift and the broker is down across the shift's end.
"""

from __future__ import annotations

import math
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

from agent.compute.counters import Counter, CounterSpec
from agent.compute.engine import Machine
from agent.runtime.machines import plan_machines
from agent.site.loader import load_site
from drivers.base import Reading
from simulators.run import SimDevice
from simulators.timeline import Step, Timeline
from tests.support.agentproc import AgentProcess, counter_device, site_dict
from tests.support.facts import analytics, decoded, final_summary, machine_events
from tests.support.mosquitto import Mosquitto, Received, Subscriber
from tests.support.simthread import SimThread

AGENT = "e2e-facts"
MACHINE = "press-01"
RATE = 4  # pieces per running second
POLL = "200ms"
SHIFT = (2, 27)  # seconds after the script's start
SETTLE_S = 6.5  # offline_after 5 s + two polls + the 0.5 s tick, and some room

DRIVE_STEPS = [
    {"at": 0, "run": True, "freq": 50},
    {"at": 5, "fault": 2},
    {"at": 8, "fault": 0},
    {"at": 11, "offline": True},
    {"at": 17, "offline": False},
]
COUNTER_STEPS = [
    {"at": 0, "run": True},
    {"at": 5, "fault": 2},
    {"at": 8, "fault": 0},
    {"at": 20, "counter": 65530},  # wraps 1.5 s later
    {"at": 24, "counter_reset": True},
]


def _timeline(steps: list[dict[str, Any]], start: float) -> Timeline:
    parsed = [Step.parse(s, f"step {i}") for i, s in enumerate(steps)]
    return Timeline(parsed, start=start, rate=Fraction(RATE))


def _site(broker: int, ports: dict[str, int], start: float) -> dict[str, Any]:
    drive = {
        "id": "press-drive",
        "profile": "inovance-md500",
        "connection": {"modbus_tcp": {"host": "127.0.0.1", "port": ports["press-drive"],
                                      "timeout": "1s"}},
        "poll_groups": {"fast": POLL, "slow": "2s"},
    }  # fmt: skip
    site = site_dict(AGENT, broker, [drive, counter_device("press-count", ports["press-count"],
                                                           POLL)])  # fmt: skip
    site["mqtt"]["qos"] = 1
    machines = {
        MACHINE: {
            "devices": ["press-drive", "press-count"],
            "calendar": "e2e",
            "ideal_cycle": "0.2s",
            "counters": {
                "total": {"source": "press-count/t0", "width": "uint16", "max_rate": "10/s"}
            },
        }
    }
    site["analytics"] = analytics(start + SHIFT[0], start + SHIFT[1], machines)
    return site


def _script_start() -> float:
    """A whole second a little ahead: the agent is polling before the press starts."""
    return float(math.ceil(time.time()) + 4)


def _reference(site_file: Path, messages: dict[int, tuple[str, dict[str, Any]]],
               until: float) -> tuple[dict[str, Any] | None, list[tuple[int, int]]]:  # fmt: skip
    """The core fed the published raw reads in seq order, as one uninterrupted run:
    its final shift summary, and the pieces an independent counter adds at each read."""
    [plan] = plan_machines(load_site(site_file))
    machine = Machine(plan)
    counter = Counter(CounterSpec("uint16", max_rate=10.0))
    pieces: list[tuple[int, int]] = []
    events: list[dict[str, Any]] = []
    for _, (_topic, body) in sorted(messages.items()):
        if body.get("kind") == "events":
            continue
        device = body["device"]
        for r in body["readings"]:
            reading = Reading(r["ts"], r["values"], r.get("errors", {}))
            machine.feed(device, reading)
            machine.tick(reading.ts)
            events += machine.drain(reading.ts).events
            if device == "press-count" and ("t0" in r["values"] or "t0" in r.get("errors", {})):
                step = counter.feed(
                    r["ts"], r["values"].get("t0"), error=r.get("errors", {}).get("t0")
                )
                if step is not None and step.delta is not None:
                    pieces.append((step.ts_ms, step.delta))
    end = int(until * 1000)
    machine.tick(end)
    events += machine.drain(end).events
    return final_summary(events), pieces


def _run_until_final(sub: Subscriber, deadline: float) -> list[Received]:
    return sub.wait_for(
        lambda got: final_summary(machine_events(decoded(got), MACHINE)) is not None,
        timeout=max(1.0, deadline - time.time()),
    )


def test_a_scripted_press_gives_its_states_pieces_and_shift(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    start = _script_start()
    specs = [
        SimDevice("press-drive", "vfd", profile="inovance-md500",
                  timeline=_timeline(DRIVE_STEPS, start)),
        SimDevice("press-count", "counter", timeline=_timeline(COUNTER_STEPS, start)),
    ]  # fmt: skip
    with (
        SimThread(specs, step_interval=0.05) as sims,
        Subscriber(mosquitto.port, f"edge/{AGENT}/#") as sub,
    ):
        site = _site(mosquitto.port, sims.ports, start)
        with AgentProcess(tmp_path, site) as agent:
            got = _run_until_final(sub, start + SHIFT[1] + SETTLE_S + 20)
            status = agent.status()
            assert agent.stop() == 0
    messages = decoded(got)
    events = machine_events(messages, MACHINE)
    opened = [e for e in events if e["type"] == "state" and e["end"] is None]
    assert [e["state"] for e in opened] == ["idle", "running", "fault", "running", "offline",
                                            "running"], opened  # fmt: skip
    # Script time of each change; a read's ts is taken as the request leaves (-0.1 s).
    at = {e["state"] + str(i): e["start"] / 1000 - start for i, e in enumerate(opened)}
    assert -0.1 <= at["running1"] <= 0.5
    assert 4.9 <= at["fault2"] <= 5.5
    assert opened[2]["reason"] == "drive trip"
    assert 7.9 <= at["running3"] <= 8.5
    assert 10.9 <= at["offline4"] <= 12.5  # the first read that failed (1 s timeout)
    assert 16.9 <= at["running5"] <= 19.5  # reconnected after the backoff
    counts = [e for e in events if e["type"] == "count"]
    kinds = {k for e in counts for k in e["kinds"]}
    assert {"normal", "wrap", "reset"} <= kinds
    final = final_summary(events)
    assert final is not None
    reference, steps = _reference(tmp_path / "site.yaml", messages, start + SHIFT[1] + 60)
    last = max(e["to"] for e in counts)  # counts after it wait for the next count event
    pieces = sum(d for ts, d in steps if ts <= last)
    assert sum(e["delta"] for e in counts) == pieces
    assert final == reference
    # The shift (2 s .. 27 s): the 3 s trip is a micro-stop, the drive's silence unknown.
    assert final["planned_s"] == SHIFT[1] - SHIFT[0]
    assert final["run_s"] + final["micro_stop_s"] + final["unknown_s"] == final["planned_s"]
    assert 2.8 <= final["micro_stop_s"] <= 3.2
    assert 5.0 <= final["unknown_s"] <= 7.5
    assert final["down_s"] == 0
    assert final["total"] >= RATE * (3 + 4 + 9) - 2
    assert status["machines"][MACHINE]["state"] in ("running", "offline", "idle")
    # The script's own count: the counter runs 0-5 s and from 8 s at RATE. Between the
    # first and the last read the agent counts all of it but the pieces of the poll in
    # which the counter was set (a gap, never a number) and of the poll before the reset.
    ts = [
        r["ts"] / 1000 - start
        for _, (_, b) in sorted(messages.items())
        if b.get("device") == "press-count"
        for r in b["readings"]
        if "t0" in r["values"] and r["ts"] <= last
    ]
    made = RATE * (_running(ts[-1]) - _running(ts[0]))
    assert made - 2 * RATE * 0.2 - 2 <= pieces <= made + 1


def _running(t: float) -> float:
    """Seconds the counter ran up to script time ``t``."""
    return max(0.0, min(t, 5.0)) + max(0.0, t - 8.0)


STEADY_DRIVE = [{"at": 0, "run": True, "freq": 50}, {"at": 10, "fault": 4}, {"at": 13, "fault": 0}]
STEADY_COUNTER = [{"at": 0, "run": True}, {"at": 10, "fault": 4}, {"at": 13, "fault": 0}]
STEADY_SHIFT = (2, 25)
KILL_AT = 5.0
BROKER_DOWN = (18.0, 34.0)  # across the shift's end and its summary (about 31 s)


def _at(start: float, offset: float) -> None:
    time.sleep(max(0.0, start + offset - time.time()))


def test_a_kill_and_a_broker_outage_across_the_shift_end_change_no_figure(
    tmp_path: Path,
) -> None:
    """SIGKILL mid-shift, restarted at once; the broker down from before the shift's end
    until after its summary was made. The summary that arrives equals the core's over
    the same raw reads in one run; every piece is counted once."""
    start = _script_start()
    specs = [
        SimDevice("press-drive", "vfd", profile="inovance-md500",
                  timeline=_timeline(STEADY_DRIVE, start)),
        SimDevice("press-count", "counter", timeline=_timeline(STEADY_COUNTER, start)),
    ]  # fmt: skip
    broker = Mosquitto(tmp_path / "broker", persistence=True)
    broker.start()
    try:
        with (
            SimThread(specs, step_interval=0.05) as sims,
            Subscriber(broker.port, f"edge/{AGENT}/#", session="facts-checker") as sub,
        ):
            site = _site(broker.port, sims.ports, start)
            machines = site["analytics"]["machines"]
            site["analytics"] = analytics(
                start + STEADY_SHIFT[0], start + STEADY_SHIFT[1], machines
            )
            agent = AgentProcess(tmp_path / "box", site).start()
            try:
                _at(start, KILL_AT)
                agent.kill()
                agent.start()
                _at(start, BROKER_DOWN[0])
                broker.stop()
                _at(start, BROKER_DOWN[1])
                broker.start()
                got = _run_until_final(sub, start + BROKER_DOWN[1] + 30)
                status = agent.status()
            finally:
                if agent.proc is not None and agent.proc.poll() is None:
                    agent.stop()
    finally:
        broker.stop()
    messages = decoded(got)
    events = machine_events(messages, MACHINE)
    final = final_summary(events)
    assert final is not None
    assert final["as_of_ms"] == final["end_ms"]
    assert status["machines"][MACHINE]["problems"] == []
    reference, steps = _reference(tmp_path / "box" / "site.yaml", messages, start + 60)
    assert final == reference
    counted = [e for e in events if e["type"] == "count"]
    ids = [e["id"] for e in counted]
    once = {e["id"]: e for e in counted}
    last = max(e["to"] for e in counted)
    # resends carry the same id; the kill lost no piece and counted none twice
    assert sum(e["delta"] for e in once.values()) == sum(d for ts, d in steps if ts <= last)
    assert len(ids) - len(once) <= 10, "at most a window of resends"
    assert final["unknown_s"] == 0, "a restart shorter than offline_after is no unknown time"
    assert 2.8 <= final["micro_stop_s"] <= 3.2
    assert final["total"] >= RATE * (23 - 3) - 2
