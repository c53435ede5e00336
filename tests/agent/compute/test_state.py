"""Machine state: rules, a PackML map, debounce and offline, with the numbers of T7 and T8."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterator

import pytest

from agent.compute.facts import StateInterval
from agent.compute.state import (
    PACKML,
    ModeSpec,
    Rule,
    Rules,
    StateConfigError,
    StateEntry,
    StateMachine,
    StateMap,
    StateSpec,
    Values,
    parse_condition,
)

S = 1_000
VFD_INPUTS = ("run", "freq", "fault")
VFD_RULES = [
    Rule("fault", "fault != 0"),
    Rule("running", "run == 1 and freq > 0.5"),
    Rule("idle", "true"),
]


def _vfd(**kw: object) -> StateSpec:
    return StateSpec(Rules(VFD_INPUTS, VFD_RULES), offline_after_ms=10 * S, debounce_ms=3 * S, **kw)  # type: ignore[arg-type]


def _t7_read(t: int) -> Values:
    """T7's timeline at second ``t`` (0-199; 200-229 the drive does not answer)."""
    if t < 120:
        return {"run": 1, "freq": 0.0 if 60 <= t < 62 else 50.0, "fault": 0}
    if t < 180:
        return {"run": 0, "freq": 0.0, "fault": 0}
    return {"run": 0, "freq": 0.0, "fault": 2}


def _t7_events() -> Iterator[tuple[int, Values | None]]:
    for t in range(235):
        if 200 <= t < 230:
            yield t, None  # a timed-out read
        else:
            yield t, _t7_read(t) if t < 200 else {"run": 0, "freq": 0.0, "fault": 0}


def _totals(intervals: list[StateInterval]) -> dict[str, int]:
    totals: dict[str, int] = defaultdict(int)
    for iv in intervals:
        assert iv.end_ms is not None
        totals[iv.state] += (iv.end_ms - iv.start_ms) // S
    return dict(totals)


def _run_t7(machine: StateMachine, restart_at: frozenset[int] = frozenset()) -> list[StateInterval]:
    closed: list[StateInterval] = []
    for t, values in _t7_events():
        if t in restart_at:
            machine = StateMachine.from_state(machine.spec, json.loads(json.dumps(machine.state())))
        if values is None:
            closed += machine.feed(t * S, {}, dict.fromkeys(VFD_INPUTS, "timeout"))
        else:
            closed += machine.feed(t * S, values)
    return closed


T7_EXPECTED = [
    StateInterval(0, 120 * S, "running"),
    StateInterval(120 * S, 180 * S, "idle"),
    StateInterval(180 * S, 200 * S, "fault"),
    StateInterval(200 * S, 230 * S, "offline", reason="fault: timeout"),
]


def test_t7_vfd_rules_give_four_back_dated_intervals() -> None:
    closed = _run_t7(StateMachine(_vfd()))
    assert closed == T7_EXPECTED
    assert _totals(closed) == {"running": 120, "idle": 60, "fault": 20, "offline": 30}


def test_t7_when_the_drive_falls_silent_a_tick_notices_it() -> None:
    machine = StateMachine(_vfd(poll_ms=S))
    closed: list[StateInterval] = []
    for t, values in _t7_events():
        closed += machine.feed(t * S, values) if values is not None else machine.tick(t * S)
    assert [(iv.start_ms, iv.end_ms, iv.state) for iv in closed] == [
        (iv.start_ms, iv.end_ms, iv.state) for iv in T7_EXPECTED
    ]
    assert closed[-1].reason == "no read"


def test_t7_offline_is_decided_after_offline_after_and_back_dated() -> None:
    machine = StateMachine(_vfd())
    for t in range(200):
        machine.feed(t * S, _t7_read(t))
    failed = dict.fromkeys(VFD_INPUTS, "timeout")
    for t in range(200, 209):
        assert machine.feed(t * S, {}, failed) == []
        assert machine.current == StateInterval(180 * S, None, "fault")
    assert machine.feed(209 * S, {}, failed) == [StateInterval(180 * S, 200 * S, "fault")]
    assert machine.current == StateInterval(200 * S, None, "offline", reason="fault: timeout")


def test_t7_a_restart_anywhere_gives_the_same_intervals() -> None:
    # Mid-blip, mid-candidate, during the failed reads, just after offline, and after it.
    for points in ([61], [121], [122, 183], [205], [209, 210], [230], [61, 121, 205, 231]):
        assert _run_t7(StateMachine(_vfd()), frozenset(points)) == T7_EXPECTED, points


def test_a_silence_noticed_only_by_the_next_read_is_offline_too() -> None:
    machine = StateMachine(_vfd(poll_ms=S))
    for t in range(10):
        machine.feed(t * S, _t7_read(t))
    closed = machine.feed(60 * S, _t7_read(60 - 50))
    assert closed == [
        StateInterval(0, 10 * S, "running"),
        StateInterval(10 * S, 60 * S, "offline", reason="no read"),
    ]
    assert machine.current == StateInterval(60 * S, None, "running")


def test_t8_packml_map() -> None:
    """Execute 600, Suspended 90, Execute 300, Held 120, Stopping 10, Stopped 200,
    Aborting 5, Aborted 60, Clearing 15 (then Resetting, to close the last)."""
    timeline = [(6, 600), (5, 90), (6, 300), (11, 120), (7, 10), (2, 200), (8, 5), (9, 60), (1, 15)]
    machine = StateMachine(
        StateSpec(StateMap("state", PACKML), offline_after_ms=10 * S, debounce_ms=3 * S)
    )
    closed: list[StateInterval] = []
    t = 0
    for number, seconds in [*timeline, (15, 5)]:
        for _ in range(seconds):
            closed += machine.feed(t * S, {"state": number})
            t += 1
    assert [(iv.state, iv.reason, iv.start_ms // S, iv.end_ms) for iv in closed] == [
        ("running", None, 0, 600 * S),
        ("idle", "external", 600, 690 * S),
        ("running", None, 690, 990 * S),
        ("idle", "internal", 990, 1_110 * S),
        ("stopped", None, 1_110, 1_320 * S),
        ("fault", None, 1_320, 1_400 * S),
    ]
    totals = _totals(closed)
    assert totals == {"running": 900, "idle": 210, "stopped": 210, "fault": 80}
    assert sum(totals.values()) == 1_400


def test_the_packml_map_names_every_state_but_undefined() -> None:
    assert sorted(PACKML) == list(range(1, 18))
    running = [n for n, e in PACKML.items() if (e if isinstance(e, str) else e[0]) == "running"]
    assert running == [6]


def test_an_unmapped_value_is_not_a_state_and_ends_offline() -> None:
    machine = StateMachine(StateSpec(StateMap("state", PACKML), offline_after_ms=5 * S))
    machine.feed(0, {"state": 6})
    assert machine.feed(1 * S, {"state": 0}) == []
    assert machine.current == StateInterval(0, None, "running")
    closed = machine.feed(5 * S, {"state": 0})
    assert closed == [StateInterval(0, 1 * S, "running")]
    assert machine.current == StateInterval(1 * S, None, "offline", reason="state=0 not mapped")


def test_a_float_state_number_maps_like_the_integer() -> None:
    table: dict[int, StateEntry] = {1: "running", 2: "idle"}
    machine = StateMachine(StateSpec(StateMap("s", table), offline_after_ms=S))
    machine.feed(0, {"s": 1.0})
    assert machine.current == StateInterval(0, None, "running")


def test_debounce_of_a_flapping_signal_keeps_the_state() -> None:
    machine = StateMachine(_vfd())
    closed: list[StateInterval] = []
    # run flaps 1/0 every 2 s for a minute: no new state holds 3 s.
    for t in range(60):
        run = 1 if (t // 2) % 2 == 0 else 0
        closed += machine.feed(t * S, {"run": run, "freq": 50.0, "fault": 0})
    assert closed == []
    assert machine.current == StateInterval(0, None, "running")
    # The last flap to 0 (at 58 s) lasts: idle after 3 s, back-dated to 58 s.
    for t in range(60, 62):
        closed += machine.feed(t * S, {"run": 0, "freq": 50.0, "fault": 0})
    assert closed == [StateInterval(0, 58 * S, "running")]
    assert machine.current == StateInterval(58 * S, None, "idle")


def test_a_candidate_replaced_by_another_starts_its_hold_again() -> None:
    machine = StateMachine(_vfd())
    machine.feed(0, {"run": 1, "freq": 50.0, "fault": 0})
    machine.feed(1 * S, {"run": 0, "freq": 0.0, "fault": 0})  # idle candidate
    machine.feed(2 * S, {"run": 0, "freq": 0.0, "fault": 3})  # fault candidate from 2 s
    assert machine.feed(4 * S, {"run": 0, "freq": 0.0, "fault": 3}) == []
    assert machine.feed(5 * S, {"run": 0, "freq": 0.0, "fault": 3}) == [
        StateInterval(0, 2 * S, "running")
    ]


def test_a_failed_read_neither_confirms_nor_breaks_a_candidate() -> None:
    machine = StateMachine(_vfd())
    machine.feed(0, {"run": 1, "freq": 50.0, "fault": 0})
    machine.feed(1 * S, {"run": 0, "freq": 0.0, "fault": 0})
    assert machine.feed(2 * S, {}, ["run", "freq", "fault"]) == []
    assert machine.feed(4 * S, {}, ["run", "freq", "fault"]) == []
    assert machine.feed(5 * S, {"run": 0, "freq": 0.0, "fault": 0}) == [
        StateInterval(0, 1 * S, "running")
    ]


def test_an_input_in_error_never_yields_a_confident_state() -> None:
    rules = Rules(VFD_INPUTS, VFD_RULES)
    # The fault word failed: running would be a guess, the rule above it is unknown.
    verdict = rules.judge({"run": 1, "freq": 50.0})
    assert verdict.state is None
    assert verdict.unknown == "rule 1 not known: fault"
    # A known fault decides whatever the others show.
    assert rules.judge({"fault": 7}).state == "fault"
    # run == 0 makes the running rule false whatever freq is: idle is certain.
    assert rules.judge({"run": 0, "fault": 0}).state == "idle"
    assert rules.judge({"run": 1, "fault": 0}).state is None
    # NaN and text are not numbers to compare.
    assert rules.judge({"run": 1, "freq": float("nan"), "fault": 0}).state is None
    assert rules.judge({"run": 1, "freq": 50.0, "fault": "E.OC1"}).state is None


def test_no_rule_holding_is_not_a_state() -> None:
    rules = Rules(["a"], [Rule("running", "a > 1")])
    assert rules.judge({"a": 0}).unknown == "no rule holds"


@pytest.mark.parametrize(
    ("text", "values", "expected"),
    [
        ("a", {"a": 2}, True),
        ("not a", {"a": 0}, True),
        ("a == true", {"a": True}, True),
        ("a != false and b < -1.5", {"a": 1, "b": -2}, True),
        ("a or b", {"a": 1}, True),  # b unknown does not matter once a holds
        ("a or b", {"a": 0}, None),
        ("a and b", {"a": 0}, False),
        ("not (a >= 3 or b <= 1e3)", {"a": 1, "b": 5}, False),
        ("(a > 1) and (b == .5)", {"a": 2, "b": 0.5}, True),
        ("not not a", {}, None),
        ("a >= 3 and b > 0 or c", {"a": 3, "b": 1, "c": 0}, True),
        ("a > 3 or b > 0 and c", {"a": 4, "b": 0, "c": 0}, True),  # and binds tighter
    ],
)
def test_the_condition_grammar(text: str, values: Values, expected: bool | None) -> None:
    assert parse_condition(text, ["a", "b", "c"]).holds(values) is expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a.real > 0", "no attribute access"),
        ("a.__class__", "no attribute access"),
        ("abs(a) > 1", "calls are not part"),
        ("a (b)", "calls are not part"),
        ("__import__('os')", "no strings"),
        ("eval(a)", "calls are not part"),
        ("b > 1", "unknown tag 'b'"),
        ("a = 1", "compare with '=='"),
        ("a == 'run'", "no strings"),
        ("a + 1 > 2", "'+' is not part"),
        ("1 < a < 3", "chained comparison"),
        ("(a > 1) == 1", "cannot be compared"),
        ("a >", "ends where"),
        ("(a > 1", "expected ')'"),
        ("", "empty"),
        ("a and", "ends where"),
        ("- a", "followed by a number"),
        ("a or " * 40 + "a", "longer than 200"),
    ],
)
def test_the_grammar_refuses(text: str, message: str) -> None:
    with pytest.raises(StateConfigError, match=re.escape(message)):
        parse_condition(text, ["a"])


def test_an_unknown_tag_in_a_rule_is_a_config_error_naming_the_rule() -> None:
    with pytest.raises(StateConfigError, match=r"rule 2 \(running\): .*unknown tag 'frq'"):
        Rules(VFD_INPUTS, [Rule("fault", "fault != 0"), Rule("running", "frq > 0.5")])


def test_states_rules_may_not_name_offline_or_invent_one() -> None:
    with pytest.raises(StateConfigError, match="offline is derived"):
        Rules(["a"], [Rule("offline", "a == 0")])
    with pytest.raises(StateConfigError, match="state 'busy'"):
        StateMap("s", {1: "busy"})  # type: ignore[arg-type]
    with pytest.raises(StateConfigError, match="at least one rule"):
        Rules(["a"], [])


def test_spec_refusals() -> None:
    rules = Rules(["a"], [Rule("idle", "true")])
    with pytest.raises(StateConfigError, match="offline_after"):
        StateSpec(rules, offline_after_ms=0)
    with pytest.raises(StateConfigError, match="longer than the poll"):
        StateSpec(rules, offline_after_ms=S, poll_ms=S)
    with pytest.raises(StateConfigError, match="also a state input"):
        StateSpec(rules, offline_after_ms=S, mode=ModeSpec("a", {1: "production"}))
    with pytest.raises(StateConfigError, match="not among the modes"):
        ModeSpec("m", {1: "production"}, {"maintenance"})


MODES = ModeSpec(
    "mode", {0: "none", 1: "maintenance", 2: "setup", 3: "production"}, {"maintenance"}
)


def test_a_mode_change_opens_an_interval_and_planned_downtime_is_marked() -> None:
    spec = StateSpec(
        Rules(["run"], [Rule("running", "run"), Rule("stopped", "true")]),
        offline_after_ms=60 * S,
        mode=MODES,
    )
    machine = StateMachine(spec)
    closed: list[StateInterval] = []
    for t, run, mode in [(0, 1, 3), (5, 0, 3), (10, 0, 1), (20, 1, 3), (21, 1, 3)]:
        closed += machine.feed(t * S, {"run": run, "mode": mode})
    assert closed == [
        StateInterval(0, 5 * S, "running", "production"),
        StateInterval(5 * S, 10 * S, "stopped", "production"),
        StateInterval(10 * S, 20 * S, "stopped", "maintenance", planned_downtime=True),
    ]
    assert machine.current == StateInterval(20 * S, None, "running", "production")


def test_a_mode_in_error_or_unnamed_makes_the_read_not_confident() -> None:
    spec = StateSpec(
        Rules(["run"], [Rule("running", "run"), Rule("stopped", "true")]),
        offline_after_ms=2 * S,
        mode=MODES,
    )
    machine = StateMachine(spec)
    machine.feed(0, {"run": 1, "mode": 3})
    machine.feed(1 * S, {"run": 1}, {"mode": "timeout"})
    assert machine.feed(2 * S, {"run": 1, "mode": 9}) == [
        StateInterval(0, 1 * S, "running", "production")
    ]
    assert machine.current == StateInterval(1 * S, None, "offline", reason="mode: timeout")


def test_a_device_that_never_answers_is_offline_from_its_first_read() -> None:
    machine = StateMachine(_vfd())
    for t in range(10):
        machine.feed(t * S, {}, ["run", "freq", "fault"])
    assert machine.state()["held"] is None
    machine.feed(10 * S, {}, ["run", "freq", "fault"])
    assert machine.current == StateInterval(0, None, "offline", reason="rule 1 not known: fault")
    assert machine.feed(12 * S, _t7_read(0)) == [
        StateInterval(0, 12 * S, "offline", reason="rule 1 not known: fault")
    ]


def test_replayed_and_stale_reads_change_nothing() -> None:
    machine = StateMachine(_vfd())
    machine.feed(5 * S, _t7_read(0))
    before = machine.state()
    assert machine.feed(5 * S, _t7_read(150)) == []
    assert machine.feed(4 * S, _t7_read(150)) == []
    assert machine.tick(3 * S) == []
    assert machine.state() == before


def test_a_malformed_saved_state_is_refused() -> None:
    spec = _vfd()
    good = StateMachine(spec).state()
    for bad in (
        {**good, "v": 0},
        {**good, "held": ["busy", None, None, 0]},
        {**good, "held": ["idle", None, None, "0"]},
        {**good, "candidate": ["idle", None]},
        {**good, "bad": [1, 2]},
        {**good, "last_good_ms": True},
    ):
        with pytest.raises(StateConfigError, match="machine state"):
            StateMachine.from_state(spec, bad)
