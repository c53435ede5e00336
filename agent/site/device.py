"""Merge one device of a site file with its profile, remembering where each value came from.

The site's values win over the profile's; every override is recorded as a
change line (``config show``). Problems found here, or by the driver's own
validation of the merged options, are reported at the line that set the value,
in the site file or in the profile. Nothing here touches a device or the network.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from agent.formula import Formula, FormulaError, UnknownName, compile_formula
from agent.site import models as cfg
from agent.site.params import ParamError, Scalar, substitute
from agent.site.profiles import (
    Profile,
    device_params,
    load_profile,
    pin_problem,
    shown,
    split_pin,
)
from agent.site.source import ConfigFileError, Path_, Problem, Source, dotted
from drivers import registry
from drivers.base import (
    ConfigError,
    DeviceOptions,
    DriverSpec,
    TagBase,
    problems_from_validation_error,
)

DEFAULT_GROUP_INTERVAL = 1.0
_DERIVED_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


@dataclass(frozen=True, slots=True)
class DerivedTag:
    """A ``compute:`` entry of the device: its compiled formula and its tag attributes."""

    name: str
    formula: Formula
    attrs: TagBase
    """The poll group of its inputs, and the unit, description, deadband, heartbeat given."""

    @property
    def datatype(self) -> str:
        """``Double`` or ``Boolean``: the Sparkplug names of what it gives."""
        return "Boolean" if self.formula.kind == "bool" else "Double"


@dataclass(frozen=True, slots=True)
class DeviceConfig:
    """One device, merged with its profile and validated by its driver."""

    id: str
    kind: str
    spec: DriverSpec
    options: DeviceOptions
    poll_groups: dict[str, float]
    enabled: bool = True
    profile: str | None = None
    profile_hash: str | None = None
    changes: tuple[str, ...] = ()
    vendor: str | None = None
    """The profile's equipment maker and model, for the cloud's device attributes."""
    model: str | None = None
    machine: cfg.MachineBlock | None = None
    """The profile's ``machine:`` block (tags are this device's), None without one."""
    machine_source: Source | None = field(default=None, compare=False, repr=False)
    """The profile file that wrote :attr:`machine`, to locate its problems."""
    derived: tuple[DerivedTag, ...] = ()
    """The derived tags (``compute:``), in the order they are computed."""


def merge_device(
    section: cfg.DeviceSection,
    path: Path_,
    folders: list[Path],
    source: Source,
    problems: list[Problem],
) -> DeviceConfig | None:
    """The device at ``path`` of the site file ``source``, merged and validated.

    Its profile is looked up in ``folders``. Every problem is appended to
    ``problems``; the result is None when there was one.
    """
    return _DeviceBuilder(section, path, folders, source, problems).build()


class _DeviceBuilder:
    """Merges one device with its profile, remembering where each value came from."""

    def __init__(
        self,
        section: cfg.DeviceSection,
        path: Path_,
        folders: list[Path],
        source: Source,
        problems: list[Problem],
    ) -> None:
        self.source = source
        self.problems = problems
        self.section = section
        self.path = path
        self.folders = folders
        # options path -> (source, path in that source), for locating driver problems
        self.origin: dict[Path_, tuple[Source, Path_]] = {}
        self.changes: list[str] = []
        self.params: dict[str, Scalar] = {}
        self.params_ok = True
        self.compute: dict[str, dict[str, Any]] = {}
        self.profile: Profile | None = None
        self.profile_tags: Mapping[str, Mapping[str, Any]] = {}

    def build(self) -> DeviceConfig | None:
        section = self.section
        kind = next(iter(section.connection))
        if kind not in registry.kinds():
            self._problem(
                (*self.path, "connection", kind),
                f"unknown connection kind; use one of {', '.join(registry.kinds())}",
            )
            return None
        spec = registry.spec_for(kind)
        profile = self._profile()
        if section.profile and profile is None:
            return None
        self._params(profile)
        self._compute_entries(profile)
        options = self._options(kind, profile)
        if not self.params_ok or not self._protocol_matches(spec, options, profile):
            return None
        groups = self._poll_groups(profile)
        try:
            parsed = spec.parse(options)
        except ConfigError as exc:
            for problem in exc.problems:
                self._report(problem.loc, problem.message)
            return None
        known = self._groups_known(parsed, groups)
        derived = _Derived(self, parsed).build() if known else None
        if derived is None:
            return None
        return DeviceConfig(
            id=section.id,
            kind=kind,
            spec=spec,
            options=parsed,
            poll_groups=groups,
            enabled=section.enabled,
            profile=profile.name if profile else None,
            profile_hash=profile.short_hash if profile else None,
            changes=tuple(self.changes),
            vendor=profile.model.vendor if profile else None,
            model=profile.model.model if profile else None,
            machine=profile.model.machine if profile else None,
            # only with a machine block: the profile's parsed file is not kept for nothing
            machine_source=(
                profile.source_of(("machine",)) if profile and profile.model.machine else None
            ),
            derived=derived,
        )

    def _profile(self) -> Profile | None:
        if self.section.profile is None:
            return None
        name, pin = split_pin(self.section.profile)
        try:
            profile = load_profile(name, self.folders)
        except FileNotFoundError as exc:
            self._problem((*self.path, "profile"), str(exc))
            return None
        except ConfigFileError as exc:
            self.problems.extend(exc.problems)
            return None
        mismatch = pin_problem(profile, pin) if pin else None
        if mismatch:
            self._problem((*self.path, "profile"), mismatch)
            return None
        return profile

    def _params(self, profile: Profile | None) -> None:
        self.params, problems = device_params(profile, self.section.params)
        for name, message in problems:
            self._problem((*self.path, "params", name), message)
            self.params_ok = False
        defaults = profile.defaults() if profile else {}
        self.changes += [
            f"param {k}: {defaults[k]!r} -> {v!r}"
            for k, v in self.section.params.items()
            if k in defaults and defaults[k] != v
        ]

    def _sub(self, value: Any, loc: Path_) -> Any:
        """``value`` with ``${param...}`` substituted; a bad reference is reported at ``loc``."""
        try:
            return substitute(value, self.params)
        except ParamError as exc:
            self._report(loc, str(exc))
            self.params_ok = False
            return value

    def _options(self, kind: str, profile: Profile | None) -> dict[str, Any]:
        dev = (*self.path,)
        src = self.source
        self._map(("connection",), src, (*dev, "connection"))
        protocol: dict[str, Any] = {}
        if profile:
            protocol.update(profile.model.protocol)
            for key in profile.model.protocol:
                where = profile.source_of(("protocol", key))
                self.origin[("protocol", key)] = (where, ("protocol", key))
        site_protocol = dict(self.section.protocol)
        self.origin.update({("protocol", k): (src, (*dev, "protocol", k)) for k in site_protocol})
        if self.section.unit_id is not None:
            site_protocol["unit_id"] = self.section.unit_id
            self.origin[("protocol", "unit_id")] = (src, (*dev, "unit_id"))
        self.changes += [
            f"protocol {k}: {protocol[k]!r} -> {v!r}"
            for k, v in site_protocol.items()
            if k in protocol and protocol[k] != v
        ]
        self.changes += [
            f"protocol {k}: {v!r} added" for k, v in site_protocol.items() if k not in protocol
        ]
        protocol.update(site_protocol)
        protocol = {k: self._sub(v, ("protocol", k)) for k, v in protocol.items()}
        return {
            "connection": self.section.connection,
            "protocol": protocol,
            "tags": self._tags(profile),
        }

    def _tags(self, profile: Profile | None) -> dict[str, Any]:
        src, dev = self.source, self.path
        # The profile's tags as they are (shared, never changed here): a site names one
        # profile for many devices, so nothing per tag is copied or mapped unless the
        # site changes it. Their origins are looked up when a problem needs one.
        self.profile_tags = profile.model.tags if profile else {}
        self.profile = profile
        tags: dict[str, Mapping[str, Any]] = dict(self.profile_tags)
        for name, attrs in self.section.tags.items():
            here = (*dev, "tags", name)
            if name in tags:
                old = tags[name]
                self.changes += [
                    f"tag {name}: {k} {shown(k, old.get(k, '(unset)'))} -> {shown(k, v)}"
                    for k, v in attrs.items()
                ]
                tags[name] = {**old, **attrs}
                for key in attrs:
                    self.origin[("tags", name, key)] = (src, (*here, key))
            else:
                tags[name] = dict(attrs)
                self.changes.append(f"tag {name} added: {_flow(attrs)}")
                self._map(("tags", name), src, here)
        for index, name in enumerate(self.section.drop_tags):
            if tags.pop(name, None) is not None:
                self.changes.append(f"tag {name} dropped")
            elif self.compute.pop(name, None) is not None:
                self.changes.append(f"derived tag {name} dropped")
            else:
                self._problem((*dev, "drop_tags", index), f"no tag {name!r} to drop")
        return {name: self._substituted(name, attrs) for name, attrs in tags.items()}

    def _substituted(self, name: str, attrs: Mapping[str, Any]) -> Mapping[str, Any]:
        """``attrs`` with ``${param...}`` substituted (``attrs`` itself when it has none)."""
        for value in attrs.values():
            if isinstance(value, str) and "${" in value:
                return {key: self._sub(value, ("tags", name, key)) for key, value in attrs.items()}
        return attrs

    def _origin(self, options_path: Path_) -> tuple[Source, Path_] | None:
        """Where ``options_path`` of the merged options was written, if known."""
        found = self.origin.get(options_path)
        if found is not None or self.profile is None:
            return found
        if len(options_path) in (2, 3) and options_path[0] == "tags":
            attrs = self.profile_tags.get(str(options_path[1]))
            if attrs is not None and (len(options_path) == 2 or options_path[2] in attrs):
                return self.profile.source_of(options_path), options_path
        return None

    def _compute_entries(self, profile: Profile | None) -> None:
        """The ``compute:`` entries: the profile's, then the site's additions and changes."""
        if profile:
            for name, entry in profile.model.compute.items():
                self.compute[name] = entry.model_dump(exclude_unset=True)
                where = profile.source_of(("compute", name))
                self._map(("compute", name), where, ("compute", name))
        src, here = self.source, (*self.path, "compute")
        for name, attrs in self.section.compute.items():
            if name in self.compute:
                old = self.compute[name]
                self.changes += [
                    f"derived tag {name}: {k} {shown(k, old.get(k, '(unset)'))} -> {shown(k, v)}"
                    for k, v in attrs.items()
                ]
                old.update(attrs)
                for key in attrs:
                    self.origin[("compute", name, key)] = (src, (*here, name, key))
            else:
                self.compute[name] = dict(attrs)
                self.changes.append(f"derived tag {name} added: {_flow(attrs)}")
                self._map(("compute", name), src, (*here, name))

    def _problem(self, path: Path_, message: str) -> None:
        """A problem at ``path`` of the site file."""
        self.problems.append(Problem(self.source.where(path), dotted(path), message))

    def _map(self, options_path: Path_, source: Source, source_path: Path_) -> None:
        self.origin[options_path] = (source, source_path)

    def _report(self, loc: tuple[str | int, ...], message: str) -> None:
        for cut in range(len(loc), -1, -1):
            found = self._origin(loc[:cut])
            if found is not None:
                source, base = found
                full = (*base, *loc[cut:])
                shown = (*self.path, *loc) if source is not self.source else full
                self.problems.append(Problem(source.where(full), dotted(shown), message))
                return
        self._problem((*self.path, *loc), message)

    def _protocol_matches(
        self, spec: DriverSpec, options: dict[str, Any], profile: Profile | None
    ) -> bool:
        declared = options["protocol"].get("kind", spec.protocol)
        if declared == spec.protocol:
            return True
        where = "profile " + profile.name if profile else "protocol.kind"
        self._report(
            ("protocol", "kind"),
            f"{where} speaks {declared!r} but the connection is "
            f"{next(iter(self.section.connection))!r}",
        )
        return False

    def _poll_groups(self, profile: Profile | None) -> dict[str, float]:
        groups = {"default": DEFAULT_GROUP_INTERVAL}
        if profile:
            groups.update(profile.model.poll_groups)
        self.changes += [
            f"poll group {k}: {groups[k]:g}s -> {v:g}s"
            if k in groups
            else f"poll group {k}: {v:g}s added"
            for k, v in self.section.poll_groups.items()
            if groups.get(k) != v
        ]
        groups.update(self.section.poll_groups)
        return groups

    def _groups_known(self, parsed: DeviceOptions, groups: dict[str, float]) -> bool:
        ok = True
        for name, tag in parsed.tags.items():
            if tag.group not in groups:
                known = ", ".join(sorted(groups))
                self._report(
                    ("tags", name, "group"), f"unknown poll group {tag.group!r} (known: {known})"
                )
                ok = False
        return ok


class _Derived:
    """Checks and compiles the device's ``compute:`` entries once its tags are known."""

    def __init__(self, builder: _DeviceBuilder, parsed: DeviceOptions) -> None:
        self.b = builder
        self.tags = parsed.tags
        self.ok = True

    def problem(self, loc: Path_, message: str) -> None:
        self.b._report(loc, message)
        self.ok = False

    def build(self) -> tuple[DerivedTag, ...] | None:
        entries = self.entries()
        # every name first, to tell a forward reference or a cycle from an unknown tag
        uses = {name: self.uses(name, entry.expr) for name, entry in entries.items()}
        groups: dict[str, str] = {name: tag.group for name, tag in self.tags.items()}
        done: list[DerivedTag] = []
        order = list(entries)
        for index, (name, entry) in enumerate(entries.items()):
            loc = ("compute", name, "expr")
            later = [u for u in uses.get(name, ()) if u in entries and u not in order[:index]]
            if later:
                self.problem(loc, self.ordering(name, later[0], uses, order))
                continue
            try:
                formula = compile_formula(entry.expr, [*self.tags, *order[:index]])
            except FormulaError as exc:
                self.problem(loc, self.formula_problem(exc))
                continue
            used = {groups[i] for i in formula.inputs if i in groups}
            if len(used) > 1:
                self.problem(loc, self.groups_problem(formula, groups))
                continue
            group = used.pop() if used else "default"
            groups[name] = group
            attrs = TagBase(
                group=group,
                unit=entry.unit,
                description=entry.description,
                deadband=entry.deadband,
                heartbeat=entry.heartbeat,
            )
            done.append(DerivedTag(name, formula, attrs))
        return tuple(done) if self.ok else None

    def entries(self) -> dict[str, cfg.ComputeTag]:
        """The valid entries, parameters substituted; every problem reported."""
        found: dict[str, cfg.ComputeTag] = {}
        for name, attrs in self.b.compute.items():
            here = ("compute", name)
            if name in self.tags:
                self.problem(
                    here,
                    f"the device already has a tag {name!r}: give the derived tag another name",
                )
                continue
            if not _DERIVED_NAME.match(name):
                self.problem(
                    here,
                    "a derived tag's name is 1-64 letters, digits and '_', not starting "
                    "with a digit (a formula must be able to name it)",
                )
                continue
            values = {key: self.b._sub(value, (*here, key)) for key, value in attrs.items()}
            try:
                found[name] = cfg.ComputeTag.model_validate(values)
            except ValidationError as exc:
                for problem in problems_from_validation_error(exc, here):
                    self.problem(problem.loc, problem.message)
        return found

    def uses(self, name: str, expr: str) -> tuple[str, ...]:
        """The derived tags ``expr`` names (none when it does not compile)."""
        try:
            formula = compile_formula(expr, [*self.tags, *self.b.compute])
        except FormulaError:
            return ()
        return tuple(i for i in formula.inputs if i in self.b.compute)

    def ordering(
        self, name: str, first: str, uses: Mapping[str, tuple[str, ...]], order: list[str]
    ) -> str:
        if first == name:
            return f"the formula of {name!r} uses {name!r} itself"
        cycle = _path(first, name, uses)
        if cycle:
            return f"derived tags use each other: {' -> '.join([name, *cycle])}"
        return (
            f"{first!r} is declared below {name!r}: a derived tag may use only the tags "
            "read and the derived tags declared above it; move it up"
        )

    def formula_problem(self, exc: FormulaError) -> str:
        if isinstance(exc, UnknownName):
            known = sorted(self.tags)
            listed = ", ".join(known[:12]) + (", ..." if len(known) > 12 else "")
            return f"{exc.message} (column {exc.column}; the device's tags: {listed or 'none'})"
        return str(exc)

    def groups_problem(self, formula: Formula, groups: Mapping[str, str]) -> str:
        by_group: dict[str, list[str]] = {}
        for name in formula.inputs:
            by_group.setdefault(groups[name], []).append(name)
        listed = "; ".join(f"{g}: {', '.join(n)}" for g, n in sorted(by_group.items()))
        return (
            f"uses tags of more than one poll group ({listed}): a reading holds one group, "
            "so a derived tag combines tags of one group; move them into one group"
        )


def _path(start: str, goal: str, uses: Mapping[str, tuple[str, ...]]) -> list[str]:
    """Derived tags from ``start`` to ``goal`` along ``uses``, or [] when there is no path."""
    stack: list[tuple[str, list[str]]] = [(start, [start])]
    seen: set[str] = set()
    while stack:
        node, trail = stack.pop()
        if node == goal:
            return trail
        if node in seen:
            continue
        seen.add(node)
        stack.extend((nxt, [*trail, nxt]) for nxt in uses.get(node, ()))
    return []


def _flow(attrs: Mapping[str, Any]) -> str:
    return "{" + ", ".join(f"{k}: {shown(k, v)}" for k, v in attrs.items()) + "}"
