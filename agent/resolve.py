"""Load a site file, merge each device with its profile, validate everything.

The result is a :class:`Site` ready to run, or a :class:`ConfigFileError`
listing *every* problem as ``FILE:LINE: path.to.key: what is wrong``. A value
that came from a profile is reported at its line in the profile file. Nothing
here touches a device or the network.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from agent import config as cfg
from agent.params import ParamError, Scalar, substitute
from agent.paths import default_data_dir
from agent.profiles import (
    Profile,
    device_params,
    load_profile,
    pin_problem,
    shown,
    split_pin,
)
from agent.secretmask import mask_problems, secret_values
from agent.yamlsrc import ConfigFileError, Path_, Problem, Source, Where, dotted, load
from drivers import registry
from drivers.base import ConfigError, DeviceOptions, DriverSpec, problems_from_validation_error


def _shipped(folder: str) -> Path:
    """``config/<folder>`` of a checkout, else ``<prefix>/share/edge-agent/<folder>`` (a wheel)."""
    checkout = Path(__file__).resolve().parent.parent / "config" / folder
    installed = Path(sys.prefix) / "share" / "edge-agent" / folder
    return checkout if checkout.is_dir() or not installed.is_dir() else installed


SHIPPED_PROFILES = _shipped("profiles")
SHIPPED_EXAMPLES = _shipped("examples")
DEFAULT_GROUP_INTERVAL = 1.0

M = TypeVar("M", bound=BaseModel)


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


@dataclass(frozen=True, slots=True)
class LinkUse:
    """A shared serial line and how much of its time the configured polls need."""

    link: str
    baud: int
    utilisation: float
    """Line time needed per second (1.0 = the whole line), a lower bound."""
    devices: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Site:
    """A validated site: everything the agent needs to run."""

    file: Path
    agent: cfg.AgentSection
    mqtt: cfg.MqttSection
    buffer: cfg.BufferSection
    devices: list[DeviceConfig]
    data_dir: Path
    status_socket: Path
    buffer_path: Path
    # repr=False: a printed Site (a debug line, a config dump) must not show a secret
    mqtt_password: str | None = field(default=None, repr=False)
    secrets: frozenset[str] = field(default_factory=frozenset, repr=False)
    """Every secret value of the configuration (passwords, tokens), to mask in output."""
    links: tuple[LinkUse, ...] = ()
    metrics: cfg.MetricsSection = field(default_factory=cfg.MetricsSection)

    @property
    def warnings(self) -> list[str]:
        """Things that are valid but will not work well: an overloaded serial line."""
        return [
            f"serial line {u.link} at {u.baud} baud needs {u.utilisation:.0%} of its capacity "
            f"for {', '.join(u.devices)}: polls will overrun; poll less often, read fewer "
            "registers, or raise the baud rate"
            for u in self.links
            if u.utilisation > 1.0
        ]

    def device(self, device_id: str) -> DeviceConfig:
        """The device named ``device_id``; ``KeyError`` if there is none."""
        for device in self.devices:
            if device.id == device_id:
                return device
        raise KeyError(device_id)


def load_site(file: Path, env: Mapping[str, str] | None = None) -> Site:
    """Load and validate ``file``; raise :class:`ConfigFileError` with every problem."""
    source = load(file, env)
    return _SiteBuilder(source).build()


def profile_folders(site_dir: Path, extra: list[Path]) -> list[Path]:
    """Where profiles are looked up, in order."""
    return [
        *(p if p.is_absolute() else site_dir / p for p in extra),
        site_dir / "profiles",
        Path("/etc/edge-agent/profiles"),
        SHIPPED_PROFILES,
    ]


def _link_uses(devices: list[DeviceConfig]) -> tuple[LinkUse, ...]:
    """Sum the line time every enabled device on each serial line needs."""
    uses: dict[str, tuple[int, float, list[str]]] = {}
    for device in devices:
        estimate = getattr(device.spec, "link_load", None)
        load = estimate(device.options, device.poll_groups) if estimate and device.enabled else None
        if load is None:
            continue
        baud, busy, names = uses.get(load.link, (load.baud, 0.0, []))
        uses[load.link] = (baud, busy + load.seconds_per_second, [*names, device.id])
    return tuple(LinkUse(k, b, u, tuple(n)) for k, (b, u, n) in sorted(uses.items()))


def _validate(
    model: type[M], data: Any, path: Path_, source: Source, problems: list[Problem]
) -> M | None:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems.extend(
            Problem(source.where(p.loc), dotted(p.loc), p.message)
            for p in problems_from_validation_error(exc, path)
        )
        return None


class _SiteBuilder:
    """Collects every problem of a site file instead of stopping at the first."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.problems: list[Problem] = []
        self.site_dir = source.file.resolve().parent

    def build(self) -> Site:
        data = self.source.data
        if not isinstance(data, dict):
            raise ConfigFileError(
                [
                    Problem(
                        Where(self.source.file, 1),
                        "",
                        "a site file is a mapping with agent, mqtt, buffer, devices",
                    )
                ]
            )
        sections = {k: v for k, v in data.items() if k != "devices"}
        top = _validate(cfg.SiteFile, {**sections, "devices": []}, (), self.source, self.problems)
        raw_devices = data.get("devices") or []
        if not isinstance(raw_devices, list):
            self._problem(("devices",), "must be a list of devices")
            raw_devices = []
        folders = profile_folders(self.site_dir, top.profiles if top else [])
        devices = self._devices(raw_devices, folders)
        password = self._password(top.mqtt) if top else None
        if top is not None and top.mqtt.tls is not None:
            self._check_tls_files(top.mqtt.tls)
        if self.problems or top is None:
            raise ConfigFileError(mask_problems(self.problems, self._secrets(password)))
        return self._site(top, devices, password)

    def _site(self, top: cfg.SiteFile, devices: list[DeviceConfig], password: str | None) -> Site:
        data_dir = self._path(top.agent.data_dir) if top.agent.data_dir else default_data_dir()
        return Site(
            file=self.source.file,
            agent=top.agent,
            mqtt=top.mqtt,
            buffer=top.buffer,
            devices=devices,
            data_dir=data_dir,
            status_socket=self._path(top.agent.status_socket)
            if top.agent.status_socket
            else data_dir / "status.sock",
            buffer_path=self._path(top.buffer.path) if top.buffer.path else data_dir / "buffer.db",
            mqtt_password=password,
            secrets=self._secrets(password),
            links=_link_uses(devices),
            metrics=top.metrics,
        )

    def _secrets(self, password: str | None) -> frozenset[str]:
        """The password read from password_file and every value under a secret key.

        Literal or from ``${ENV}``, wherever it is (mqtt.password, an OPC UA
        connection's password...): all of them are masked in logs and errors.
        """
        found = {password} if password else set()
        found.update(secret_values(self.source.data))
        return frozenset(found)

    def _path(self, path: Path) -> Path:
        return path if path.is_absolute() else self.site_dir / path

    def _password(self, mqtt: cfg.MqttSection) -> str | None:
        if mqtt.password_file is None:
            return mqtt.password
        try:
            return self._path(mqtt.password_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            self._problem(
                ("mqtt", "password_file"), f"cannot read {mqtt.password_file}: {exc.strerror}"
            )
            return None

    def _check_tls_files(self, tls: cfg.TlsSection) -> None:
        for key in ("ca", "cert", "key"):
            path = getattr(tls, key)
            if path is not None and not self._path(path).is_file():
                self._problem(("mqtt", "tls", key), f"file not found: {self._path(path)}")

    def _problem(self, path: Path_, message: str, source: Source | None = None) -> None:
        src = source or self.source
        self.problems.append(Problem(src.where(path), dotted(path), message))

    def _devices(self, raw_devices: list[Any], folders: list[Path]) -> list[DeviceConfig]:
        devices: list[DeviceConfig] = []
        seen: dict[str, int] = {}
        for index, raw in enumerate(raw_devices):
            path: Path_ = ("devices", index)
            section = _validate(cfg.DeviceSection, raw, path, self.source, self.problems)
            if section is None:
                continue
            if section.id in seen:
                self._problem(
                    (*path, "id"),
                    f"duplicate device id {section.id!r} (also devices[{seen[section.id]}])",
                )
                continue
            seen[section.id] = index
            device = _DeviceBuilder(self, section, path, folders).build()
            if device is not None:
                devices.append(device)
        return devices


class _DeviceBuilder:
    """Merges one device with its profile, remembering where each value came from."""

    def __init__(
        self, site: _SiteBuilder, section: cfg.DeviceSection, path: Path_, folders: list[Path]
    ) -> None:
        self.site = site
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
            self.site._problem(
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
        )

    def _profile(self) -> Profile | None:
        if self.section.profile is None:
            return None
        name, pin = split_pin(self.section.profile)
        try:
            profile = load_profile(name, self.folders)
        except FileNotFoundError as exc:
            self.site._problem((*self.path, "profile"), str(exc))
            return None
        except ConfigFileError as exc:
            self.site.problems.extend(exc.problems)
            return None
        mismatch = pin_problem(profile, pin) if pin else None
        if mismatch:
            self.site._problem((*self.path, "profile"), mismatch)
            return None
        return profile

    def _params(self, profile: Profile | None) -> None:
        self.params, problems = device_params(profile, self.section.params)
        for name, message in problems:
            self.site._problem((*self.path, "params", name), message)
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
        src = self.site.source
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
        src, dev = self.site.source, self.path
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
                self.site._problem((*dev, "drop_tags", index), f"no tag {name!r} to drop")
            else:
                self.changes.append(f"tag {name} dropped")
        return {
            name: {key: self._sub(value, ("tags", name, key)) for key, value in attrs.items()}
            for name, attrs in tags.items()
        }

    def _map(self, options_path: Path_, source: Source, source_path: Path_) -> None:
        self.origin[options_path] = (source, source_path)

    def _report(self, loc: tuple[str | int, ...], message: str) -> None:
        for cut in range(len(loc), -1, -1):
            if loc[:cut] in self.origin:
                source, base = self.origin[loc[:cut]]
                full = (*base, *loc[cut:])
                shown = (*self.path, *loc) if source is not self.site.source else full
                self.site.problems.append(Problem(source.where(full), dotted(shown), message))
                return
        self.site._problem((*self.path, *loc), message)

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
