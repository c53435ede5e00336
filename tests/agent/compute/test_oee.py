"""OEE per machine and shift: the reference's T5, T6 and T11 with their exact numbers."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from agent.compute.facts import CountStep, MachineState, StateInterval
from agent.compute.oee import (
    CountTally,
    OeeConfig,
    Revisions,
    ShiftSummary,
    rollup,
    shift_summary,
    tally,
)
from agent.compute.shifts import WEEKDAYS, Calendar, ShiftInstance

SHANGHAI = ZoneInfo("Asia/Shanghai")
SECOND = 1000
MINUTE = 60 * SECOND
DAY = date(2026, 3, 2)  # a Monday
CALENDAR = Calendar.from_config(
    {
        "timezone": "Asia/Shanghai",
        "workdays": ["mon", "tue", "wed", "thu", "fri", "sat"],
        "shifts": [
            {
                "name": "day",
                "start": "08:00",
                "end": "16:00",
                "breaks": [["10:00", "10:15"], ["12:00", "12:30"], ["14:30", "14:45"]],
            },
            {"name": "night", "start": "22:00", "end": "06:00", "breaks": [["02:00", "02:30"]]},
        ],
    }
)


def shift(name: str = "day", day: date = DAY, calendar: Calendar = CALENDAR) -> ShiftInstance:
    found = calendar.instance(day, name)
    assert found is not None
    return found


def t(hhmm: str, day: date = DAY) -> int:
    """Epoch ms of a local ``HH:MM[:SS]`` in Shanghai."""
    parts = [int(p) for p in hhmm.split(":")]
    hh, mm, ss = ([*parts, 0])[:3]
    return (
        int(datetime(day.year, day.month, day.day, hh, mm, ss, tzinfo=SHANGHAI).timestamp()) * 1000
    )


def timeline(*spans: tuple[str, str | None, MachineState]) -> list[StateInterval]:
    return [StateInterval(t(a), None if b is None else t(b), s) for a, b, s in spans]


# T5: 08:00-16:00, down 09:20-09:40, 11:50-12:10 (only 10 min outside lunch), 15:00-15:17.
T5_STATES = timeline(
    ("07:30", "09:20", "running"),
    ("09:20", "09:40", "stopped"),
    ("09:40", "11:50", "running"),
    ("11:50", "12:10", "fault"),
    ("12:10", "15:00", "running"),
    ("15:00", "15:17", "idle"),
    ("15:17", "16:30", "running"),
)


def counter(first_ms: int, every_ms: int, deltas: Sequence[int | None]) -> list[CountStep]:
    """One step per read from ``first_ms`` on, the read before it ``every_ms`` earlier."""
    out: list[CountStep] = []
    raw = 0
    for i, delta in enumerate(deltas):
        ts = first_ms + i * every_ms
        raw += delta or 0
        out.append(
            CountStep(ts, ts - every_ms, delta, "normal" if delta is not None else "gap", raw)
        )
    return out


def spread(total: int, reads: int) -> list[int]:
    """``total`` pieces over ``reads`` reads, as evenly as integers go."""
    return [total // reads + (1 if i < total % reads else 0) for i in range(reads)]


# One read a minute, 08:00 .. 15:59 belong to the day shift (480 reads); the 16:00 read
# belongs to whatever holds 16:00 (no shift here), whatever pieces it carries.
POLL = MINUTE
T5_TOTAL = counter(t("08:00"), POLL, [*spread(19_271, 480), 55])
T5_REJECT = counter(t("08:00"), POLL, [*spread(423, 480), 3])
T5_CONFIG = OeeConfig(ideal_cycle_s=1.0, poll_interval_ms=POLL)


def ratios(s: ShiftSummary) -> dict[str, Any]:
    d = s.to_dict()
    return {k: d[k] for k in ("A", "P", "Q", "OEE")}


def test_t5_canonical_shift() -> None:
    s = shift_summary("press_01", shift(), T5_STATES, T5_CONFIG, total=T5_TOTAL, reject=T5_REJECT)
    d = s.to_dict()
    assert d["planned_s"] == 420 * 60
    assert d["down_s"] == 47 * 60  # 20 + 10 (outside lunch) + 17
    assert d["run_s"] == 373 * 60
    assert (d["micro_stop_s"], d["unknown_s"], d["coverage"]) == (0, 0, 1.0)
    # Running through the three breaks (15 + 20 of the lunch after 12:10 + 15 min).
    assert d["run_outside_planned_s"] == 50 * 60
    assert (d["total"], d["good"], d["reject"]) == (19_271, 18_848, 423)
    # A 373/420, P 19271/22380, Q 18848/19271, OEE 18848/25200.
    assert ratios(s) == {"A": 0.888095, "P": 0.861081, "Q": 0.978050, "OEE": 0.747937}
    assert not d["performance_over_100"]
    assert not d["counts_incomplete"]
    assert (d["final"], d["shift"], d["revision"]) == (True, "2026-03-02/day", 0)
    assert s.id == "press_01/2026-03-02/day/0"
    json.dumps(d)


def test_t5_the_three_counts_agree_whichever_two_are_given() -> None:
    good = [
        CountStep(a.ts_ms, a.prev_ts_ms, (a.delta or 0) - (b.delta or 0), "normal", 0)
        for a, b in zip(T5_TOTAL, T5_REJECT, strict=True)
    ]
    by = [
        shift_summary("m", shift(), T5_STATES, T5_CONFIG, total=T5_TOTAL, reject=T5_REJECT),
        shift_summary("m", shift(), T5_STATES, T5_CONFIG, total=T5_TOTAL, good=good),
        shift_summary("m", shift(), T5_STATES, T5_CONFIG, good=good, reject=T5_REJECT),
    ]
    assert by[0].figures.good == 18_848
    assert all(d == by[0] for d in by)
    with pytest.raises(ValueError, match="two of total, good and reject"):
        shift_summary("m", shift(), T5_STATES, T5_CONFIG, total=T5_TOTAL)


def test_a_read_exactly_at_the_shift_end_belongs_to_what_follows() -> None:
    steps = [
        CountStep(t("15:59:59"), t("15:59:00"), 7, "normal", 7),
        CountStep(t("16:00"), t("15:59:59"), 100, "normal", 107),
    ]
    got = tally(steps, shift(), POLL)
    assert (got.pieces, got.closed, got.incomplete) == (7, True, True)  # no read near 08:00
    assert got.reasons == ("start",)


def test_t6_micro_stops_are_inclusive_and_classified_by_their_whole_length() -> None:
    states = timeline(
        ("08:00", "08:10", "running"),
        ("08:10:00", "08:10:45", "idle"),  # 45 s
        ("08:10:45", "08:20", "running"),
        ("08:20:00", "08:21:00", "stopped"),  # 60 s + 30 s fault right after: one stop of 90 s
        ("08:21:00", "08:21:30", "fault"),
        ("08:21:30", "08:30", "running"),
        ("08:30:00", "08:32:00", "idle"),  # 120 s: still a micro-stop
        ("08:32:00", "08:40", "running"),
        ("08:40:00", "08:45:00", "stopped"),  # 300 s: downtime
        ("08:45", "09:00", "running"),
    )
    s = shift_summary(
        "m", shift(), states, T5_CONFIG, total=[], reject=[], as_of_ms=t("09:00")
    ).to_dict()
    assert s["micro_stop_s"] == 255
    assert s["down_s"] == 300
    assert s["planned_s"] == 60 * 60
    assert s["run_s"] == 3600 - 555


def test_a_stop_is_one_run_of_stop_states_and_offline_ends_it() -> None:
    states = timeline(
        ("08:00", "08:10", "running"),
        ("08:10:00", "08:11:40", "idle"),  # 100 s idle then 100 s fault: one stop of 200 s
        ("08:11:40", "08:13:20", "fault"),
        ("08:13:20", "08:20", "running"),
        ("08:20:00", "08:21:40", "idle"),  # 100 s, offline 60 s, 100 s: two micro-stops
        ("08:21:40", "08:22:40", "offline"),
        ("08:22:40", "08:24:20", "stopped"),
        ("08:24:20", "09:00", "running"),
    )
    d = shift_summary(
        "m", shift(), states, T5_CONFIG, total=[], reject=[], as_of_ms=t("09:00")
    ).to_dict()
    assert (d["down_s"], d["micro_stop_s"], d["unknown_s"]) == (200, 200, 60)


def test_a_stop_through_a_break_is_judged_by_its_whole_length() -> None:
    # 11:59:00-12:30:30 is 31.5 min: downtime, of which only the 90 s outside lunch count.
    states = timeline(
        ("08:00", "11:59", "running"),
        ("11:59:00", "12:30:30", "stopped"),
        ("12:30:30", "16:00", "running"),
    )
    d = shift_summary("m", shift(), states, T5_CONFIG, total=[], reject=[]).to_dict()
    assert (d["down_s"], d["micro_stop_s"]) == (90, 0)


# T5 with 10 one-minute stops inside the 373 min of run: run 363 min + micro 10 min.
def _t5_with_micro_stops() -> list[StateInterval]:
    out: list[StateInterval] = []
    stops = [t(f"08:{m}:00") for m in (10, 20, 30, 40, 50)] + [
        t(f"13:{m}:00") for m in (10, 20, 30, 40, 50)
    ]
    for interval in T5_STATES:
        inside = [s for s in stops if interval.state == "running" and interval.start_ms < s]
        inside = [s for s in inside if interval.end_ms is not None and s < interval.end_ms]
        cursor = interval.start_ms
        for s in inside:
            out.append(replace(interval, start_ms=cursor, end_ms=s))
            out.append(StateInterval(s, s + MINUTE, "idle"))
            cursor = s + MINUTE
        out.append(replace(interval, start_ms=cursor))
    return out


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ("common", {"A": 0.888095, "P": 0.861081, "Q": 0.978050, "OEE": 0.747937}),
        # ISO 22400: APT 363 min, A 363/420, E 19271/21780; OEE unchanged.
        ("iso22400", {"A": 0.864286, "P": 0.884803, "Q": 0.978050, "OEE": 0.747937}),
    ],
)
def test_t6_common_and_iso22400_split_the_same_oee(method: str, expected: dict[str, float]) -> None:
    config = OeeConfig(ideal_cycle_s=1.0, poll_interval_ms=POLL, method=method)  # type: ignore[arg-type]
    s = shift_summary(
        "m", shift(), _t5_with_micro_stops(), config, total=T5_TOTAL, reject=T5_REJECT
    )
    d = s.to_dict()
    assert (d["run_s"], d["micro_stop_s"], d["down_s"]) == (363 * 60, 600, 47 * 60)
    assert ratios(s) == expected


# T11: T5 with 20 min offline inside planned time: run 353 min, down 47, unknown 20.
T11_STATES = [
    *T5_STATES[:4],
    StateInterval(t("12:10"), t("13:00"), "running"),
    StateInterval(t("13:00"), t("13:20"), "offline"),
    StateInterval(t("13:20"), t("15:00"), "running"),
    *T5_STATES[5:],
]


def test_t11_offline_time_is_excluded_and_shown_as_coverage() -> None:
    s = shift_summary("m", shift(), T11_STATES, T5_CONFIG, total=T5_TOTAL, reject=T5_REJECT)
    d = s.to_dict()
    assert (d["run_s"], d["down_s"], d["unknown_s"]) == (353 * 60, 47 * 60, 20 * 60)
    assert d["A"] == 0.882500  # 353/400
    assert d["coverage"] == 0.952381  # 400/420
    assert d["OEE"] == round(18_848 / 24_000, 6)  # the fully productive time over known time


def test_t11_offline_time_as_downtime() -> None:
    config = replace(T5_CONFIG, unknown_time="as_down")
    d = shift_summary("m", shift(), T11_STATES, config, total=T5_TOTAL, reject=T5_REJECT).to_dict()
    assert d["A"] == 0.840476  # 353/420
    assert d["coverage"] == 0.952381
    assert d["OEE"] == 0.747937


def test_planned_time_with_no_state_at_all_is_unknown() -> None:
    states = [s for s in T11_STATES if s.state != "offline"]
    d = shift_summary("m", shift(), states, T5_CONFIG, total=T5_TOTAL, reject=T5_REJECT).to_dict()
    assert (d["unknown_s"], d["A"], d["coverage"]) == (20 * 60, 0.882500, 0.952381)


def test_planned_downtime_mode_leaves_planned_time() -> None:
    # 13:00-14:00 maintenance instead of production: planned 420 - 60 = 360 min.
    states = [
        *T5_STATES[:4],
        StateInterval(t("12:10"), t("13:00"), "running"),
        StateInterval(t("13:00"), t("14:00"), "stopped", mode="maintenance"),
        StateInterval(t("14:00"), t("15:00"), "running"),
        *T5_STATES[5:],
    ]
    config = replace(T5_CONFIG, planned_downtime_modes=frozenset({"maintenance"}))
    d = shift_summary("m", shift(), states, config, total=T5_TOTAL, reject=T5_REJECT).to_dict()
    assert (d["planned_s"], d["planned_down_s"], d["run_s"]) == (360 * 60, 3600, 313 * 60)
    assert d["A"] == round(313 / 360, 6)
    # Without the mode in the list, the same hour is a stop: 47 + 60 min down.
    d = shift_summary("m", shift(), states, T5_CONFIG, total=T5_TOTAL, reject=T5_REJECT).to_dict()
    assert (d["planned_s"], d["down_s"]) == (420 * 60, 107 * 60)


def test_running_through_breaks_can_be_counted_as_planned() -> None:
    config = replace(T5_CONFIG, breaks_count_if_running=True)
    d = shift_summary("m", shift(), T5_STATES, config, total=T5_TOTAL, reject=T5_REJECT).to_dict()
    assert (d["planned_s"], d["run_s"], d["run_outside_planned_s"]) == (470 * 60, 423 * 60, 3000)
    assert d["A"] == round(423 / 470, 6)


def test_running_figure_counts_only_the_elapsed_planned_time() -> None:
    # At 12:00, the stop that began at 11:50 is still on: 10 min of it so far, downtime.
    states = [*T5_STATES[:3], StateInterval(t("11:50"), None, "fault")]
    s = shift_summary(
        "m", shift(), states, T5_CONFIG, total=T5_TOTAL, reject=T5_REJECT, as_of_ms=t("12:00")
    )
    d = s.to_dict()
    assert not d["final"]
    assert d["planned_s"] == 225 * 60  # 08:00-12:00 less the 10:00 break
    assert (d["run_s"], d["down_s"]) == (195 * 60, 30 * 60)
    assert d["A"] == round(195 / 225, 6)
    # Reads before 12:00 only: 240 reads (08:00 .. 11:59).
    assert d["total"] == sum(spread(19_271, 480)[:240])
    assert not d["counts_incomplete"]


def test_an_open_stop_shorter_than_the_threshold_is_a_micro_stop_so_far() -> None:
    states = [*T5_STATES[:3], StateInterval(t("11:50"), None, "idle")]
    d = shift_summary(
        "m", shift(), states, T5_CONFIG, total=[], reject=[], as_of_ms=t("11:51")
    ).to_dict()
    assert (d["micro_stop_s"], d["down_s"]) == (60, 20 * 60)


def test_a_counter_gap_flags_counts_incomplete() -> None:
    deltas: list[int | None] = [*spread(19_271, 480), 0]
    deltas[200] = None  # an outage longer than a wrap: no number
    total = counter(t("08:00"), POLL, deltas)
    s = shift_summary("m", shift(), T5_STATES, T5_CONFIG, total=total, reject=T5_REJECT)
    d = s.to_dict()
    assert d["counts_incomplete"]
    assert d["count_reasons"] == ["total:gap"]
    assert d["total"] == 19_271 - spread(19_271, 480)[200]


ADJACENT = Calendar.from_config(
    {
        "timezone": "Asia/Shanghai",
        "workdays": list(WEEKDAYS),
        "shifts": [
            {"name": "early", "start": "06:00", "end": "14:00"},
            {"name": "late", "start": "14:00", "end": "22:00"},
        ],
    }
)


def test_reads_far_apart_around_a_boundary_flag_both_shifts() -> None:
    # Reads every minute, then nothing between 13:50 and 14:10: the 14:10 read carries
    # 1,200 pieces, some made before 14:00. They go to the late shift (the read that saw
    # them), never split; both shifts say their counts are incomplete.
    steps = [
        *counter(t("06:00"), POLL, [60] * 471),  # 06:00 .. 13:50
        CountStep(t("14:10"), t("13:50"), 1200, "normal", 0),
        *counter(t("14:11"), POLL, [60] * 5),
    ]
    early = tally(steps, shift("early", calendar=ADJACENT), POLL)
    late = tally(steps, shift("late", calendar=ADJACENT), POLL)
    assert (early.pieces, early.reasons) == (471 * 60, ("end",))
    assert (late.pieces, late.reasons) == (1200 + 5 * 60, ("start",))
    # Reads a poll apart across the boundary: nothing flagged.
    close = [*counter(t("06:00"), POLL, [60] * 480), *counter(t("14:00"), POLL, [60] * 3)]
    assert tally(close, shift("early", calendar=ADJACENT), POLL).reasons == ()
    assert tally(close, shift("late", calendar=ADJACENT), POLL).reasons == ()


def test_a_counter_read_with_no_previous_value_inside_the_shift_flags_a_restart() -> None:
    steps = [
        *counter(t("08:00"), POLL, [10] * 100),
        CountStep(t("09:45"), None, 0, "first", 5000),
        *counter(t("09:46"), POLL, [10] * 10),
    ]
    got = tally(steps, shift(), POLL)
    assert (got.pieces, got.reasons) == (1100, ("restart",))


def test_the_tally_state_survives_a_restart_without_double_counting() -> None:
    whole = tally(T5_TOTAL, shift(), POLL)
    first = tally(T5_TOTAL[:123], shift(), POLL)
    saved = json.loads(json.dumps(first.state()))
    again = CountTally.from_state(saved)
    for step in T5_TOTAL[123:]:
        again.add(step)
    assert again.state() == whole.state()
    assert again.pieces == 19_271
    s = shift_summary("m", shift(), T5_STATES, T5_CONFIG, total=again, reject=T5_REJECT)
    assert ratios(s)["OEE"] == 0.747937


def test_p_over_one_is_reported_and_never_clipped() -> None:
    # An ideal cycle of 1.5 s where the machine does 1 s: P 19271 x 1.5 / 22380.
    config = replace(T5_CONFIG, ideal_cycle_s=1.5)
    d = shift_summary("m", shift(), T5_STATES, config, total=T5_TOTAL, reject=T5_REJECT).to_dict()
    assert d["performance_over_100"]
    assert d["P"] == 1.291622
    assert d["A"] == 0.888095
    assert d["OEE"] == 1.121905  # 18848 x 1.5 / 25200: A x P x Q, unclipped


def test_pieces_without_operating_time_are_flagged_too() -> None:
    states = timeline(("08:00", "16:00", "stopped"))
    d = shift_summary("m", shift(), states, T5_CONFIG, total=T5_TOTAL, reject=T5_REJECT).to_dict()
    assert (d["A"], d["P"], d["performance_over_100"]) == (0.0, None, True)


def test_nothing_made_in_no_run_time_is_an_oee_of_zero() -> None:
    states = timeline(("08:00", "16:00", "stopped"))
    d = shift_summary("m", shift(), states, T5_CONFIG, total=[], reject=[]).to_dict()
    assert (d["A"], d["P"], d["Q"], d["OEE"], d["performance_over_100"]) == (
        0.0,
        None,
        None,
        0.0,
        False,
    )


def test_rollup_of_two_machines_sums_times_and_ideal_times() -> None:
    a = shift_summary("press", shift(), T5_STATES, T5_CONFIG, total=T5_TOTAL, reject=T5_REJECT)
    # Machine b: ideal cycle 2 s, offline 60 min, down 20 min, run 340 min;
    # 9,500 pieces, 100 rejects. A 340/360, P 19000/20400, Q 9400/9500, OEE 18800/21600.
    b_states = timeline(
        ("08:00", "09:00", "offline"),
        ("09:00", "09:20", "stopped"),
        ("09:20", "16:00", "running"),
    )
    b = shift_summary(
        "packer",
        shift(),
        b_states,
        replace(T5_CONFIG, ideal_cycle_s=2.0),
        total=counter(t("08:00"), POLL, spread(9_500, 480)),
        reject=counter(t("08:00"), POLL, spread(100, 480)),
    )
    assert ratios(b) == {"A": 0.944444, "P": 0.931373, "Q": 0.989474, "OEE": 0.870370}
    both = rollup([a, b])
    d = both.to_dict()
    assert (d["planned_s"], d["unknown_s"], d["total"], d["good"]) == (
        840 * 60,
        3600,
        28_771,
        28_248,
    )
    # A (373 + 340) / (420 + 360); P (19271 + 2 x 9500) / ((373 + 340) x 60);
    # Q (18848 + 2 x 9400) / (19271 + 2 x 9500); OEE 37648 / 46800.
    assert {k: d[k] for k in ("A", "P", "Q", "OEE")} == {
        "A": 0.914103,
        "P": 0.894600,
        "Q": 0.983721,
        "OEE": 0.804444,
    }
    assert d["coverage"] == 0.928571  # 780/840
    # Averaging the ratios would claim OEE 0.809153 and P 0.896227.
    assert round(((a.figures.oee or 0) + (b.figures.oee or 0)) / 2, 6) == 0.809153
    assert round(((a.figures.performance or 0) + (b.figures.performance or 0)) / 2, 6) == 0.896227
    assert both.availability is not None
    assert both.performance is not None
    assert both.quality is not None
    assert both.oee == pytest.approx(both.availability * both.performance * both.quality)


def test_rollup_refuses_figures_of_different_methods() -> None:
    a = shift_summary("a", shift(), T5_STATES, T5_CONFIG, total=T5_TOTAL, reject=T5_REJECT)
    iso = replace(T5_CONFIG, method="iso22400")
    b = shift_summary("b", shift(), T5_STATES, iso, total=T5_TOTAL, reject=T5_REJECT)
    with pytest.raises(ValueError, match="cannot add common/exclude figures to iso22400"):
        rollup([a, b])
    with pytest.raises(ValueError, match="nothing to roll up"):
        rollup([])


def test_late_data_revises_a_closed_shift() -> None:
    revisions = Revisions()
    first = shift_summary("m", shift(), T5_STATES, T5_CONFIG, total=T5_TOTAL, reject=T5_REJECT)
    sent = revisions.stamp(first)
    assert sent is not None
    assert (sent.revision, sent.id) == (0, "m/2026-03-02/day/0")
    # The same figures computed again later: nothing new to send.
    later = replace(first, as_of_ms=first.as_of_ms + 3_600_000)
    assert revisions.stamp(later) is None
    # After a restart, late reads of the reject counter arrive from the buffer.
    revisions = Revisions.from_state(json.loads(json.dumps(revisions.state())))
    late_reject = [*T5_REJECT[:300], replace(T5_REJECT[300], delta=(T5_REJECT[300].delta or 0) + 2)]
    revised = shift_summary(
        "m", shift(), T5_STATES, T5_CONFIG, total=T5_TOTAL, reject=late_reject + T5_REJECT[301:]
    )
    again = revisions.stamp(revised)
    assert again is not None
    assert (again.revision, again.id, again.figures.reject) == (1, "m/2026-03-02/day/1", 425)
    # A running figure carries no revision and is not remembered.
    running = replace(first, as_of_ms=t("12:00"))
    assert revisions.stamp(running) is running
    revisions.forget_before(t("16:00") + 1)
    assert revisions.state() == {}


def test_intervals_must_be_ordered_and_only_the_last_open() -> None:
    overlapping = timeline(("08:00", "09:00", "running"), ("08:30", "10:00", "stopped"))
    with pytest.raises(ValueError, match="overlap"):
        shift_summary("m", shift(), overlapping, T5_CONFIG, total=[], reject=[])
    open_first = timeline(("08:00", None, "running"), ("09:00", "10:00", "stopped"))
    with pytest.raises(ValueError, match="only the last interval may be open"):
        shift_summary("m", shift(), open_first, T5_CONFIG, total=[], reject=[])


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"ideal_cycle_s": 0.0}, "ideal_cycle_s must be > 0"),
        ({"poll_interval_ms": 0}, "poll_interval_ms must be > 0"),
        ({"micro_stop_max_ms": -1}, "micro_stop_max_ms must be >= 0"),
        ({"method": "nakajima"}, "method must be common or iso22400"),
        ({"unknown_time": "guess"}, "unknown_time must be exclude or as_down"),
    ],
)
def test_config_refuses_nonsense(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        replace(T5_CONFIG, **changes)
