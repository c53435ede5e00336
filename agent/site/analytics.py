"""The ``analytics:`` block with the profiles' ``machine:`` blocks: one checked config per machine.

Each machine of ``analytics.machines`` lists devices; the ``machine:`` block of
each device's profile gives parts of it (state, mode, counters, alarms, an
ideal cycle), in the profile's tag names, and the machine's own keys in the
site add to or replace them, their sources written ``device/tag``:

* exactly one part may give ``state`` (two devices: an error naming both),
  unless the site gives it, which replaces it; the same for ``mode``;
* a counter role comes from one device; the site's counter of a role replaces
  it; at most two roles (the third follows);
* alarms are the union (a name twice is an error);
* the site's ``ideal_cycle`` overrides the profiles'.

Everything checked here needs no compute code: names, that every tag exists
on its device, the calendar named exists, one state device, the roles. The
conditions, the calendar's shifts and the numbers are checked by the compute
objects the runtime builds (:mod:`agent.runtime.machines`); every part keeps
its :class:`At` (``file:line`` and key path) so their errors are located too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ValidationError

from agent.site import models as cfg
from agent.site.device import DeviceConfig
from agent.site.source import Path_, Problem, Source, Where, dotted
from drivers.base import problems_from_validation_error

_SHOWN_TAGS = 12


@dataclass(frozen=True, slots=True)
class At:
    """Where a key was written: its file and line, and its dotted key path."""

    where: Where
    path: str

    def problem(self, message: str) -> Problem:
        """A located problem at this key."""
        return Problem(self.where, self.path, message)


@dataclass(frozen=True, slots=True)
class TagRef:
    """One tag of one device, and how often it is polled."""

    device: str
    tag: str
    poll_s: float

    def __str__(self) -> str:
        return f"{self.device}/{self.tag}"


@dataclass(frozen=True, slots=True)
class RuleConfig:
    """One state rule as written, and where its ``when`` is."""

    rule: cfg.StateRule
    at: At


@dataclass(frozen=True, slots=True)
class StateConfig:
    """Where the machine's state comes from: rules over inputs, or a state tag's table."""

    device: str
    inputs: Mapping[str, TagRef]
    """Condition name -> tag; for a map, the map tag's own name -> the tag."""
    rules: tuple[RuleConfig, ...]
    map_name: str | None
    table: Literal["packml"] | Mapping[str, cfg.StateEntry] | None
    debounce_s: float
    offline_after_s: float | None
    poll_s: float
    """The slowest poll interval of the state tags."""
    at: At
    offline_at: At


@dataclass(frozen=True, slots=True)
class ModeConfig:
    """The intent tag and the names of its values."""

    name: str
    ref: TagRef
    names: Mapping[str, str]
    planned_downtime: tuple[str, ...]
    at: At


@dataclass(frozen=True, slots=True)
class CounterConfig:
    """A piece counter of one role."""

    role: cfg.CounterRoleName
    ref: TagRef
    width: cfg.CounterWidth
    max_rate: float | None
    reset: TagRef | None
    at: At


@dataclass(frozen=True, slots=True)
class AlarmConfig:
    """An alarm; ``inputs`` are its own, besides the state inputs."""

    name: str
    when: str
    severity: int
    message: str
    min_repeat_s: float
    inputs: Mapping[str, TagRef]
    at: At
    when_at: At


@dataclass(frozen=True, slots=True)
class EnergyConfig:
    """The meter register feeding a machine."""

    ref: TagRef
    register: Literal["float32", "exact"]
    at: At


@dataclass(frozen=True, slots=True)
class CalendarConfig:
    """A calendar as written, with where it and each shift are."""

    name: str
    section: cfg.CalendarSection
    at: At
    shift_ats: tuple[At, ...]


@dataclass(frozen=True, slots=True)
class MachineConfig:
    """One machine, merged from its devices' profiles and the site, every tag resolved."""

    id: str
    at: At
    devices: tuple[str, ...]
    state: StateConfig | None = None
    mode: ModeConfig | None = None
    counters: tuple[CounterConfig, ...] = ()
    alarms: tuple[AlarmConfig, ...] = ()
    calendar: str | None = None
    ideal_cycle_s: float | None = None
    micro_stop_max_s: float = 120.0
    method: Literal["common", "iso22400"] = "common"
    unknown_time: Literal["exclude", "as_down"] = "exclude"
    energy: EnergyConfig | None = None


@dataclass(frozen=True, slots=True)
class Analytics:
    """The checked ``analytics:`` block: calendars by name and the machines."""

    at: At
    timezone: str | None
    timezone_at: At
    publish_every_s: float
    calendars: Mapping[str, CalendarConfig] = field(default_factory=dict)
    machines: tuple[MachineConfig, ...] = ()
    notes: tuple[str, ...] = ()


ROOT: Path_ = ("analytics",)


def resolve_analytics(
    raw: Any,
    devices: Sequence[DeviceConfig],
    device_ids: set[str],
    source: Source,
    problems: list[Problem],
) -> Analytics | None:
    """The ``analytics`` block of ``source`` checked against the site's ``devices``.

    ``device_ids`` are every device id the site names (a device that failed
    its own checks is not in ``devices`` and is not reported again here).
    Problems are appended to ``problems``; None when there was one.
    """
    try:
        section = cfg.AnalyticsSection.model_validate(raw)
    except ValidationError as exc:
        problems.extend(
            Problem(source.where(p.loc), dotted(p.loc), p.message)
            for p in problems_from_validation_error(exc, ROOT)
        )
        return None
    before = len(problems)
    builder = _Builder(section, {d.id: d for d in devices}, device_ids, source, problems)
    result = builder.build()
    return result if len(problems) == before else None


class _Builder:
    def __init__(
        self,
        section: cfg.AnalyticsSection,
        devices: Mapping[str, DeviceConfig],
        device_ids: set[str],
        source: Source,
        problems: list[Problem],
    ) -> None:
        self.section = section
        self.devices = devices
        self.device_ids = device_ids
        self.source = source
        self.problems = problems
        self.notes: list[str] = []

    def at(self, path: Path_, source: Source | None = None) -> At:
        return At((source or self.source).where(path), dotted(path))

    def problem(self, path: Path_, message: str, source: Source | None = None) -> None:
        self.problems.append(self.at(path, source).problem(message))

    def build(self) -> Analytics:
        section = self.section
        calendars = {name: self._calendar(name, cal) for name, cal in section.calendars.items()}
        machines = []
        for mid, machine in section.machines.items():
            built = _Machine(self, mid, machine).build()
            if built is not None:
                machines.append(built)
        return Analytics(
            at=self.at(ROOT),
            timezone=section.timezone,
            timezone_at=self.at((*ROOT, "timezone")),
            publish_every_s=section.publish_every,
            calendars=calendars,
            machines=tuple(machines),
            notes=tuple(self.notes),
        )

    def _calendar(self, name: str, cal: cfg.CalendarSection) -> CalendarConfig:
        path = (*ROOT, "calendars", name)
        shifts = tuple(self.at((*path, "shifts", i)) for i in range(len(cal.shifts)))
        return CalendarConfig(name, cal, self.at(path), shifts)

    # -- tags ------------------------------------------------------------------

    def tag_of(
        self, device: DeviceConfig, tag: str, path: Path_, source: Source, whose: str
    ) -> TagRef | None:
        """``tag`` of ``device``, or a problem at ``path`` of ``source``."""
        found = device.options.tags.get(tag)
        if found is None:
            names = sorted(device.options.tags)
            shown = ", ".join(names[:_SHOWN_TAGS]) + (", ..." if len(names) > _SHOWN_TAGS else "")
            self.problem(
                path, f"{whose}device {device.id} has no tag {tag!r} (its tags: {shown})", source
            )
            return None
        return TagRef(device.id, tag, device.poll_groups[found.group])

    def source_ref(self, text: str, path: Path_) -> TagRef | Literal[False] | None:
        """A site source ``device/tag``: the tag, None when the device itself is broken,
        False (and a problem) when the text names no tag."""
        name, sep, tag = text.partition("/")
        if not sep or not name or not tag:
            self.problem(path, f"{text!r}: write the source as device/tag")
            return False
        device = self.devices.get(name)
        if device is None:
            if name in self.device_ids:
                return None  # its own problems are reported at the device
            known = ", ".join(sorted(self.device_ids)) or "none"
            self.problem(path, f"{text!r}: no device {name!r} in devices (known: {known})")
            return False
        if not device.enabled:
            self.notes.append(f"{dotted(path)}: device {name} is disabled: {text} is never read")
        return self.tag_of(device, tag, path, self.source, "") or False


@dataclass(slots=True)
class _Part:
    """A part of a machine found so far, and who gave it (device id or "the site")."""

    value: Any
    giver: str


class _Machine:
    """Merges one machine: the listed devices' machine blocks, then the site's keys."""

    def __init__(self, top: _Builder, mid: str, section: cfg.MachineSection) -> None:
        self.top = top
        self.id = mid
        self.section = section
        self.path: Path_ = (*ROOT, "machines", mid)
        self.ok = True
        self.listed: list[DeviceConfig] = []

    def problem(self, path: Path_, message: str, source: Source | None = None) -> None:
        self.ok = False
        self.top.problem(path, message, source)

    def build(self) -> MachineConfig | None:
        self._check_id()
        self._listed()
        state = self._state()
        mode = self._mode()
        counters = self._counters()
        if self.ok and state is None and mode is not None:
            self.ok = False
            self.top.problems.append(
                mode.at.problem(
                    "a mode qualifies the machine's state, and the machine has none: give "
                    "state too, or list the device whose profile gives it"
                )
            )
        if state is not None and mode is not None:
            other = state.inputs.get(mode.name)
            if other is not None and other != mode.ref:
                self.ok = False
                self.top.problems.append(
                    mode.at.problem(
                        f"the mode tag {mode.ref} is named {mode.name!r}, a state input that is "
                        f"{other}: rename that input"
                    )
                )
        alarms = self._alarms(state, mode)
        energy = self._energy()
        calendar = self._calendar()
        ideal = self._ideal_cycle()
        if self.ok and state is None and not counters:
            self.problem(
                self.path,
                "the machine has no state and no counters: list a device whose profile has a "
                "machine block, or give state or counters here",
            )
        if not self.ok:
            return None
        return MachineConfig(
            id=self.id,
            at=self.top.at(self.path),
            devices=tuple(d.id for d in self.listed),
            state=state,
            mode=mode,
            counters=counters,
            alarms=alarms,
            calendar=calendar,
            ideal_cycle_s=ideal,
            micro_stop_max_s=self.section.micro_stop_max,
            method=self.section.method,
            unknown_time=self.section.unknown_time,
            energy=energy,
        )

    def _check_id(self) -> None:
        try:
            cfg.check_id(self.id)
        except ValueError as exc:
            self.problem(self.path, f"machine id {self.id!r} {exc}")
        if self.id in self.top.device_ids:
            self.problem(
                self.path,
                f"machine id {self.id!r} is also a device id: machines and devices share "
                "topics and cloud names, give the machine its own id",
            )

    def _listed(self) -> None:
        seen: set[str] = set()
        for index, name in enumerate(self.section.devices):
            path = (*self.path, "devices", index)
            if name in seen:
                self.problem(path, f"device {name!r} is listed twice")
                continue
            seen.add(name)
            device = self.top.devices.get(name)
            if device is None:
                if name not in self.top.device_ids:
                    known = ", ".join(sorted(self.top.device_ids)) or "none"
                    self.problem(path, f"no device {name!r} in devices (known: {known})")
                else:
                    self.ok = False  # reported at the device itself
                continue
            if not device.enabled:
                self.top.notes.append(
                    f"{dotted(path)}: device {name} of machine {self.id} is disabled: "
                    "the machine reads nothing from it"
                )
            self.listed.append(device)

    def _givers(self, key: str) -> list[DeviceConfig]:
        return [d for d in self.listed if d.machine is not None and getattr(d.machine, key)]

    def _one_giver(self, key: str) -> DeviceConfig | None:
        givers = self._givers(key)
        if len(givers) > 1:
            names = " and ".join(d.id for d in givers)
            self.problem(
                (*self.path, "devices"),
                f"{names} both give the machine's {key} (their profiles' machine.{key}): "
                f"one device gives it, or give {key} here to replace both",
            )
            return None
        return givers[0] if givers else None

    def _profile_ref(self, device: DeviceConfig, tag: str, path: Path_) -> TagRef | None:
        """A tag named in ``device``'s profile machine block at ``path`` of that profile."""
        assert device.machine_source is not None
        ref = self.top.tag_of(device, tag, path, device.machine_source, f"machine {self.id}: ")
        if ref is None:
            self.ok = False
        return ref

    # -- state and mode --------------------------------------------------------

    def _state(self) -> StateConfig | None:
        site = self.section.state
        if site is not None:
            return self._site_state(site)
        giver = self._one_giver("state")
        if giver is None or giver.machine is None or giver.machine.state is None:
            return None
        block, src = giver.machine.state, giver.machine_source
        base: Path_ = ("machine", "state")
        refs: dict[str, TagRef] = {}
        map_name = None
        if block.map is not None:
            map_name = block.map.tag
            ref = self._profile_ref(giver, block.map.tag, (*base, "map", "tag"))
            if ref is not None:
                refs[map_name] = ref
        for name, tag in block.inputs.items():
            ref = self._profile_ref(giver, tag, (*base, "inputs", name))
            if ref is not None:
                refs[name] = ref
        return self._state_config(giver.id, block, refs, map_name, base, src)

    def _site_state(self, block: cfg.SiteState) -> StateConfig | None:
        base: Path_ = (*self.path, "state")
        refs: dict[str, TagRef] = {}
        map_name = None
        wanted = [(n, t, (*base, "inputs", n)) for n, t in block.inputs.items()]
        if block.map is not None:
            map_name = block.map.tag.partition("/")[2] or block.map.tag
            wanted.append((map_name, block.map.tag, (*base, "map", "tag")))
        for name, text, path in wanted:
            ref = self._site_ref(text, path)
            if ref is not None:
                refs[name] = ref
        devices = sorted({r.device for r in refs.values()})
        if len(devices) > 1:
            self.problem(
                base,
                f"the state inputs come from {' and '.join(devices)}: a machine's state is read "
                "from one device (give the others' tags to alarms)",
            )
            return None
        if not refs:
            return None
        return self._state_config(devices[0], block, refs, map_name, base, None)

    def _state_config(
        self,
        device: str,
        block: cfg.StateBlock,
        refs: dict[str, TagRef],
        map_name: str | None,
        base: Path_,
        source: Source | None,
    ) -> StateConfig | None:
        if not self.ok:
            return None
        at = self.top.at
        return StateConfig(
            device=device,
            inputs=refs,
            rules=tuple(
                RuleConfig(r, at((*base, "rules", i, "when"), source))
                for i, r in enumerate(block.rules)
            ),
            map_name=map_name,
            table=None if block.map is None else block.map.table,
            debounce_s=block.debounce,
            offline_after_s=block.offline_after,
            poll_s=max(r.poll_s for r in refs.values()),
            at=at(base, source),
            offline_at=at((*base, "offline_after"), source),
        )

    def _mode(self) -> ModeConfig | None:
        site = self.section.mode
        if site is not None:
            path: Path_ = (*self.path, "mode")
            ref = self._site_ref(site.tag, (*path, "tag"))
            if ref is None:
                return None
            names = site.names
            return ModeConfig(ref.tag, ref, names, tuple(site.planned_downtime), self.top.at(path))
        giver = self._one_giver("mode")
        if giver is None or giver.machine is None or giver.machine.mode is None:
            return None
        block = giver.machine.mode
        mref = self._profile_ref(giver, block.tag, ("machine", "mode", "tag"))
        if mref is None:
            return None
        at = self.top.at(("machine", "mode"), giver.machine_source)
        return ModeConfig(block.tag, mref, block.names, tuple(block.planned_downtime), at)

    def _site_ref(self, text: str, path: Path_) -> TagRef | None:
        ref = self.top.source_ref(text, path)
        if ref is None or ref is False:
            self.ok = False
            return None
        return ref

    # -- counters, alarms, energy -------------------------------------------------

    def _counters(self) -> tuple[CounterConfig, ...]:
        found: dict[str, CounterConfig] = {}
        givers: dict[str, str] = {}
        for device in self._givers("counters"):
            assert device.machine is not None
            for role, block in device.machine.counters.items():
                path: Path_ = ("machine", "counters", role)
                if role in self.section.counters:
                    continue  # the site's replaces it
                if role in givers:
                    self.problem(
                        (*self.path, "devices"),
                        f"{givers[role]} and {device.id} both give the {role} counter: give "
                        f"counters.{role} here to choose",
                    )
                    continue
                givers[role] = device.id
                ref = self._profile_ref(device, block.tag, (*path, "tag"))
                reset = None
                if block.reset_tag is not None:
                    reset = self._profile_ref(device, block.reset_tag, (*path, "reset_tag"))
                if ref is not None:
                    at = self.top.at(path, device.machine_source)
                    found[role] = CounterConfig(role, ref, block.width, block.max_rate, reset, at)
        for role, site in self.section.counters.items():
            path = (*self.path, "counters", role)
            ref = self._site_ref(site.source, (*path, "source"))
            reset = None
            if site.reset_tag is not None:
                reset = self._site_ref(site.reset_tag, (*path, "reset_tag"))
                if reset is not None and ref is not None and reset.device != ref.device:
                    self.problem(
                        (*path, "reset_tag"),
                        f"{reset}: the reset signal is a tag of the counter's device {ref.device}",
                    )
            if ref is not None:
                found[role] = CounterConfig(
                    role, ref, site.width, site.max_rate, reset, self.top.at(path)
                )
        if len(found) > 2:
            roles = ", ".join(sorted(found))
            self.problem(
                (*self.path, "counters") if self.section.counters else (*self.path, "devices"),
                f"the machine gets counters {roles}: at most two roles, the third follows "
                "(good = total - reject)",
            )
        order = {r: i for i, r in enumerate(("total", "good", "reject"))}
        return tuple(sorted(found.values(), key=lambda c: order[c.role]))

    def _alarms(
        self, state: StateConfig | None, mode: ModeConfig | None
    ) -> tuple[AlarmConfig, ...]:
        found: dict[str, AlarmConfig] = {}
        givers: dict[str, str] = {}
        known: dict[str, TagRef] = dict(state.inputs) if state is not None else {}
        if mode is not None:
            known.setdefault(mode.name, mode.ref)
        for device in self._givers("alarms"):
            assert device.machine is not None
            for name, block in device.machine.alarms.items():
                path: Path_ = ("machine", "alarms", name)
                if name in givers:
                    self.problem(
                        (*self.path, "devices"),
                        f"{givers[name]} and {device.id} both give the alarm {name!r}: alarm "
                        "names are unique in a machine",
                    )
                    continue
                givers[name] = device.id
                refs = {}
                for key, tag in block.inputs.items():
                    ref = self._profile_ref(device, tag, (*path, "inputs", key))
                    if ref is not None:
                        refs[key] = ref
                alarm = self._alarm(name, block, refs, path, device.machine_source, known)
                if alarm is not None:
                    found[name] = alarm
        for name, site in self.section.alarms.items():
            path = (*self.path, "alarms", name)
            if name in givers:
                self.problem(
                    path,
                    f"alarm {name!r} is also given by device {givers[name]}'s profile: alarm "
                    "names are unique in a machine, choose another name",
                )
                continue
            refs = {}
            for key, text in site.inputs.items():
                ref = self._site_ref(text, (*path, "inputs", key))
                if ref is not None:
                    refs[key] = ref
            alarm = self._alarm(name, site, refs, path, None, known)
            if alarm is not None:
                found[name] = alarm
        return tuple(found.values())

    def _alarm(
        self,
        name: str,
        block: cfg.AlarmBlock,
        refs: dict[str, TagRef],
        path: Path_,
        source: Source | None,
        known: dict[str, TagRef],
    ) -> AlarmConfig | None:
        """One alarm; its input names mean one tag across the whole machine."""
        for key, ref in refs.items():
            other = known.setdefault(key, ref)
            if other != ref:
                self.problem(
                    (*path, "inputs", key),
                    f"input {key!r} is {ref} here but {other} elsewhere in machine {self.id}: "
                    "a name means one tag in a machine, rename one",
                    source,
                )
                return None
        if len(refs) != len(block.inputs):
            return None
        return AlarmConfig(
            name=name,
            when=block.when,
            severity=block.severity,
            message=block.message,
            min_repeat_s=block.min_repeat,
            inputs=refs,
            at=self.top.at(path, source),
            when_at=self.top.at((*path, "when"), source),
        )

    def _energy(self) -> EnergyConfig | None:
        block = self.section.energy
        if block is None:
            return None
        path = (*self.path, "energy")
        ref = self._site_ref(block.meter, (*path, "meter"))
        return None if ref is None else EnergyConfig(ref, block.register_kind, self.top.at(path))

    def _calendar(self) -> str | None:
        name = self.section.calendar
        if name is not None and name not in self.top.section.calendars:
            known = ", ".join(sorted(self.top.section.calendars)) or "none"
            self.problem(
                (*self.path, "calendar"),
                f"no calendar {name!r} in analytics.calendars (known: {known})",
            )
        return name

    def _ideal_cycle(self) -> float | None:
        if self.section.ideal_cycle is not None:
            return self.section.ideal_cycle
        given = {
            d.id: d.machine.ideal_cycle
            for d in self.listed
            if d.machine is not None and d.machine.ideal_cycle is not None
        }
        if len(set(given.values())) > 1:
            shown = ", ".join(f"{k} {v:g}s" for k, v in given.items())
            self.problem(
                (*self.path, "devices"),
                f"the profiles give different ideal cycles ({shown}): set ideal_cycle here",
            )
            return None
        return next(iter(given.values()), None)
