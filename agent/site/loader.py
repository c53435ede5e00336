"""Load a site file, merge each device with its profile, validate everything.

The result is a :class:`Site` ready to run, or a :class:`ConfigFileError`
listing *every* problem as ``FILE:LINE: path.to.key: what is wrong``. A value
that came from a profile is reported at its line in the profile file. Nothing
here touches a device or the network. Merging one device with its profile is
:mod:`agent.site.device`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from agent.paths import ETC_PROFILES, SHIPPED_PROFILES, default_data_dir
from agent.secretmask import mask, secret_values
from agent.site import models as cfg
from agent.site.analytics import Analytics, resolve_analytics
from agent.site.device import DEFAULT_GROUP_INTERVAL, DeviceConfig, merge_device
from agent.site.north import (
    DestinationSecrets,
    check_north,
    check_tls_files,
    literal_secrets,
    mqtt_is_destination,
    read_secret,
)
from agent.site.profiles import load_profile, profile_cache
from agent.site.source import ConfigFileError, Path_, Problem, Source, Where, dotted, load
from drivers.base import EstimatesLineLoad, problems_from_validation_error, shared_parsing

__all__ = [  # DeviceConfig and load_profile live elsewhere; callers import them from here too
    "DEFAULT_GROUP_INTERVAL",
    "DestinationSecrets",
    "DeviceConfig",
    "LinkUse",
    "Site",
    "load_profile",
    "load_site",
    "profile_folders",
]


M = TypeVar("M", bound=BaseModel)
MAX_SOCKET_PATH = 107
"""Bytes of a unix socket path (``sun_path`` is 108 with its terminating NUL)."""


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
    north: tuple[cfg.NorthSection, ...] = ()
    """The ``north:`` destinations as written (the ``mqtt`` one is not among them)."""
    mqtt_is_destination: bool = True
    """The ``mqtt`` section is published to: no ``north:``, or ``mqtt:`` written too."""
    north_secrets: Mapping[str, DestinationSecrets] = field(default_factory=dict, repr=False)
    """Destination id -> its secrets, files read (:mod:`agent.site.north`)."""
    notes: tuple[str, ...] = ()
    """Warnings found while loading (a secret written in the file), part of :attr:`warnings`."""
    analytics: Analytics | None = None
    """The ``analytics:`` block, each machine merged with its devices' profiles; None: off."""

    @property
    def warnings(self) -> list[str]:
        """Things that are valid but will not work well: an overloaded serial line."""
        return (
            [*self.notes]
            + [
                f"serial line {u.link} at {u.baud} baud needs {u.utilisation:.0%} of its capacity "
                f"for {', '.join(u.devices)}: polls will overrun; poll less often, read fewer "
                "registers, or raise the baud rate"
                for u in self.links
                if u.utilisation > 1.0
            ]
            + [
                f"{what} {name!r} contains '.': it is part of every topic, and NATS closes the "
                "connection on such a topic while RabbitMQ turns the dot into '/'; use '-' or '_'"
                for what, name in [
                    ("agent id", self.agent.id),
                    *(("device", d.id) for d in self.devices),
                ]
                if "." in name
            ]
        )

    def device(self, device_id: str) -> DeviceConfig:
        """The device named ``device_id``; ``KeyError`` if there is none."""
        for device in self.devices:
            if device.id == device_id:
                return device
        raise KeyError(device_id)


def load_site(file: Path, env: Mapping[str, str] | None = None) -> Site:
    """Load and validate ``file``; raise :class:`ConfigFileError` with every problem."""
    source = load(file, env)
    with profile_cache(), shared_parsing():
        return _SiteBuilder(source).build()


def profile_folders(site_dir: Path, extra: list[Path]) -> list[Path]:
    """Where profiles are looked up, in order."""
    return [
        *(p if p.is_absolute() else site_dir / p for p in extra),
        site_dir / "profiles",
        ETC_PROFILES,
        SHIPPED_PROFILES,
    ]


def _link_uses(devices: list[DeviceConfig]) -> tuple[LinkUse, ...]:
    """Sum the line time every enabled device on each serial line needs."""
    uses: dict[str, tuple[int, float, list[str]]] = {}
    for device in devices:
        spec = device.spec
        if not device.enabled or not isinstance(spec, EstimatesLineLoad):
            continue
        load = spec.link_load(device.options, device.poll_groups)
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
        self.device_paths: dict[str, Path_] = {}
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
        # devices, destinations, analytics on their own: a bad entry hides no other problem
        own = ("devices", "north", "analytics")
        sections = {k: v for k, v in data.items() if k not in own}
        top = _validate(cfg.SiteFile, {**sections, "devices": []}, (), self.source, self.problems)
        north = self._north(data.get("north"), mqtt_given="mqtt" in data)
        raw_devices = data.get("devices") or []
        if not isinstance(raw_devices, list):
            self._problem(("devices",), "must be a list of devices")
            raw_devices = []
        folders = profile_folders(self.site_dir, top.profiles if top else [])
        devices = self._devices(raw_devices, folders)
        analytics = None
        if data.get("analytics") is not None:
            ids = {
                r["id"] for r in raw_devices if isinstance(r, dict) and isinstance(r.get("id"), str)
            }
            analytics = resolve_analytics(
                data["analytics"], devices, ids, self.source, self.problems
            )
        password = self._password(top.mqtt) if top else None
        if top is not None and top.mqtt.tls is not None:
            check_tls_files(self.site_dir, top.mqtt.tls, ("mqtt",), self._problem)
        secrets: dict[str, DestinationSecrets] = {}
        if top is not None:
            self._check_socket(top.agent, *self._places(top)[:2])
            machines = () if analytics is None else tuple(m.id for m in analytics.machines)
            secrets = check_north(
                top, north, devices, self.site_dir, self._problem, machines=machines
            )
        self._check_shared_lines(devices)
        if self.problems or top is None:
            raise ConfigFileError(mask_problems(self.problems, self._secrets(password, secrets)))
        return self._site(top, devices, password, north, secrets, analytics)

    def _north(self, raw: Any, *, mqtt_given: bool) -> dict[int, cfg.NorthSection] | None:
        """The valid ``north`` entries by index; None when the site has no ``north``."""
        if raw is None:
            return None
        if not isinstance(raw, list):
            self._problem(("north",), "must be a list of destinations")
            return {}
        if not raw and not mqtt_given:
            self._problem(
                ("north",),
                "no destination: name at least one, or leave north out to publish to mqtt",
            )
        found = {}
        for index, entry in enumerate(raw):
            dest = _validate(cfg.NorthSection, entry, ("north", index), self.source, self.problems)
            if dest is not None:
                found[index] = dest
        return found

    def _places(self, top: cfg.SiteFile) -> tuple[Path, Path, Path]:
        """The data dir, the status socket and the buffer file."""
        data_dir = self._path(top.agent.data_dir) if top.agent.data_dir else default_data_dir()
        socket = (
            self._path(top.agent.status_socket)
            if top.agent.status_socket
            else data_dir / "status.sock"
        )
        return (
            data_dir,
            socket,
            (self._path(top.buffer.path) if top.buffer.path else data_dir / "buffer.db"),
        )

    def _check_socket(self, agent: cfg.AgentSection, data_dir: Path, socket: Path) -> None:
        """A socket path the kernel cannot bind would stop `run` naming no key."""
        size = len(os.fsencode(socket))
        if size <= MAX_SOCKET_PATH:
            return
        limit = f"a unix socket path may have at most {MAX_SOCKET_PATH}"
        if agent.status_socket is not None:
            key, text = (
                "status_socket",
                f"the status socket path is {size} bytes long; {limit}: choose a shorter path",
            )
        else:
            where = "" if agent.data_dir is not None else " (in the default data dir)"
            key = "data_dir" if agent.data_dir is not None else ""
            text = (
                f"the status socket path {socket}{where} is {size} bytes long; {limit}: "
                f"choose a shorter data_dir or set agent.status_socket"
            )
        self._problem(("agent", key) if key else ("agent",), text)

    def _check_shared_lines(self, devices: list[DeviceConfig]) -> None:
        """Devices on one serial port share one line, so one framing: run cannot open two."""
        first: dict[str, tuple[str, str]] = {}
        protocol: dict[str, tuple[str, str]] = {}
        for device in devices:
            spec = device.spec
            if not device.enabled or not isinstance(spec, EstimatesLineLoad):
                continue
            load = spec.link_load(device.options, device.poll_groups)
            if load is None:
                continue
            speaker, kind = protocol.setdefault(load.link, (device.id, device.kind))
            if kind != device.kind:
                # Each driver owns the port it opens: two protocols on one port would
                # interleave their frames on the wire.
                self._problem(
                    (*self.device_paths[device.id], "connection"),
                    f"{load.link} is used by {speaker} ({kind}); this device speaks "
                    f"{device.kind}: one serial port carries one protocol; put the devices "
                    "on separate RS-485 lines or ports",
                )
                continue
            owner, framing = first.setdefault(load.link, (device.id, load.framing))
            if framing != load.framing:
                self._problem(
                    (*self.device_paths[device.id], *load.settings),
                    f"{load.link} is used by {owner} at {framing}; this device asks for "
                    f"{load.framing}: every device on one serial line must use the same "
                    "baud, parity, stop_bits and byte_size",
                )

    def _site(
        self,
        top: cfg.SiteFile,
        devices: list[DeviceConfig],
        password: str | None,
        north: dict[int, cfg.NorthSection] | None,
        secrets: dict[str, DestinationSecrets],
        analytics: Analytics | None,
    ) -> Site:
        data_dir, socket, buffer_path = self._places(top)
        return Site(
            file=self.source.file,
            agent=top.agent,
            mqtt=top.mqtt,
            buffer=top.buffer,
            devices=devices,
            data_dir=data_dir,
            status_socket=socket,
            buffer_path=buffer_path,
            mqtt_password=password,
            secrets=self._secrets(password, secrets),
            links=_link_uses(devices),
            metrics=top.metrics,
            north=tuple((north or {}).values()),
            mqtt_is_destination=mqtt_is_destination(top, north),
            north_secrets=secrets,
            notes=(
                *literal_secrets(self.source),
                *(analytics.notes if analytics is not None else ()),
            ),
            analytics=analytics,
        )

    def _secrets(
        self, password: str | None, north: Mapping[str, DestinationSecrets]
    ) -> frozenset[str]:
        """The secrets read from files and every value under a secret key.

        Literal or from ``${ENV}``, wherever it is (mqtt.password, an OPC UA
        connection's password, a destination's device secret...): all of them
        are masked in logs and errors.
        """
        found = {password} if password else set()
        for secrets in north.values():
            found.update(secrets.values())
        found.update(secret_values(self.source.data))
        return frozenset(found)

    def _path(self, path: Path) -> Path:
        return path if path.is_absolute() else self.site_dir / path

    def _password(self, mqtt: cfg.MqttSection) -> str | None:
        if mqtt.password_file is None:
            return mqtt.password
        path = ("mqtt", "password_file")
        return read_secret(self.site_dir, mqtt.password_file, path, self._problem)

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
            device = merge_device(section, path, folders, self.source, self.problems)
            if device is not None:
                devices.append(device)
                self.device_paths[device.id] = path
        return devices


def mask_problems(problems: list[Problem], secrets: Iterable[str]) -> list[Problem]:
    """``problems`` with every secret masked in their messages (changed in place).

    For a check spanning a whole section (``password`` and ``password_file``
    both given) pydantic quotes the section, password included.
    """
    shown = list(secrets)
    for problem in problems:
        problem.message = mask(problem.message, shown)
    return problems
