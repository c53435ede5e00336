"""The machine engine: raw reads in, the reference's shift figures out, across restarts."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from agent.compute.counters import CounterSpec
from agent.compute.engine import Machine
from agent.compute.oee import OeeConfig, shift_summary
from agent.compute.plan import AlarmPlan, CounterPlan, EnergyPlan, MachinePlan, Source
from agent.compute.shifts import Calendar
from agent.compute.state import ModeSpec, StateMap, StateSpec, parse_condition
from agent.message import decode_events, encode_event_parts, splice_seq
from drivers.base import Reading
from tests.agent.compute.test_oee import (
    CALENDAR,
    MINUTE,
    T5_REJECT,
    T5_STATES,
    T5_TOTAL,
    shift,
    spread,
    t,
)

STATES = {0: "running", 1: "stopped", 2: "fault", 3: "idle"}
CODES = {v: k for k, v in STATES.items()}
CONFIG = OeeConfig(ideal_cycle_s=1.0, poll_interval_ms=MINUTE)


def plan(**extra: Any) -> MachinePlan:
    spec = StateSpec(StateMap("st", STATES), offline_after_ms=3 * MINUTE, poll_ms=MINUTE)  # type: ignore[arg-type]
    base: dict[str, Any] = {
        "name": "press_01",
        "inputs": {"st": Source("drive", "st")},
        "state": spec,
        "counters": (
            CounterPlan("total", Source("plc", "total"), CounterSpec("uint32")),
            CounterPlan("reject", Source("plc", "reject"), CounterSpec("uint32")),
        ),
        "calendar": CALENDAR,
        "oee": CONFIG,
        "publish_every_ms": 0,
    }
    base.update(extra)
    return MachinePlan(**base)


def state_at(ts: int) -> str:
    for interval in T5_STATES:
        if interval.start_ms <= ts and (interval.end_ms is None or ts < interval.end_ms):
            return interval.state
    return "running"


def t5_reads() -> Iterator[tuple[str, Reading]]:
    """One read a minute of the drive and the counter, 07:30 .. 16:40, as in T5."""
    totals = [*spread(19_271, 480), 55]
    rejects = [*spread(423, 480), 3]
    total = reject = 0
    ts = t("07:30")
    while ts <= t("16:40"):
        yield "drive", Reading(ts, {"st": CODES[state_at(ts)]})
        i = (ts - t("08:00")) // MINUTE
        if 0 <= i < len(totals):
            total += totals[i]
            reject += rejects[i]
        if ts >= t("07:59"):
            yield "plc", Reading(ts, {"total": total, "reject": reject})
        ts += MINUTE


def run(machine: Machine, reads: Iterator[tuple[str, Reading]]) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for device, reading in reads:
        machine.feed(device, reading)
        machine.tick(reading.ts)
        events.extend(machine.drain(reading.ts).events)
    return events


def final_day(events: list[dict[str, Any]]) -> dict[str, Any]:
    found = [e for e in events if e["type"] == "shift" and e["final"]]
    assert len(found) == 1, found
    return found[0]


def test_t5_through_the_engine_gives_the_reference_figures() -> None:
    events = run(Machine(plan()), t5_reads())
    got = final_day(events)
    want = shift_summary(
        "press_01", shift(), T5_STATES, CONFIG, total=T5_TOTAL, reject=T5_REJECT
    ).to_dict()
    for key in ("planned_s", "run_s", "down_s", "micro_stop_s", "unknown_s", "total", "good"):
        assert got[key] == want[key], key
    assert {k: got[k] for k in ("A", "P", "Q", "OEE")} == {
        "A": 0.888095,
        "P": 0.861081,
        "Q": 0.978050,
        "OEE": 0.747937,
    }
    assert got["id"] == "press_01/2026-03-02/day/0"
    assert not got["counts_incomplete"]
    # State events: each interval opened and closed once, with the same id.
    opened = [e for e in events if e["type"] == "state" and e["end"] is None]
    closed = [e for e in events if e["type"] == "state" and e["end"] is not None]
    assert [e["state"] for e in opened] == [i.state for i in T5_STATES]
    assert [e["start"] for e in opened[1:]] == [i.start_ms for i in T5_STATES[1:]]
    assert {e["id"] for e in closed} <= {e["id"] for e in opened}
    counted = sum(e["delta"] for e in events if e["type"] == "count" and e["counter"] == "total")
    assert counted == 19_271 + 55


@pytest.mark.parametrize("cut_at", ["09:25", "12:00", "15:59"])
def test_a_kill_and_restart_counts_every_piece_once(cut_at: str) -> None:
    """The state committed with the events is all a restart has: the reads between the
    last commit and the kill are lost (never committed), the next read covers them."""
    reads = list(t5_reads())
    cut = t(cut_at)
    machine = Machine(plan())
    before = [(d, r) for d, r in reads if r.ts <= cut]
    events = run(machine, iter(before))
    saved = json.loads(json.dumps(machine.state()))
    # Down for one read: shorter than offline_after (3 min), so no time is unknown.
    lost = [(d, r) for d, r in reads if cut < r.ts <= cut + MINUTE]
    assert lost
    after = [(d, r) for d, r in reads if r.ts > cut + MINUTE]
    again = Machine(plan(), saved)
    assert not again.problems
    events += run(again, iter(after))
    got = final_day(events)
    assert (got["total"], got["good"], got["reject"]) == (19_271, 18_848, 423)
    uninterrupted = final_day(run(Machine(plan()), t5_reads()))
    assert got == uninterrupted
    counted = sum(e["delta"] for e in events if e["type"] == "count" and e["counter"] == "total")
    assert counted == 19_271 + 55


def test_an_alarm_is_raised_held_through_a_blip_and_cleared() -> None:
    alarm = AlarmPlan(
        "jam",
        parse_condition("st == 2", {"st"}),
        severity=700,
        message="jammed",
        min_repeat_ms=2 * MINUTE,
    )
    machine = Machine(plan(alarms=(alarm,), calendar=None, oee=None))
    codes = [0, 2, 0, 2, 0, 0, 0, 0]  # fault, clear 1 min, fault again, clear for good
    events: list[dict[str, Any]] = []
    for i, code in enumerate(codes):
        ts = t("08:00") + i * MINUTE
        machine.feed("drive", Reading(ts, {"st": code}))
        machine.tick(ts)
        events += machine.drain(ts).events
    alarms = [e for e in events if e["type"] == "alarm"]
    assert [(a["active"], a["ts"]) for a in alarms] == [
        (True, t("08:01")),
        (False, t("08:04")),
    ]
    assert alarms[0]["id"] == alarms[1]["id"]
    assert alarms[1]["quality"] == "good"


def test_an_alarm_ends_stale_when_the_machine_goes_offline() -> None:
    alarm = AlarmPlan("jam", parse_condition("st == 2", {"st"}))
    machine = Machine(plan(alarms=(alarm,), calendar=None, oee=None))
    machine.feed("drive", Reading(t("08:00"), {"st": 2}))
    machine.feed("drive", Reading(t("08:01"), {}, {"st": "timeout"}))
    machine.tick(t("08:05"))
    events = machine.drain(t("08:05")).events
    end = [e for e in events if e["type"] == "alarm" and not e["active"]]
    assert len(end) == 1
    assert end[0]["quality"] == "stale"
    offline = [e for e in events if e["type"] == "state" and e["state"] == "offline"]
    assert offline[0]["start"] == t("08:01")  # back-dated to the first failed read


def test_a_restart_longer_than_offline_after_is_unknown_time_not_downtime() -> None:
    reads = list(t5_reads())
    cut = t("09:25")
    machine = Machine(plan())
    events = run(machine, iter([(d, r) for d, r in reads if r.ts <= cut]))
    again = Machine(plan(), json.loads(json.dumps(machine.state())))
    events += run(again, iter([(d, r) for d, r in reads if r.ts > cut + 3 * MINUTE]))
    got = final_day(events)
    assert got["unknown_s"] == 3 * 60  # offline from 09:26 (the read due) to 09:29
    assert got["down_s"] == 47 * 60 - 3 * 60
    assert got["coverage"] == round(417 / 420, 6)
    assert (got["total"], got["counts_incomplete"]) == (19_271, False)


def test_a_counter_gap_is_an_event_never_a_number() -> None:
    spec = CounterSpec("uint16", max_rate=20.0)
    machine = Machine(
        plan(
            counters=(CounterPlan("total", Source("plc", "total"), spec),),
            calendar=None,
            oee=None,
        )
    )
    machine.feed("plc", Reading(t("08:00"), {"total": 100}))
    machine.feed("plc", Reading(t("10:00"), {"total": 200}))  # 7,200 s: more than a turn
    events = machine.drain(t("10:00")).events
    gaps = [e for e in events if e["type"] == "counter_gap"]
    assert [(g["from"], g["to"], g["raw"]) for g in gaps] == [(t("08:00"), t("10:00"), 200)]
    assert not [e for e in events if e["type"] == "count"]


def test_energy_per_part_in_the_shift_summary() -> None:
    meter = EnergyPlan(Source("meter", "kwh"), register="exact", poll_ms=MINUTE)
    machine = Machine(plan(energy=meter))
    kwh = 1000.0
    events: list[dict[str, Any]] = []
    for device, reading in t5_reads():
        machine.feed(device, reading)
        if device == "drive":
            machine.feed("meter", Reading(reading.ts, {"kwh": kwh}))
            kwh += 0.5  # 30 kWh an hour
        machine.tick(reading.ts)
        events += machine.drain(reading.ts).events
    energy = final_day(events)["energy"]
    assert energy["kwh"] == 240.0  # 8 h at 30 kWh/h
    assert energy["kwh_per_good"] == round(240 / 18_848, 6)
    assert energy["complete"]
    assert len(machine.state()["meter"]) < 40  # thinned: not one read a minute


def test_every_event_the_engine_makes_fits_the_published_schema() -> None:
    """Checked by jsonschema (an independent validator) against config/schema/events.schema.json."""
    root = Path(__file__).resolve().parents[3]
    schema = json.loads((root / "config" / "schema" / "events.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    validator.check_schema(schema)
    meter = EnergyPlan(Source("drive", "kwh"), register="exact", poll_ms=MINUTE)
    alarm = AlarmPlan("jam", parse_condition("st == 2", {"st"}), severity=800, message="jam")
    machine = Machine(plan(energy=meter, alarms=(alarm,), publish_every_ms=3_600_000))
    kinds: set[str] = set()
    for n, (device, raw) in enumerate(t5_reads()):
        extra = {"kwh": 100.0 + n} if device == "drive" else {}
        reading = Reading(raw.ts, {**raw.values, **extra})
        machine.feed(device, reading)
        machine.tick(reading.ts)
        events = machine.drain(reading.ts).events
        if events:
            head, tail = encode_event_parts("box", "press_01", events)
            message = decode_events(splice_seq(head, n + 1, tail))
            validator.validate(message)
            kinds |= {e["type"] for e in events}
    assert kinds == {"state", "count", "alarm", "shift"}
    bad = {"type": "state", "id": "m/state/1", "ts": 1, "state": "busy"}
    wrong = {"kind": "events", "v": 1, "agent": "a", "source": "m", "seq": 1, "events": [bad]}
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(wrong)


def test_a_tick_before_the_latest_read_never_breaks_the_running_figure() -> None:
    """Reads of two devices arrive out of time order, or a device's clock is ahead."""
    machine = Machine(plan(publish_every_ms=60_000))
    machine.feed("drive", Reading(t("08:00"), {"st": 0}))
    machine.feed("drive", Reading(t("08:01"), {"st": 0}))
    machine.feed("drive", Reading(t("08:02"), {"st": 1}))
    machine.tick(t("08:01:30"))  # behind the stop the machine already knows of
    events = machine.drain(t("08:01:30")).events
    [running] = [e for e in events if e["type"] == "shift"]
    assert running["as_of_ms"] == t("08:02")
    assert (running["run_s"], running["down_s"] + running["micro_stop_s"]) == (120, 0)


def test_a_state_back_dated_after_a_shift_was_summed_up_revises_it() -> None:
    """The summary of a shift sent, then a state change of the next hour is decided: the
    revision sees the shift's own intervals, not one that began after its end."""
    machine = Machine(plan())
    events: list[dict[str, Any]] = []
    for device, reading in t5_reads():
        machine.feed(device, reading)
        machine.tick(reading.ts)
        events += machine.drain(reading.ts).events
    # 16:41 .. 16:50 the drive is read stopped: a new interval after the day shift
    for minute in range(41, 51):
        ts = t(f"16:{minute}")
        machine.feed("drive", Reading(ts, {"st": 1}))
        machine.tick(ts)
        events += machine.drain(ts).events
    finals = [e for e in events if e["type"] == "shift" and e["final"]]
    assert [e["revision"] for e in finals] == [0]


def test_a_declared_reset_counts_from_zero_and_a_set_value_is_a_gap() -> None:
    spec = CounterSpec("uint16", max_rate=5.0, reset_signal=True)
    counter = CounterPlan("total", Source("plc", "total"), spec, reset=Source("plc", "rst"))
    machine = Machine(plan(counters=(counter,), calendar=None, oee=None))
    reads = [(0, 100, 0), (1, 104, 0), (2, 3, 1), (3, 7, 0), (4, 40_000, 0)]
    for second, value, reset in reads:
        machine.feed("plc", Reading(t("08:00") + second * 1000, {"total": value, "rst": reset}))
    events = machine.drain(t("08:00") + 60_000).events
    [count] = [e for e in events if e["type"] == "count"]
    assert (count["delta"], count["kinds"]) == (4 + 3 + 4, ["declared", "normal"])
    [gap] = [e for e in events if e["type"] == "counter_gap"]
    assert (gap["from"], gap["raw"]) == (t("08:00") + 3000, 40_000)


def test_a_read_stamped_no_newer_still_tells_a_new_mode() -> None:
    """OPC UA stamps a group's read with its values' own change time: the mode (another
    poll group) changed with the state reads under the same stamp, and the stopped
    state with an older one; neither may be dropped as a replay."""
    mode = ModeSpec("md", {1: "production", 2: "maintenance"}, planned_downtime=["maintenance"])
    spec = StateSpec(StateMap("st", STATES), offline_after_ms=3 * MINUTE, poll_ms=MINUTE,  # type: ignore[arg-type]
                     mode=mode)  # fmt: skip
    inputs = {"st": Source("line", "st"), "md": Source("line", "md")}
    machine = Machine(plan(state=spec, inputs=inputs, counters=(), calendar=None, oee=None))
    t0 = t("08:00")
    reads = [
        Reading(t0, {"st": CODES["stopped"]}),  # the mode not read yet: not known
        Reading(t0 - MINUTE, {"md": 1}),  # the mode, unchanged since before
        Reading(t0, {"st": CODES["stopped"]}),  # the same stamp again: nothing new
        Reading(t0 + 2 * MINUTE, {"st": CODES["running"]}),
        Reading(t0 + 5 * MINUTE, {"st": CODES["stopped"]}),  # stopped for maintenance,
        Reading(t0 + 5 * MINUTE, {"md": 2}),  # the mode read after it, the same stamp
        Reading(t0 + 5 * MINUTE, {"st": CODES["stopped"]}),
    ]
    events: list[dict[str, Any]] = []
    for i, reading in enumerate(reads):
        machine.feed("line", reading)
        now = t0 + i * 1000
        machine.tick(now)
        events += machine.drain(now).events
    current = machine.current
    assert current is not None
    assert (current.state, current.mode, current.planned_downtime) == (
        "stopped", "maintenance", True)  # fmt: skip
    assert current.start_ms == t0 + 5 * MINUTE
    opened = [(e["state"], e["mode"], e["start"]) for e in events
              if e["type"] == "state" and e["end"] is None]  # fmt: skip
    assert opened[0] == ("stopped", "production", t0)
    assert opened[1] == ("running", "production", t0 + 2 * MINUTE)
    assert opened[-1] == ("stopped", "maintenance", t0 + 5 * MINUTE)


def test_a_quiet_line_under_a_standing_stamp_is_not_offline() -> None:
    """OPC UA: a held line's values keep their change time; the agent saw them each poll."""
    spec = StateSpec(StateMap("st", STATES), offline_after_ms=5000, poll_ms=200)  # type: ignore[arg-type]
    machine = Machine(plan(state=spec, counters=(), calendar=None, oee=None))
    held_since = t("08:00")
    for i in range(40):  # 8 s of polls, every one stamped 08:00:00
        seen = held_since + 200 * (i + 1)
        machine.feed("drive", Reading(held_since, {"st": CODES["idle"]}), seen)
        machine.tick(seen)
    current = machine.current
    assert current is not None
    assert (current.state, current.start_ms) == ("idle", held_since)
    # the published reads alone (no seen time) cannot tell quiet from silent
    blind = Machine(plan(state=spec, counters=(), calendar=None, oee=None))
    for i in range(40):
        blind.feed("drive", Reading(held_since, {"st": CODES["idle"]}))
        blind.tick(held_since + 200 * (i + 1))
    assert blind.current is not None
    assert blind.current.state == "offline"


def test_a_restart_keeps_what_the_machine_last_read() -> None:
    """The mode comes from a slower device: a restart that loses no read must not make the
    machine unknown until the mode is read again."""
    mode = ModeSpec("md", {1: "production", 2: "setup"})
    spec = StateSpec(StateMap("st", STATES), offline_after_ms=15_000, poll_ms=5_000, mode=mode)  # type: ignore[arg-type]
    inputs = {"st": Source("drive", "st"), "md": Source("hmi", "md")}
    shaped = plan(state=spec, inputs=inputs, counters=())

    def reads() -> Iterator[tuple[str, Reading]]:
        for i in range(8 * 720):  # 08:00 .. 16:00 every 5 s, the mode every minute
            ts = t("08:00") + i * 5_000
            if i % 12 == 0:
                yield "hmi", Reading(ts, {"md": 1})
            yield "drive", Reading(ts + 1, {"st": 0})

    def states(cut: int | None) -> list[tuple[str, int]]:
        machine, out = Machine(shaped), []
        for n, (device, reading) in enumerate(reads()):
            machine.feed(device, reading)
            machine.tick(reading.ts)
            out += machine.drain(reading.ts).events
            if n == cut:
                machine = Machine(shaped, json.loads(json.dumps(machine.state())))
        return [(e["state"], e["start"]) for e in out if e["type"] == "state" and not e["end"]]

    assert states(2601) == states(None)


def test_a_shift_changed_in_the_calendar_starts_its_tally_afresh() -> None:
    machine = Machine(plan())
    for device, reading in t5_reads():
        if reading.ts > t("11:00"):
            break
        machine.feed(device, reading)
        machine.tick(reading.ts)
    saved = json.loads(json.dumps(machine.state()))
    calendar = Calendar.from_config(
        {
            "timezone": "Asia/Shanghai",
            "workdays": ["mon"],
            "shifts": [{"name": "day", "start": "08:00", "end": "12:00"}],
        }
    )
    again = Machine(plan(calendar=calendar), saved)
    tally = again.state()["shifts"]["2026-03-02/day"]["tallies"]["total"]
    assert (tally["end_ms"], tally["pieces"]) == (t("12:00"), 0)
