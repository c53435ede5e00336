"""The site's machines as :class:`~agent.compute.plan.MachinePlan` objects, every error located.

:mod:`agent.site.analytics` merged each machine from its devices' profiles and
the site and checked what needs no compute code; here the compute objects are
built: the state rules and alarm conditions parsed, the state map and mode
tables, counter specs, calendars, the OEE and energy settings. A compute
object that refuses its configuration (``StateConfigError``, ``CounterError``,
``CalendarError``, ``ValueError``) becomes a :class:`ConfigFileError`
problem at the ``file:line`` of the key that set it, like the loader's own.

Defaults set here: ``offline_after`` is 3 x the state tags' poll interval, at
least 5 s; the state's ``poll_ms`` is that interval; OEE's
``poll_interval_ms`` is the counters' (the slowest); there is no OEE without a
calendar, an ideal cycle and a counter.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from agent.compute.counters import CounterError, CounterSpec
from agent.compute.oee import OeeConfig
from agent.compute.plan import AlarmPlan, CounterPlan, EnergyPlan, MachinePlan, Source
from agent.compute.shifts import Calendar, CalendarError
from agent.compute.state import (
    PACKML,
    Condition,
    ModeSpec,
    Rule,
    Rules,
    StateConfigError,
    StateEntry,
    StateMap,
    StateSpec,
    parse_condition,
)
from agent.site import models as cfg
from agent.site.analytics import (
    At,
    CalendarConfig,
    MachineConfig,
    ModeConfig,
    StateConfig,
    TagRef,
)
from agent.site.loader import Site
from agent.site.source import ConfigFileError, Problem

MIN_OFFLINE_AFTER_S: Final = 5.0
OFFLINE_POLLS: Final = 3
_WHOLE: Final = re.compile(r"^-?\d+$")
_SHIFT_NAMED: Final = re.compile(r"^shifts? (\S+?)(?::| and )")


def plan_machines(
    site: Site, *, local_zone: Callable[[], str | None] | None = None
) -> tuple[MachinePlan, ...]:
    """One plan per machine of ``site.analytics`` (none without it).

    Raises :class:`ConfigFileError` listing every problem. ``local_zone`` gives
    the box's IANA zone when ``analytics.timezone`` is unset (default:
    :func:`box_timezone`).
    """
    analytics = site.analytics
    if analytics is None:
        return ()
    problems: list[Problem] = []
    calendars: dict[str, Calendar] = {}
    if analytics.calendars:
        zone = analytics.timezone or (local_zone or box_timezone)()
        if zone is None:
            problems.append(
                analytics.timezone_at.problem(
                    "the box's time zone is not known (no TZ, /etc/localtime is not a zoneinfo "
                    "link, no /etc/timezone): set analytics.timezone, e.g. Asia/Shanghai"
                )
            )
        else:
            for name, cal in analytics.calendars.items():
                built = _calendar(cal, zone, problems)
                if built is not None:
                    calendars[name] = built
    plans = []
    for machine in analytics.machines:
        builder = _Plan(machine, problems)
        plan = builder.build(calendars, analytics.calendars, analytics.publish_every_s)
        if plan is not None:
            plans.append(plan)
    if problems:
        raise ConfigFileError(problems)
    return tuple(plans)


def box_timezone() -> str | None:
    """The box's IANA zone: ``$TZ``, the ``/etc/localtime`` link, ``/etc/timezone``; else None."""
    candidates = [os.environ.get("TZ", "").lstrip(":")]
    with contextlib.suppress(OSError):
        candidates.append(os.readlink("/etc/localtime"))
    with contextlib.suppress(OSError, UnicodeDecodeError):
        candidates.append(Path("/etc/timezone").read_text(encoding="utf-8").strip())
    for text in candidates:
        name = text.split("zoneinfo/", 1)[1] if "zoneinfo/" in text else text
        if name and not name.startswith("/") and _known_zone(name):
            return name
    return None


def _known_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def _calendar(cal: CalendarConfig, zone: str, problems: list[Problem]) -> Calendar | None:
    section = cal.section
    config = {
        "timezone": zone,
        "workdays": list(section.workdays),
        "holidays": [d.isoformat() for d in section.holidays],
        "shifts": [
            {"name": s.name, "start": s.start, "end": s.end, "breaks": [list(b) for b in s.breaks]}
            for s in section.shifts
        ],
    }
    try:
        return Calendar.from_config(config)
    except CalendarError as exc:
        at = cal.at
        match = _SHIFT_NAMED.match(str(exc))
        names = [s.name for s in section.shifts]
        if match is not None and match.group(1) in names:
            at = cal.shift_ats[names.index(match.group(1))]
        problems.append(at.problem(str(exc)))
        return None


def _key(text: str) -> int | str:
    """A table key as the device sends it: whole numbers are numbers."""
    return int(text) if _WHOLE.match(text) else text


class _Plan:
    """Builds one machine's plan, appending a located problem for each refusal."""

    def __init__(self, machine: MachineConfig, problems: list[Problem]) -> None:
        self.machine = machine
        self.problems = problems
        self.ok = True

    def fail(self, at: At, message: str) -> None:
        self.ok = False
        self.problems.append(at.problem(message))

    def build(
        self,
        calendars: Mapping[str, Calendar],
        configs: Mapping[str, CalendarConfig],
        publish_every_s: float,
    ) -> MachinePlan | None:
        m = self.machine
        inputs: dict[str, Source] = {}
        state = None
        if m.state is not None:
            inputs.update({k: _source(r) for k, r in m.state.inputs.items()})
            state = self._state(m.state, m.mode)
        if m.mode is not None:
            inputs[m.mode.name] = _source(m.mode.ref)
        counters = tuple(self._counters())
        alarms = tuple(self._alarms(m.state, inputs))
        calendar = calendars.get(m.calendar) if m.calendar is not None else None
        if m.calendar is not None and m.calendar not in calendars:
            self.ok = False  # its own problem is reported at the calendar
        oee = None
        if calendar is not None and m.ideal_cycle_s is not None and counters:
            cal = configs[m.calendar] if m.calendar is not None else None
            try:
                oee = OeeConfig(
                    ideal_cycle_s=m.ideal_cycle_s,
                    poll_interval_ms=max(_ms(c.ref.poll_s) for c in m.counters),
                    micro_stop_max_ms=_ms(m.micro_stop_max_s),
                    method=m.method,
                    unknown_time=m.unknown_time,
                    planned_downtime_modes=frozenset(m.mode.planned_downtime if m.mode else ()),
                    breaks_count_if_running=bool(cal and cal.section.breaks_count_if_running),
                )
            except ValueError as exc:
                self.fail(m.at, str(exc))
        energy = None
        if m.energy is not None:
            ref = m.energy.ref
            energy = EnergyPlan(_source(ref), m.energy.register, _ms(ref.poll_s))
        if not self.ok:
            return None
        return MachinePlan(
            name=m.id,
            inputs=inputs,
            state=state,
            counters=counters,
            alarms=alarms,
            calendar=calendar,
            oee=oee,
            energy=energy,
            publish_every_ms=_ms(publish_every_s),
        )

    def _state(self, state: StateConfig, mode_config: ModeConfig | None) -> StateSpec | None:
        source = self._state_source(state)
        mode = self._mode(mode_config)
        if source is None or (mode_config is not None and mode is None):
            return None
        poll_ms = _ms(state.poll_s)
        if state.offline_after_s is not None:
            offline_ms = _ms(state.offline_after_s)
        else:
            offline_ms = _ms(max(OFFLINE_POLLS * state.poll_s, MIN_OFFLINE_AFTER_S))
        try:
            return StateSpec(
                source=source,
                offline_after_ms=offline_ms,
                debounce_ms=_ms(state.debounce_s),
                poll_ms=poll_ms,
                mode=mode,
            )
        except StateConfigError as exc:
            text = str(exc)
            if text.startswith("offline_after"):
                at = state.offline_at
                text += f" ({state.poll_s:g}s for {', '.join(str(r) for r in _refs(state))})"
            elif text.startswith("mode") and mode_config is not None:
                at = mode_config.at
            else:
                at = state.at
            self.fail(at, text)
            return None

    def _state_source(self, state: StateConfig) -> Rules | StateMap | None:
        names = frozenset(state.inputs)
        try:
            if state.map_name is not None:
                table = state.table
                entries: dict[Any, StateEntry]
                if table == "packml" or table is None:
                    entries = dict(PACKML)
                else:
                    entries = {_key(k): _entry(v) for k, v in table.items()}
                return StateMap(state.map_name, entries)
            rules = []
            for rc in state.rules:
                try:
                    parse_condition(rc.rule.when, names)
                except StateConfigError as exc:
                    self.fail(rc.at, str(exc))
                rules.append(Rule(rc.rule.state, rc.rule.when, rc.rule.reason))
            return Rules(names, rules) if self.ok else None
        except StateConfigError as exc:
            self.fail(state.at, str(exc))
            return None

    def _mode(self, mode: ModeConfig | None) -> ModeSpec | None:
        if mode is None:
            return None
        names: dict[Any, str] = {_key(k): v for k, v in mode.names.items()}
        try:
            return ModeSpec(mode.name, names, mode.planned_downtime)
        except StateConfigError as exc:
            self.fail(mode.at, str(exc))
            return None

    def _counters(self) -> list[CounterPlan]:
        plans = []
        for c in self.machine.counters:
            try:
                spec = CounterSpec(c.width, c.max_rate, reset_signal=c.reset is not None)
            except CounterError as exc:
                self.fail(c.at, str(exc))
                continue
            reset = None if c.reset is None else _source(c.reset)
            plans.append(CounterPlan(c.role, _source(c.ref), spec, reset))
        return plans

    def _alarms(self, state: StateConfig | None, inputs: dict[str, Source]) -> list[AlarmPlan]:
        plans = []
        base = frozenset(state.inputs) if state is not None else frozenset()
        for a in self.machine.alarms:
            inputs.update({k: _source(r) for k, r in a.inputs.items()})
            condition: Condition
            try:
                condition = parse_condition(a.when, base | frozenset(a.inputs))
            except StateConfigError as exc:
                self.fail(a.when_at, str(exc))
                continue
            plans.append(AlarmPlan(a.name, condition, a.severity, a.message, _ms(a.min_repeat_s)))
        return plans


def _source(ref: TagRef) -> Source:
    return Source(ref.device, ref.tag)


def _refs(state: StateConfig) -> list[TagRef]:
    return [r for r in state.inputs.values() if r.poll_s == state.poll_s]


def _entry(value: cfg.StateEntry) -> StateEntry:
    return value if isinstance(value, str) else (value[0], value[1])
