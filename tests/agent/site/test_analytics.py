"""``analytics:`` and profile ``machine:`` blocks: a good site loads, every bad input is located."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.site.models import parse_rate
from tests.support.machines import (
    DEVICES,
    DRIVE_PROFILE,
    GOOD,
    line_of,
    load,
    problems,
    write_site,
)

SITE = "site.yaml"


def test_a_good_site_merges_the_profile_block_and_the_site_keys(tmp_path: Path) -> None:
    site = load(tmp_path, GOOD)
    assert site.analytics is not None
    assert site.analytics.timezone == "Asia/Shanghai"
    assert site.analytics.publish_every_s == 300
    assert list(site.analytics.calendars) == ["two_shift"]
    (machine,) = site.analytics.machines
    assert machine.id == "press-01"
    assert machine.devices == ("press-01-drive",)
    state = machine.state
    assert state is not None
    assert state.device == "press-01-drive"
    assert {k: str(v) for k, v in state.inputs.items()} == {
        "run": "press-01-drive/run_bit",
        "freq": "press-01-drive/freq",
        "fault": "press-01-drive/fault_code",
    }
    assert [r.rule.state for r in state.rules] == ["fault", "running", "idle"]
    assert state.poll_s == 0.5
    assert state.debounce_s == 2.0
    assert state.offline_after_s is None
    # the rule is located in the profile file, where it was written
    assert str(state.rules[1].at.where) == line_of(
        tmp_path / "profiles/press-drive.yaml", "run and"
    )
    assert machine.mode is not None
    assert machine.mode.ref.poll_s == 10.0
    assert [(c.role, str(c.ref), c.max_rate) for c in machine.counters] == [
        ("total", "press-01-drive/count_total", 20.0),
        ("reject", "press-01-drive/count_reject", 20.0),
    ]
    assert str(machine.counters[0].reset) == "press-01-drive/count_reset"
    assert [a.name for a in machine.alarms] == ["overcurrent"]
    assert machine.ideal_cycle_s == 1.2  # the site's over the profile's 1.0s
    assert (machine.micro_stop_max_s, machine.method) == (90.0, "iso22400")
    assert machine.energy is not None
    assert str(machine.energy.ref) == "meter-01/import_energy_kwh"
    assert machine.energy.ref.poll_s == 10.0
    assert machine.calendar == "two_shift"


def test_a_site_without_analytics_has_none(tmp_path: Path) -> None:
    assert load(tmp_path, "").analytics is None


def test_site_counters_replace_a_role_and_alarms_add(tmp_path: Path) -> None:
    site = load(
        tmp_path,
        """\
        analytics:
          machines:
            press-01:
              devices: [press-01-drive]
              counters: {total: {source: plc-01/parts, width: uint32, max_rate: 3000/min}}
              alarms:
                hot: {when: "temp > 60 and run", inputs: {temp: plc-01/temp_c}}
        """,
    )
    assert site.analytics is not None
    (machine,) = site.analytics.machines
    assert [(c.role, str(c.ref), c.max_rate) for c in machine.counters] == [
        ("total", "plc-01/parts", 50.0),
        ("reject", "press-01-drive/count_reject", 20.0),
    ]
    assert [a.name for a in machine.alarms] == ["overcurrent", "hot"]
    assert {k: str(v) for k, v in machine.alarms[1].inputs.items()} == {"temp": "plc-01/temp_c"}


def test_a_counter_profile_and_a_drive_profile_make_one_machine(tmp_path: Path) -> None:
    drive = DRIVE_PROFILE.split("  counters:")[0] + "  ideal_cycle: 1.0s\n"
    site = load(
        tmp_path,
        """\
        analytics:
          machines:
            press-01:
              devices: [press-01-drive, plc-01]
              counters: {reject: {source: plc-01/bad_parts, width: uint32}}
        """,
        profiles={"press-drive": drive},
    )
    assert site.analytics is not None
    (machine,) = site.analytics.machines
    assert machine.state is not None
    assert machine.state.device == "press-01-drive"
    assert [(c.role, str(c.ref)) for c in machine.counters] == [
        ("total", "plc-01/parts"),
        ("reject", "plc-01/bad_parts"),
    ]
    assert machine.ideal_cycle_s == 1.0  # the profile's, the site gives none


def test_the_machine_id_is_checked(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """\
        analytics:
          machines:
            plc-01: {devices: [press-01-drive]}
            bad/id: {devices: [press-01-drive]}
        """,
    )
    site = tmp_path / SITE
    assert (
        f"{line_of(site, 'plc-01: {')}: analytics.machines.plc-01: "
        "machine id 'plc-01' is also a device id" in found[0]
    )
    assert found[1].startswith(f"{line_of(site, 'bad/id')}: analytics.machines.bad/id: machine id")
    assert "must be 1-64 letters, digits" in found[1]


def test_listed_devices_and_the_calendar_must_exist(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """\
        analytics:
          calendars:
            day_only: {shifts: [{name: day, start: "08:00", end: "16:00"}]}
          machines:
            press-01:
              devices: [press-01-drive, press-02-drive, press-01-drive]
              calendar: two_shift
        """,
    )
    site = tmp_path / SITE
    where = line_of(site, "devices: [press-01-drive, press-02")
    assert found == [
        f"{where}: analytics.machines.press-01.devices[1]: no device 'press-02-drive' in devices "
        "(known: meter-01, plc-01, press-01-drive)",
        f"{where}: analytics.machines.press-01.devices[2]: device 'press-01-drive' is listed twice",
        f"{line_of(site, 'calendar: two_shift')}: analytics.machines.press-01.calendar: no "
        "calendar 'two_shift' in analytics.calendars (known: day_only)",
    ]


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("meter01", "'meter01': write the source as device/tag"),
        ("meter-02/import_energy_kwh", "no device 'meter-02' in devices"),
        ("meter-01/import_kwh", "device meter-01 has no tag 'import_kwh' (its tags: "),
    ],
)
def test_a_source_names_a_device_and_one_of_its_tags(
    tmp_path: Path, source: str, message: str
) -> None:
    found = problems(
        tmp_path,
        f"""\
        analytics:
          machines:
            press-01:
              devices: [press-01-drive]
              energy: {{meter: {source}}}
        """,
    )
    assert len(found) == 1
    where = line_of(tmp_path / SITE, "energy:")
    assert found[0].startswith(f"{where}: analytics.machines.press-01.energy.meter: ")
    assert message in found[0]


def test_two_devices_giving_the_state_are_named(tmp_path: Path) -> None:
    devices = DEVICES + (
        "  - {id: press-02-drive, profile: press-drive,"
        " connection: {modbus_tcp: {host: 127.0.0.1}}}\n"
    )
    found = problems(
        tmp_path,
        """\
        analytics:
          machines:
            press-01: {devices: [press-01-drive, press-02-drive]}
        """,
        devices=devices,
    )
    where = line_of(tmp_path / SITE, "press-01: {devices")
    assert (
        f"{where}: analytics.machines.press-01.devices: press-01-drive and press-02-drive both "
        "give the machine's state (their profiles' machine.state): one device gives it, or give "
        "state here to replace both"
    ) in found
    # the other parts they both give are refused too, each naming both
    assert any("both give the total counter" in p for p in found)
    assert any("both give the alarm 'overcurrent'" in p for p in found)


def test_a_site_state_replaces_the_profiles_and_reads_one_device(tmp_path: Path) -> None:
    site = load(
        tmp_path,
        """\
        analytics:
          machines:
            press-01:
              devices: [plc-01]
              state:
                map:
                  tag: press-01-drive/op_mode
                  table: {0: stopped, 1: running, 3: [fault, E.OC1]}
                offline_after: 30s
        """,
    )
    assert site.analytics is not None
    state = site.analytics.machines[0].state
    assert state is not None
    assert state.map_name == "op_mode"
    assert state.device == "press-01-drive"
    assert state.table == {"0": "stopped", "1": "running", "3": ("fault", "E.OC1")}
    assert state.offline_after_s == 30.0
    found = problems(
        tmp_path,
        """\
        analytics:
          machines:
            press-01:
              state:
                inputs: {run: press-01-drive/run_bit, parts: plc-01/parts}
                rules: [{state: running, when: "run"}]
        """,
    )
    assert found == [
        f"{line_of(tmp_path / SITE, 'state:')}: analytics.machines.press-01.state: the state "
        "inputs come from plc-01 and press-01-drive: a machine's state is read from one device "
        "(give the others' tags to alarms)"
    ]


def test_at_most_two_counter_roles(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """\
        analytics:
          machines:
            press-01:
              devices: [press-01-drive]
              counters: {good: {source: plc-01/parts, width: uint32}}
        """,
    )
    assert found == [
        f"{line_of(tmp_path / SITE, 'counters:')}: analytics.machines.press-01.counters: the "
        "machine gets counters good, reject, total: at most two roles, the third follows "
        "(good = total - reject)"
    ]
    found = problems(
        tmp_path,
        """\
        analytics:
          machines:
            press-01:
              counters:
                total: {source: plc-01/parts, width: uint32}
                good: {source: plc-01/parts, width: uint32}
                reject: {source: plc-01/bad_parts, width: uint32}
        """,
    )
    assert len(found) == 1
    assert found[0].startswith(f"{line_of(tmp_path / SITE, 'counters:')}: analytics.machines.")
    assert "at most two counter roles: the third follows" in found[0]


def test_an_alarm_name_twice_is_refused(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """\
        analytics:
          machines:
            press-01:
              devices: [press-01-drive]
              alarms: {overcurrent: {when: "fault == 3"}}
        """,
    )
    assert found == [
        f"{line_of(tmp_path / SITE, 'overcurrent:')}: analytics.machines.press-01.alarms."
        "overcurrent: alarm 'overcurrent' is also given by device press-01-drive's profile: "
        "alarm names are unique in a machine, choose another name"
    ]


def test_an_alarm_input_name_means_one_tag(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """\
        analytics:
          machines:
            press-01:
              devices: [press-01-drive]
              alarms: {other: {when: "fault > 3", inputs: {fault: plc-01/bad_parts}}}
        """,
    )
    assert len(found) == 1
    assert found[0].startswith(
        f"{line_of(tmp_path / SITE, 'other:')}: analytics.machines.press-01.alarms.other.inputs."
        "fault: input 'fault' is plc-01/bad_parts here but press-01-drive/fault_code elsewhere"
    )


def test_a_profile_tag_the_device_dropped_is_located_in_the_profile(tmp_path: Path) -> None:
    devices = DEVICES.replace(
        "profile: press-drive,", "profile: press-drive, drop_tags: [count_reset],"
    )
    found = problems(
        tmp_path,
        "analytics:\n  machines:\n    press-01: {devices: [press-01-drive]}\n",
        devices=devices,
    )
    profile = tmp_path / "profiles" / "press-drive.yaml"
    assert len(found) == 1
    assert found[0].startswith(
        f"{line_of(profile, 'reset_tag: count_reset')}: machine.counters.total.reset_tag: "
        "machine press-01: device press-01-drive has no tag 'count_reset' (its tags: "
    )


def test_a_child_profile_keeps_its_bases_machine_block(tmp_path: Path) -> None:
    child = "profile: press-drive-b\nversion: 1\nsource: test\nextends: press-drive\n"
    devices = DEVICES.replace("profile: press-drive,", "profile: press-drive-b,")
    site = load(
        tmp_path,
        "analytics:\n  machines:\n    press-01: {devices: [press-01-drive]}\n",
        devices=devices,
        profiles={"press-drive-b": child},
    )
    assert site.analytics is not None
    state = site.analytics.machines[0].state
    assert state is not None
    # located in the base profile, which wrote it
    assert str(state.at.where).startswith(str(tmp_path / "profiles" / "press-drive.yaml"))


def test_a_machine_needs_state_or_counters(tmp_path: Path) -> None:
    found = problems(tmp_path, "analytics:\n  machines:\n    press-01: {devices: [meter-01]}\n")
    assert found == [
        f"{line_of(tmp_path / SITE, 'press-01:')}: analytics.machines.press-01: the machine has "
        "no state and no counters: list a device whose profile has a machine block, or give "
        "state or counters here"
    ]


def test_a_disabled_device_is_a_warning(tmp_path: Path) -> None:
    devices = DEVICES.replace("{id: press-01-drive,", "{id: press-01-drive, enabled: false,")
    site = load(
        tmp_path,
        "analytics:\n  machines:\n    press-01: {devices: [press-01-drive]}\n",
        devices=devices,
    )
    assert any("device press-01-drive of machine press-01 is disabled" in w for w in site.warnings)


@pytest.mark.parametrize(
    ("analytics", "needle", "path", "message"),
    [
        (
            "calendars: {c: {shifts: [{name: day, start: 08:00, end: 16:15}]}}",
            "calendars",
            "analytics.calendars.c.shifts[0].end",
            '975: write times in quotes ("16:15")',
        ),
        (
            'calendars: {c: {shifts: [{name: day, start: "08:00", end: "24:00"}]}}',
            "calendars",
            "analytics.calendars.c.shifts[0].end",
            "'24:00': a local time HH:MM, 00:00 to 23:59",
        ),
        (
            "calendars: {c: {workdays: [mon, tues],"
            ' shifts: [{name: d, start: "08:00", end: "09:00"}]}}',
            "calendars",
            "analytics.calendars.c.workdays[1]",
            "'tues': Input should be 'mon'",
        ),
        ("calendars: {c: {shifts: []}}", "calendars", "analytics.calendars.c.shifts", "at least 1"),
        ("timezone: Asia/Shanghia", "timezone", "analytics.timezone", "not a known IANA time zone"),
        ("publish_every: often", "publish_every", "analytics.publish_every", "expected a duration"),
        (
            "machines: {m: {counters:"
            " {total: {source: plc-01/parts, width: uint32, max_rate: 20/x}}}}",
            "machines",
            "analytics.machines.m.counters.total.max_rate",
            "expected a rate such as 20/s",
        ),
        (
            "machines: {m: {counters: {totals: {source: plc-01/parts, width: uint32}}}}",
            "machines",
            "analytics.machines.m.counters.totals",
            "Input should be 'total', 'good' or 'reject'",
        ),
        (
            "machines: {m: {counters: {total: {source: plc-01/parts, width: uint24}}}}",
            "machines",
            "analytics.machines.m.counters.total.width",
            "'uint24': Input should be",
        ),
        ("machines: {m: {colour: blue}}", "machines", "analytics.machines.m.colour", "unknown key"),
        (
            "machines: {m: {state: {map: {tag: a/b, table: packml},"
            " rules: [{state: idle, when: 'true'}]}}}",
            "machines",
            "analytics.machines.m.state",
            "give inputs and rules, or map, not both",
        ),
        (
            "machines: {m: {state: {inputs: {and: a/b}, rules: [{state: idle, when: 'true'}]}}}",
            "machines",
            "analytics.machines.m.state.inputs",
            "name 'and': use letters, digits and '_'",
        ),
        (
            "machines: {m: {state: {rules: [{state: offline, when: 'true'}]}}}",
            "machines",
            "analytics.machines.m.state.rules[0].state",
            "'offline': Input should be 'running', 'idle', 'stopped' or 'fault'",
        ),
        (
            "machines: {m: {mode: {tag: a/b, names: {1: run}, planned_downtime: [setup]}}}",
            "machines",
            "analytics.machines.m.mode",
            "planned_downtime ['setup'] are not among the modes: run",
        ),
        (
            "machines: {m: {alarms: {hot: {when: 'x', severity: 1001}}}}",
            "machines",
            "analytics.machines.m.alarms.hot.severity",
            "less than or equal to 1000",
        ),
        (
            "machines: {m: {energy: {meter: meter-01/import_energy_kwh, register: double}}}",
            "machines",
            "analytics.machines.m.energy.register",
            "'double': Input should be 'float32' or 'exact'",
        ),
    ],
)
def test_bad_values_are_located(
    tmp_path: Path, analytics: str, needle: str, path: str, message: str
) -> None:
    found = problems(tmp_path, f"analytics:\n  {analytics}\n")
    assert len(found) == 1, found
    assert found[0].startswith(f"{line_of(tmp_path / SITE, needle)}: {path}: "), found
    assert message in found[0]


def test_a_bad_profile_machine_block_is_located_in_the_profile(tmp_path: Path) -> None:
    bad = DRIVE_PROFILE.replace("max_rate: 20/s, reset_tag", "max_rate: fast, reset_tag")
    path = write_site(tmp_path, GOOD, profiles={"press-drive": bad})
    from agent.site.loader import load_site
    from agent.site.source import ConfigFileError

    with pytest.raises(ConfigFileError) as caught:
        load_site(path, env={})
    (problem,) = [str(p) for p in caught.value.problems]
    profile = tmp_path / "profiles" / "press-drive.yaml"
    assert problem.startswith(
        f"{line_of(profile, 'max_rate: fast')}: machine.counters.total.max_rate: 'fast': "
        "expected a rate such as 20/s"
    )


def test_a_bad_analytics_block_hides_no_other_problem(tmp_path: Path) -> None:
    devices = DEVICES.replace(
        "host: 127.0.0.1}}}\n  - {id: plc-01", "host: 127.0.0.1}}, colour: red}\n  - {id: plc-01"
    )
    found = problems(tmp_path, "analytics:\n  publish_every: often\n", devices=devices)
    assert any("devices[0].colour: unknown key" in p for p in found)
    assert any("analytics.publish_every" in p for p in found)


def test_rates_read_as_counts_per_second() -> None:
    assert parse_rate("20/s") == 20.0
    assert parse_rate("1200/min") == 20.0
    assert parse_rate("72000/h") == 20.0
    assert parse_rate(5) == 5.0
    for bad in ("0/s", "-1/s", "fast", True):
        with pytest.raises(ValueError, match="rate"):
            parse_rate(bad)


def test_a_mode_without_a_state_is_refused(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """\
        analytics:
          machines:
            press-01:
              counters: {total: {source: plc-01/parts, width: uint32}}
              mode: {tag: press-01-drive/op_mode, names: {3: production}}
        """,
    )
    assert found == [
        f"{line_of(tmp_path / SITE, 'mode:')}: analytics.machines.press-01.mode: a mode "
        "qualifies the machine's state, and the machine has none: give state too, or list the "
        "device whose profile gives it"
    ]
