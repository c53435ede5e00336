"""Merge one device of a site file with its profile, remembering where each value came from.

The site's values win over the profile's; every override is recorded as a
change line (``config show``). Problems found here, or by the driver's own
validation of the merged options, are reported at the line that set the value,
in the site file or in the profile. Nothing here touches a device or the network.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
from drivers.base import ConfigError, DeviceOptions, DriverSpec

DEFAULT_GROUP_INTERVAL = 1.0


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
        if not self._groups_known(parsed, groups):
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
            machine_source=profile.source_of(("machine",)) if profile else None,
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
        tags: dict[str, dict[str, Any]] = {}
        if profile:
            for name, attrs in profile.model.tags.items():
                tags[name] = dict(attrs)
                self._map(("tags", name), profile.source_of(("tags", name)), ("tags", name))
                for key in attrs:
                    where = profile.source_of(("tags", name, key))
                    self._map(("tags", name, key), where, ("tags", name, key))
        for name, attrs in self.section.tags.items():
            here = (*dev, "tags", name)
            if name in tags:
                old = tags[name]
                self.changes += [
                    f"tag {name}: {k} {shown(k, old.get(k, '(unset)'))} -> {shown(k, v)}"
                    for k, v in attrs.items()
                ]
                tags[name].update(attrs)
                for key in attrs:
                    self.origin[("tags", name, key)] = (src, (*here, key))
            else:
                tags[name] = dict(attrs)
                self.changes.append(f"tag {name} added: {_flow(attrs)}")
                self._map(("tags", name), src, here)
        for index, name in enumerate(self.section.drop_tags):
            if tags.pop(name, None) is None:
                self._problem((*dev, "drop_tags", index), f"no tag {name!r} to drop")
            else:
                self.changes.append(f"tag {name} dropped")
        return {
            name: {key: self._sub(value, ("tags", name, key)) for key, value in attrs.items()}
            for name, attrs in tags.items()
        }

    def _problem(self, path: Path_, message: str) -> None:
        """A problem at ``path`` of the site file."""
        self.problems.append(Problem(self.source.where(path), dotted(path), message))

    def _map(self, options_path: Path_, source: Source, source_path: Path_) -> None:
        self.origin[options_path] = (source, source_path)

    def _report(self, loc: tuple[str | int, ...], message: str) -> None:
        for cut in range(len(loc), -1, -1):
            if loc[:cut] in self.origin:
                source, base = self.origin[loc[:cut]]
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


def _flow(attrs: Mapping[str, Any]) -> str:
    return "{" + ", ".join(f"{k}: {shown(k, v)}" for k, v in attrs.items()) + "}"
