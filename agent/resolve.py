"""Load a site file, merge each device with its profile, validate everything.

The result is a :class:`Site` ready to run, or a :class:`ConfigFileError`
listing *every* problem as ``FILE:LINE: path.to.key: what is wrong``. A value
that came from a profile is reported at its line in the profile file. Nothing
here touches a device or the network.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from agent import config as cfg
from agent.paths import default_data_dir
from agent.yamlsrc import ConfigFileError, Path_, Problem, Source, Where, dotted, load
from drivers import registry
from drivers.base import ConfigError, DeviceOptions, DriverSpec, problems_from_validation_error

SHIPPED_PROFILES = Path(__file__).resolve().parent.parent / "config" / "profiles"
DEFAULT_GROUP_INTERVAL = 1.0

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class Profile:
    """A loaded profile and where it came from."""

    name: str
    model: cfg.ProfileFile
    source: Source
    sha256: str

    @property
    def short_hash(self) -> str:
        """First 12 hex digits of the file's SHA-256: what a site pins."""
        return self.sha256[:12]


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
    mqtt_password: str | None = None
    secrets: frozenset[str] = field(default_factory=frozenset)

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


def load_profile(name: str, folders: list[Path]) -> Profile:
    """Find ``name``.yaml in ``folders`` (first match wins) and validate it."""
    for folder in folders:
        path = folder / f"{name}.yaml"
        if path.is_file():
            source = load(path)
            problems: list[Problem] = []
            model = _validate(cfg.ProfileFile, source.data, (), source, problems)
            if model is not None and model.profile != name:
                problems.append(
                    Problem(
                        source.where(("profile",)),
                        "profile",
                        f"{model.profile!r} does not match the file name {name!r}",
                    )
                )
            if problems or model is None:
                raise ConfigFileError(problems)
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            return Profile(name, model, source, digest)
    searched = ", ".join(str(f) for f in folders)
    raise FileNotFoundError(f"profile {name!r} not found (searched {searched})")


def profile_folders(site_dir: Path, extra: list[Path]) -> list[Path]:
    """Where profiles are looked up, in order."""
    return [
        *(p if p.is_absolute() else site_dir / p for p in extra),
        site_dir / "profiles",
        Path("/etc/edge-agent/profiles"),
        SHIPPED_PROFILES,
    ]


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
            raise ConfigFileError(self.problems)
        return self._site(top, devices, password)

    def _site(self, top: cfg.SiteFile, devices: list[DeviceConfig], password: str | None) -> Site:
        data_dir = self._path(top.agent.data_dir) if top.agent.data_dir else default_data_dir()
        secrets = {s for s in (password,) if s}
        secrets |= {str(self._value(p)) for p in self.source.env_paths if self._is_secret(p)}
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
            secrets=frozenset(s for s in secrets if s),
        )

    @staticmethod
    def _is_secret(path: Path_) -> bool:
        return any(
            isinstance(p, str) and ("password" in p or "secret" in p or "token" in p) for p in path
        )

    def _value(self, path: Path_) -> Any:
        node = self.source.data
        for part in path:
            node = node[part]
        return node

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
        options = self._options(kind, profile)
        if not self._protocol_matches(spec, options, profile):
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
        name = self.section.profile
        if name is None:
            return None
        try:
            return load_profile(name, self.folders)
        except FileNotFoundError as exc:
            self.site._problem((*self.path, "profile"), str(exc))
        except ConfigFileError as exc:
            self.site.problems.extend(exc.problems)
        return None

    def _options(self, kind: str, profile: Profile | None) -> dict[str, Any]:
        dev = (*self.path,)
        src = self.site.source
        self._map(("connection",), src, (*dev, "connection"))
        protocol: dict[str, Any] = {}
        if profile:
            protocol.update(profile.model.protocol)
            for key in profile.model.protocol:
                self.origin[("protocol", key)] = (profile.source, ("protocol", key))
        protocol.update(self.section.protocol)
        for key in self.section.protocol:
            self.origin[("protocol", key)] = (src, (*dev, "protocol", key))
        if self.section.unit_id is not None:
            protocol["unit_id"] = self.section.unit_id
            self.origin[("protocol", "unit_id")] = (src, (*dev, "unit_id"))
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
                self._map(("tags", name), profile.source, ("tags", name))
        for name, attrs in self.section.tags.items():
            here = (*dev, "tags", name)
            if name in tags:
                for key, value in attrs.items():
                    old = tags[name].get(key, "(unset)")
                    self.changes.append(f"tag {name}: {key} {old} -> {value}")
                tags[name].update(attrs)
                for key in attrs:
                    self.origin[("tags", name, key)] = (src, (*here, key))
            else:
                tags[name] = dict(attrs)
                self.changes.append(f"tag {name} added")
                self._map(("tags", name), src, here)
        for index, name in enumerate(self.section.drop_tags):
            if tags.pop(name, None) is None:
                self.site._problem((*dev, "drop_tags", index), f"no tag {name!r} to drop")
            else:
                self.changes.append(f"tag {name} dropped")
        return tags

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
