"""``plan_machines``: the site's machines as compute plans, compute refusals located."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agent.cli.app import app
from agent.compute.plan import Source
from agent.compute.state import Rules, StateMap
from agent.runtime.machines import box_timezone, plan_machines
from agent.site.source import ConfigFileError
from tests.support.machines import DRIVE_PROFILE, GOOD, line_of, load, write_site

SITE = "site.yaml"


def plan_problems(
    tmp_path: Path, analytics: str, profiles: dict[str, str] | None = None
) -> list[str]:
    site = load(tmp_path, analytics, profiles=profiles)
    with pytest.raises(ConfigFileError) as caught:
        plan_machines(site)
    return [str(p) for p in caught.value.problems]


def test_the_plan_has_the_inputs_roles_defaults_and_calendar(tmp_path: Path) -> None:
    (plan,) = plan_machines(load(tmp_path, GOOD))
    drive = "press-01-drive"
    assert plan.name == "press-01"
    assert dict(plan.inputs) == {
        "run": Source(drive, "run_bit"),
        "freq": Source(drive, "freq"),
        "fault": Source(drive, "fault_code"),
        "op_mode": Source(drive, "op_mode"),
    }
    state = plan.state
    assert state is not None
    assert isinstance(state.source, Rules)
    assert [r.state for r in state.source.rules] == ["fault", "running", "idle"]
    assert state.poll_ms == 500
    assert state.offline_after_ms == 5000  # 3 x 500ms is less than the 5s floor
    assert state.debounce_ms == 2000
    assert state.mode is not None
    assert state.mode.name({"op_mode": 1}) == "maintenance"
    assert state.mode.planned_downtime == {"maintenance", "setup"}
    assert state.source.judge({"run": True, "freq": 12.5, "fault": 0}).state == "running"
    assert state.source.judge({"run": True, "freq": 12.5, "fault": 2}).reason == "fault"
    total, reject = plan.counters
    assert (total.role, total.source, total.reset) == (
        "total",
        Source(drive, "count_total"),
        Source(drive, "count_reset"),
    )
    assert (total.spec.width, total.spec.max_rate, total.spec.reset_signal) == ("uint16", 20, True)
    assert (reject.role, reject.spec.reset_signal, reject.reset) == ("reject", False, None)
    (alarm,) = plan.alarms
    assert (alarm.name, alarm.severity, alarm.message, alarm.min_repeat_ms) == (
        "overcurrent",
        700,
        "overcurrent",
        60_000,
    )
    assert alarm.condition.holds({"fault": 2}) is True
    calendar = plan.calendar
    assert calendar is not None
    assert calendar.timezone == "Asia/Shanghai"
    # 2026-06-01 is a Monday: 09:00 in Shanghai is 01:00 UTC, the day shift
    shift = calendar.shift_at(int(datetime(2026, 6, 1, 1, 0, tzinfo=UTC).timestamp() * 1000))
    assert shift is not None
    assert shift.key == "2026-06-01/day"
    assert shift.planned_ms == (8 * 60 - 15) * 60_000
    holiday = datetime(2026, 10, 1, 1, 0, tzinfo=UTC)
    assert calendar.shift_at(int(holiday.timestamp() * 1000)) is None
    oee = plan.oee
    assert oee is not None
    assert oee.ideal_cycle_s == 1.2
    assert oee.poll_interval_ms == 10_000  # the slowest counter: count_reject is in "slow"
    assert (oee.micro_stop_max_ms, oee.method, oee.unknown_time) == (90_000, "iso22400", "exclude")
    assert oee.planned_downtime_modes == {"maintenance", "setup"}
    assert oee.breaks_count_if_running is False
    assert plan.energy is not None
    assert (plan.energy.source, plan.energy.register, plan.energy.poll_ms) == (
        Source("meter-01", "import_energy_kwh"),
        "float32",
        10_000,
    )
    assert plan.publish_every_ms == 300_000
    assert plan.devices == {drive, "meter-01"}


def test_no_oee_without_a_calendar_or_an_ideal_cycle(tmp_path: Path) -> None:
    no_cycle = DRIVE_PROFILE.replace("  ideal_cycle: 1.0s\n", "")
    site = load(
        tmp_path,
        GOOD.replace("      ideal_cycle: 1.2s\n", ""),
        profiles={"press-drive": no_cycle},
    )
    (plan,) = plan_machines(site)
    assert plan.calendar is not None
    assert plan.oee is None
    (plan,) = plan_machines(load(tmp_path, GOOD.replace("      calendar: two_shift\n", "")))
    assert plan.calendar is None
    assert plan.oee is None


def test_offline_after_is_three_polls_of_a_slow_state_tag(tmp_path: Path) -> None:
    site = load(
        tmp_path,
        """\
        analytics:
          publish_every: 0
          machines:
            press-01:
              state:
                map: {tag: press-01-drive/op_mode, table: packml}
        """,
    )
    (plan,) = plan_machines(site)
    assert plan.state is not None
    assert (plan.state.poll_ms, plan.state.offline_after_ms) == (10_000, 30_000)
    assert isinstance(plan.state.source, StateMap)
    assert plan.state.source.judge({"op_mode": 6}).state == "running"
    assert plan.state.source.judge({"op_mode": 5}).reason == "external"
    assert dict(plan.inputs) == {"op_mode": Source("press-01-drive", "op_mode")}
    assert plan.publish_every_ms == 0
    assert plan.counters == ()


def test_a_state_table_matches_numbers(tmp_path: Path) -> None:
    site = load(
        tmp_path,
        """\
        analytics:
          machines:
            press-01:
              state:
                map:
                  tag: press-01-drive/fault_code
                  table: {0: stopped, 1: running, 3: [fault, E.OC1]}
                offline_after: 2s
        """,
    )
    (plan,) = plan_machines(site)
    assert plan.state is not None
    verdict = plan.state.source.judge({"fault_code": 3})
    assert (verdict.state, verdict.reason) == ("fault", "E.OC1")
    assert plan.state.source.judge({"fault_code": 1.0}).state == "running"
    assert plan.state.source.judge({"fault_code": 7}).state is None
    assert plan.state.offline_after_ms == 2000


def test_every_bad_condition_is_located_at_its_when(tmp_path: Path) -> None:
    bad = DRIVE_PROFILE.replace('when: "fault != 0"', 'when: "fault = 0"').replace(
        'when: "run and freq > 0.5"', 'when: "run and speed > 0.5"'
    )
    found = plan_problems(tmp_path, GOOD, {"press-drive": bad})
    profile = tmp_path / "profiles" / "press-drive.yaml"
    assert found == [
        f"{line_of(profile, 'fault = 0')}: machine.state.rules[0].when: condition 'fault = 0': "
        "'=' is not part of the grammar: compare with '=='",
        f"{line_of(profile, 'speed > 0.5')}: machine.state.rules[1].when: condition 'run and "
        "speed > 0.5': unknown tag 'speed' (the inputs are: fault, freq, run)",
    ]


def test_an_alarm_condition_sees_the_state_inputs_and_its_own(tmp_path: Path) -> None:
    site = load(
        tmp_path,
        """\
        analytics:
          machines:
            press-01:
              devices: [press-01-drive]
              alarms:
                hot: {when: "temp > 60 and run", inputs: {temp: plc-01/temp_c}}
                cold: {when: "temperature < 5"}
        """,
    )
    with pytest.raises(ConfigFileError) as caught:
        plan_machines(site)
    (problem,) = [str(p) for p in caught.value.problems]
    assert problem == (
        f"{line_of(tmp_path / SITE, 'cold:')}: analytics.machines.press-01.alarms.cold.when: "
        "condition 'temperature < 5': unknown tag 'temperature' (the inputs are: fault, freq, run)"
    )


def test_a_good_alarm_with_its_own_input_is_an_input_of_the_machine(tmp_path: Path) -> None:
    site = load(
        tmp_path,
        """\
        analytics:
          machines:
            press-01:
              devices: [press-01-drive]
              alarms: {hot: {when: "temp > 60 and run", inputs: {temp: plc-01/temp_c}}}
        """,
    )
    (plan,) = plan_machines(site)
    assert plan.inputs["temp"] == Source("plc-01", "temp_c")
    hot = plan.alarms[1]
    assert hot.condition.names == {"temp", "run"}
    assert hot.condition.holds({"temp": 61.0, "run": True}) is True
    assert hot.severity == 500
    assert "plc-01" in plan.devices


def test_offline_after_not_longer_than_the_poll_is_located(tmp_path: Path) -> None:
    bad = DRIVE_PROFILE.replace(
        "    debounce: 2s\n", "    debounce: 2s\n    offline_after: 500ms\n"
    )
    found = plan_problems(tmp_path, GOOD, {"press-drive": bad})
    profile = tmp_path / "profiles" / "press-drive.yaml"
    assert found == [
        f"{line_of(profile, 'offline_after: 500ms')}: machine.state.offline_after: offline_after "
        "must be longer than the poll interval (0.5s for press-01-drive/run_bit, "
        "press-01-drive/freq, press-01-drive/fault_code)"
    ]


def test_a_mode_tag_that_is_a_state_input_is_located(tmp_path: Path) -> None:
    site = load(
        tmp_path,
        """\
        analytics:
          machines:
            press-01:
              state:
                inputs: {op_mode: press-01-drive/op_mode}
                rules: [{state: running, when: "op_mode == 3"}, {state: idle, when: "true"}]
              mode: {tag: press-01-drive/op_mode, names: {3: production}}
        """,
    )
    with pytest.raises(ConfigFileError) as caught:
        plan_machines(site)
    (problem,) = [str(p) for p in caught.value.problems]
    assert problem == (
        f"{line_of(tmp_path / SITE, 'mode: {tag')}: analytics.machines.press-01.mode: mode tag "
        "'op_mode' is also a state input"
    )


def test_a_calendar_that_cannot_work_is_located_at_its_shift(tmp_path: Path) -> None:
    overlap = GOOD.replace('{name: night, start: "22:00"', '{name: night, start: "15:00"')
    found = plan_problems(tmp_path, overlap)
    assert found == [
        f"{line_of(tmp_path / SITE, 'name: day')}: analytics.calendars.two_shift.shifts[0]: "
        "shifts day and night overlap"
    ]
    outside = GOOD.replace('[["10:00", "10:15"]]', '[["17:00", "17:15"]]')
    (problem,) = plan_problems(tmp_path, outside)
    assert problem.startswith(
        f"{line_of(tmp_path / SITE, 'name: day')}: analytics.calendars.two_shift.shifts[0]: "
        "shift day: break 17:00-17:15 is not inside"
    )


def test_without_a_zone_the_box_zone_is_used_or_the_error_says_set_it(tmp_path: Path) -> None:
    site = load(tmp_path, GOOD.replace("  timezone: Asia/Shanghai\n", ""))
    (plan,) = plan_machines(site, local_zone=lambda: "Europe/Berlin")
    assert plan.calendar is not None
    assert plan.calendar.timezone == "Europe/Berlin"
    with pytest.raises(ConfigFileError) as caught:
        plan_machines(site, local_zone=lambda: None)
    (problem,) = [str(p) for p in caught.value.problems]
    assert problem.startswith(f"{line_of(tmp_path / SITE, 'analytics:')}: analytics.timezone: ")
    assert "set analytics.timezone" in problem


def test_the_box_zone_comes_from_tz(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", ":Asia/Shanghai")
    assert box_timezone() == "Asia/Shanghai"
    monkeypatch.setenv("TZ", "Not/AZone")
    found = box_timezone()
    assert found != "Not/AZone"


def test_a_site_without_analytics_has_no_machines(tmp_path: Path) -> None:
    assert plan_machines(load(tmp_path, "")) == ()


def test_validate_prints_one_line_per_machine(tmp_path: Path) -> None:
    site = write_site(tmp_path, GOOD)
    result = CliRunner().invoke(app, ["validate", "-c", str(site)])
    assert result.exit_code == 0, result.output
    assert (
        "  machine press-01: state from press-01-drive (rules over fault, freq, run; mode "
        "op_mode; offline after 5s), counters total press-01-drive/count_total uint16, reject "
        "press-01-drive/count_reject uint16, calendar two_shift (day, night; Asia/Shanghai), "
        "OEE ideal cycle 1.2s, meter meter-01/import_energy_kwh (float32), alarms overcurrent\n"
    ) in result.output


def test_validate_exits_2_with_a_located_compute_error(tmp_path: Path) -> None:
    bad = DRIVE_PROFILE.replace('when: "fault != 0"', 'when: "fault !== 0"')
    site = write_site(tmp_path, GOOD, profiles={"press-drive": bad})
    result = CliRunner().invoke(app, ["validate", "-c", str(site)])
    assert result.exit_code == 2
    profile = tmp_path / "profiles" / "press-drive.yaml"
    assert f"{line_of(profile, 'fault !== 0')}: machine.state.rules[0].when: " in result.output
    assert "1 problem, nothing was started" in result.output
