"""Sites with ``analytics:`` for the tests: a drive profile with a machine block, a meter.

The site files are written as text so a test can find the line of the key a
problem must be reported at (:func:`line_of`).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from agent.site.loader import Site, load_site
from agent.site.source import ConfigFileError

DRIVE_PROFILE = """\
profile: press-drive
version: 1
source: test profile
protocol: {kind: modbus}
poll_groups: {fast: 500ms, slow: 10s}
tags:
  run_bit: {address: 0, type: bool, bit: 0, group: fast}
  freq: {address: 1, type: uint16, scale: 0.01, group: fast}
  fault_code: {address: 2, type: uint16, group: fast}
  op_mode: {address: 3, type: uint16, group: slow}
  count_total: {address: 4, type: uint16, group: fast}
  count_reset: {address: 5, type: bool, bit: 0, group: fast}
  count_reject: {address: 6, type: uint16, group: slow}
machine:
  state:
    inputs: {run: run_bit, freq: freq, fault: fault_code}
    rules:
      - {state: fault, when: "fault != 0", reason: fault}
      - {state: running, when: "run and freq > 0.5"}
      - {state: idle, when: "true"}
    debounce: 2s
  mode: {tag: op_mode, names: {0: none, 1: maintenance, 2: setup, 3: production},
         planned_downtime: [maintenance, setup]}
  counters:
    total: {tag: count_total, width: uint16, max_rate: 20/s, reset_tag: count_reset}
    reject: {tag: count_reject, width: uint16, max_rate: 20/s}
  alarms:
    overcurrent: {when: "fault == 2", severity: 700, message: overcurrent, min_repeat: 60s}
  ideal_cycle: 1.0s
"""

COUNTER_PROFILE = """\
profile: parts-counter
version: 1
source: test profile
protocol: {kind: modbus}
tags:
  parts: {address: 0, type: uint32}
  bad_parts: {address: 2, type: uint32}
  temp_c: {address: 4, type: uint16, scale: 0.1}
machine:
  counters:
    total: {tag: parts, width: uint32, max_rate: 50/s}
"""

DEVICES = """\
devices:
  - {id: press-01-drive, profile: press-drive, connection: {modbus_tcp: {host: 127.0.0.1}}}
  - {id: plc-01, profile: parts-counter, connection: {modbus_tcp: {host: 127.0.0.1}}}
  - {id: meter-01, profile: chint-dtsu666, connection: {modbus_tcp: {host: 127.0.0.1}}}
"""

GOOD = """\
analytics:
  timezone: Asia/Shanghai
  publish_every: 5m
  calendars:
    two_shift:
      workdays: [mon, tue, wed, thu, fri, sat]
      holidays: ["2026-10-01"]
      shifts:
        - {name: day, start: "08:00", end: "16:00", breaks: [["10:00", "10:15"]]}
        - {name: night, start: "22:00", end: "06:00"}
  machines:
    press-01:
      devices: [press-01-drive]
      calendar: two_shift
      ideal_cycle: 1.2s
      micro_stop_max: 90s
      method: iso22400
      energy: {meter: meter-01/import_energy_kwh, register: float32}
"""


def write_site(
    tmp_path: Path,
    analytics: str,
    *,
    devices: str = DEVICES,
    profiles: dict[str, str] | None = None,
) -> Path:
    """A site file in ``tmp_path`` with the test profiles in its ``profiles/`` folder."""
    folder = tmp_path / "profiles"
    folder.mkdir(exist_ok=True)
    given = {"press-drive": DRIVE_PROFILE, "parts-counter": COUNTER_PROFILE, **(profiles or {})}
    for name, text in given.items():
        (folder / f"{name}.yaml").write_text(text, encoding="utf-8")
    text = (
        f"agent: {{id: box, data_dir: {tmp_path / 'data'}}}\n{devices}{textwrap.dedent(analytics)}"
    )
    path = tmp_path / "site.yaml"
    path.write_text(text, encoding="utf-8")
    path.chmod(0o640)
    return path


def load(
    tmp_path: Path,
    analytics: str,
    *,
    devices: str = DEVICES,
    profiles: dict[str, str] | None = None,
) -> Site:
    return load_site(write_site(tmp_path, analytics, devices=devices, profiles=profiles), env={})


def problems(
    tmp_path: Path,
    analytics: str,
    *,
    devices: str = DEVICES,
    profiles: dict[str, str] | None = None,
) -> list[str]:
    """The problems loading the site gives, as printed."""
    with pytest.raises(ConfigFileError) as caught:
        load(tmp_path, analytics, devices=devices, profiles=profiles)
    return [str(p) for p in caught.value.problems]


def line_of(path: Path, needle: str) -> str:
    """``FILE:LINE`` of the first line of ``path`` holding ``needle``."""
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if needle in line:
            return f"{path}:{number}"
    raise AssertionError(f"{needle!r} not in {path}")
