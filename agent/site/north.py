"""The ``north:`` destinations of a site: which are valid, and the secrets they need.

What :mod:`agent.site.models` cannot check alone is checked here, each
problem at its key: the options block must be the dialect's, each dialect's
credentials must be given once, sub-device maps must name the site's devices
(and, for Alibaba and Huawei, every enabled one: a device without a cloud
identity could never be sent), ids must be unique. Secrets given as files
are read here, like ``mqtt.password_file``.

Whether the ``mqtt:`` section is a destination too: it is when ``north:`` is
not given (as before ``north:`` existed), and when ``mqtt:`` is written in the
file (pydantic's ``model_fields_set``; ``mqtt: {}`` counts as written). A
site with ``north:`` and no ``mqtt:`` key publishes to its north destinations
only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.secretmask import is_secret_key
from agent.site import models as cfg
from agent.site.device import DeviceConfig
from agent.site.source import Path_, Source, dotted

DEFAULT_ID = "mqtt"
"""The id of the destination made of the ``mqtt:`` section."""

Report = Callable[[Path_, str], None]


@dataclass(frozen=True, slots=True)
class DestinationSecrets:
    """The secrets of one destination, from the site file, ``${ENV}`` or their files."""

    password: str | None = field(default=None, repr=False)
    """The MQTT password (``password`` or ``password_file``)."""
    access_token: str | None = field(default=None, repr=False)
    """ThingsBoard: the gateway's access token."""
    device_secret: str | None = field(default=None, repr=False)
    """Alink: the gateway's DeviceSecret; IoTDA: the gateway's secret."""
    subdevices: Mapping[str, str] = field(default_factory=dict, repr=False)
    """Alink: device id -> the sub-device's DeviceSecret."""

    def values(self) -> set[str]:
        """Every secret held, to mask in logs and messages."""
        found = {self.password, self.access_token, self.device_secret, *self.subdevices.values()}
        return {s for s in found if s}


Entries = Mapping[int, cfg.NorthSection]
"""The valid ``north:`` entries by their index in the list (an invalid one is left out)."""


def mqtt_is_destination(top: cfg.SiteFile, north: Entries | None) -> bool:
    """The ``mqtt:`` section is published to: no ``north:``, or ``mqtt:`` written in the file."""
    return north is None or "mqtt" in top.model_fields_set


def read_secret(site_dir: Path, file: Path, path: Path_, report: Report) -> str | None:
    """The content of a secret file (stripped), relative to the site file; None if unreadable."""
    try:
        return (file if file.is_absolute() else site_dir / file).read_text("utf-8").strip()
    except OSError as exc:
        report(path, f"cannot read {file}: {exc.strerror}")
        return None
    except UnicodeDecodeError:
        report(path, f"{file} is not UTF-8 text")
        return None


def check_tls_files(site_dir: Path, tls: cfg.TlsSection, path: Path_, report: Report) -> None:
    """Every TLS file named exists (relative to the site file)."""
    for key in ("ca", "cert", "key"):
        file = getattr(tls, key)
        if file is not None:
            full = file if file.is_absolute() else site_dir / file
            if not full.is_file():
                report((*path, "tls", key), f"file not found: {full}")


def secret_files(dest: cfg.NorthSection) -> list[tuple[Path, str]]:
    """The files of ``dest`` holding a secret (paths as written), each with what it holds."""
    named = f"of destination {dest.id}"
    files = [(dest.password_file, f"the MQTT password {named}")]
    if dest.tls is not None:
        files.append((dest.tls.key, f"the TLS client key {named}"))
    if dest.thingsboard is not None:
        files.append((dest.thingsboard.access_token_file, f"the access token {named}"))
    if dest.alink is not None:
        files.append((dest.alink.device_secret_file, f"the gateway's DeviceSecret {named}"))
        files += [
            (sub.device_secret_file, f"the DeviceSecret of {device} {named}")
            for device, sub in dest.alink.subdevices.items()
        ]
    if dest.iotda is not None:
        files.append((dest.iotda.secret_file, f"the gateway's secret {named}"))
    return [(path, what) for path, what in files if path is not None]


def literal_secrets(source: Source) -> list[str]:
    """A warning per secret of ``north:`` written in the file itself (not ``${ENV}``, not a file).

    Accepted, as ``mqtt.password`` is; but a site file travels (copied to a
    colleague, attached to a ticket), so the secret is better kept out of it.
    """
    north = source.data.get("north") if isinstance(source.data, dict) else None
    found: list[str] = []

    def walk(node: Any, path: Path_) -> None:
        if isinstance(node, dict):
            for key, child in node.items():
                if is_secret_key(key) and isinstance(child, str | int) and child != "":
                    if (*path, key) not in source.env_paths:
                        found.append(
                            f"{source.where((*path, key))}: {dotted((*path, key))} is written "
                            f"in the site file: put it in the environment (${{VAR}}) or in "
                            f"{key}_file, readable by the agent only"
                        )
                else:
                    walk(child, (*path, key))
        elif isinstance(node, list):
            for index, child in enumerate(node):
                walk(child, (*path, index))

    walk(north, ("north",))
    return found


def check_north(
    top: cfg.SiteFile,
    north: Entries | None,
    devices: list[DeviceConfig],
    site_dir: Path,
    report: Report,
    *,
    machines: tuple[str, ...] = (),
) -> dict[str, DestinationSecrets]:
    """Report every problem of the ``north`` entries; the secrets of each destination, by id.

    ``north`` is None when the site has no ``north:`` key. ``machines`` (of
    ``analytics:``) are sent as sub-devices too: they need a cloud identity.
    """
    if north is None:
        return {}
    with_mqtt = mqtt_is_destination(top, north)
    checker = _Checker(devices, site_dir, report, machines)
    seen: dict[str, int] = {}
    secrets: dict[str, DestinationSecrets] = {}
    for index, dest in north.items():
        path: Path_ = ("north", index)
        if dest.id == DEFAULT_ID and with_mqtt:
            report(
                (*path, "id"),
                f"{DEFAULT_ID!r} is the id of the mqtt section's destination: choose another "
                "id, or move the mqtt section into north",
            )
        elif dest.id in seen:
            report(
                (*path, "id"),
                f"duplicate destination id {dest.id!r} (also north[{seen[dest.id]}])",
            )
        seen.setdefault(dest.id, index)
        secrets[dest.id] = checker.destination(dest, path)
    _check_same_broker(top, north, with_mqtt, report)
    return secrets


def _check_same_broker(top: cfg.SiteFile, north: Entries, with_mqtt: bool, report: Report) -> None:
    """Two connections to one broker with one client id would take each other's session."""
    owners: dict[tuple[str, int, str], str] = {}
    nodes: dict[tuple[str, int, str, str], str] = {}
    if with_mqtt and top.mqtt.client_id is not None:
        owners[(top.mqtt.host, top.mqtt.port, top.mqtt.client_id)] = "mqtt"
    for index, dest in north.items():
        if dest.client_id is not None and dest.dialect not in ("alink", "iotda"):
            key = (dest.host, dest.port, dest.client_id)
            if key in owners:
                report(
                    ("north", index, "client_id"),
                    f"{owners[key]} connects to {dest.host}:{dest.port} with the same client "
                    "id: the broker would keep only one of the two connections",
                )
            owners.setdefault(key, f"destination {dest.id}")
        if dest.dialect == "sparkplug-b" and dest.sparkplug is not None:
            node = dest.sparkplug.edge_node_id or top.agent.id
            place = (dest.host, dest.port, dest.sparkplug.group_id, node)
            if place in nodes:
                report(
                    ("north", index, "sparkplug"),
                    f"{nodes[place]} is already edge node {node} of group "
                    f"{dest.sparkplug.group_id} on {dest.host}:{dest.port}: one edge node, "
                    "one session",
                )
            nodes.setdefault(place, f"destination {dest.id}")


class _Checker:
    """Checks one destination at a time against the site's devices."""

    def __init__(
        self,
        devices: list[DeviceConfig],
        site_dir: Path,
        report: Report,
        machines: tuple[str, ...] = (),
    ) -> None:
        self.devices = {d.id: d for d in devices}
        self.machines = machines
        self.enabled = [d.id for d in devices if d.enabled] + list(machines)
        self.site_dir = site_dir
        self.report = report

    def destination(self, dest: cfg.NorthSection, path: Path_) -> DestinationSecrets:
        self._blocks(dest, path)
        if dest.tls is not None:
            check_tls_files(self.site_dir, dest.tls, path, self.report)
        if dest.dialect != "edge-json":
            for key in ("topic", "status_topic", "events_topic"):
                if key in dest.model_fields_set:
                    self.report(
                        (*path, key),
                        f"{key} is for edge-json destinations: {dest.dialect} publishes on "
                        "the topics its platform defines; remove it",
                    )
        password = self._secret(dest.password, dest.password_file, (*path, "password_file"))
        if dest.dialect == "sparkplug-b":
            if "qos" in dest.model_fields_set:
                self.report(
                    (*path, "qos"),
                    "sparkplug-b sends data at sparkplug.data_qos (births and deaths as the "
                    "specification says): remove qos",
                )
            return DestinationSecrets(password=password)
        if dest.dialect == "thingsboard":
            return self._thingsboard(dest, path, password)
        if dest.dialect == "alink" and dest.alink is not None:
            self._signed_credentials(dest, path)
            return self._alink(dest.alink, (*path, "alink"))
        if dest.dialect == "iotda" and dest.iotda is not None:
            self._signed_credentials(dest, path)
            return self._iotda(dest.iotda, (*path, "iotda"))
        return DestinationSecrets(password=password)

    def _blocks(self, dest: cfg.NorthSection, path: Path_) -> None:
        """Only the dialect's own block; a required one present."""
        wanted = cfg.DIALECT_BLOCKS[dest.dialect]
        owner = {block: name for name, block in cfg.DIALECT_BLOCKS.items() if block}
        for block, dialect in owner.items():
            if getattr(dest, block) is not None and block != wanted:
                takes = f"takes {_a(wanted)} {wanted} block" if wanted else "takes no block"
                self.report(
                    (*path, block),
                    f"{_a(block)} {block} block on {_a(dest.dialect)} {dest.dialect} "
                    f"destination: {dest.dialect} "
                    f"{takes}; remove {block}, or set dialect: {dialect}",
                )
        if wanted in ("sparkplug", "alink", "iotda") and getattr(dest, wanted) is None:
            needs = {
                "sparkplug": "group_id",
                "alink": "product_key, device_name, device_secret and subdevices",
                "iotda": "gateway_id, secret and subdevices",
            }[wanted]
            self.report(
                (*path, "dialect"), f"{dest.dialect} needs {_a(wanted)} {wanted} block ({needs})"
            )

    def _secret(self, literal: str | None, file: Path | None, path: Path_) -> str | None:
        if file is None:
            return literal
        if literal is not None:
            secret_key = str(path[-1]).removesuffix("_file")
            self.report(path, f"give {secret_key} or {path[-1]}, not both")
            return None
        return read_secret(self.site_dir, file, path, self.report)

    def _required_secret(
        self, literal: str | None, file: Path | None, path: Path_, what: str
    ) -> str | None:
        secret_key = str(path[-1]).removesuffix("_file")
        if literal is None and file is None:
            self.report(path[:-1], f"{what} is required: give {secret_key} or {path[-1]}")
            return None
        return self._secret(literal, file, path)

    def _signed_credentials(self, dest: cfg.NorthSection, path: Path_) -> None:
        for key in ("client_id", "username", "password", "password_file"):
            if key in dest.model_fields_set:
                self.report(
                    (*path, key),
                    f"{dest.dialect} signs its own client id, user name and password with the "
                    f"device secret of the {cfg.DIALECT_BLOCKS[dest.dialect]} block: remove {key}",
                )

    def _thingsboard(
        self, dest: cfg.NorthSection, path: Path_, password: str | None
    ) -> DestinationSecrets:
        block = dest.thingsboard or cfg.ThingsboardBlock()
        where: Path_ = (*path, "thingsboard")
        token = self._secret(
            block.access_token, block.access_token_file, (*where, "access_token_file")
        )
        given_token = block.access_token is not None or block.access_token_file is not None
        if given_token and (dest.username is not None or "password" in dest.model_fields_set):
            self.report(
                (*path, "username"),
                "the access token is sent as the user name: give thingsboard.access_token "
                "or username/password, not both",
            )
        if not given_token and dest.username is None and (dest.tls is None or not dest.tls.cert):
            self.report(
                where if dest.thingsboard is not None else path,
                "thingsboard needs credentials: thingsboard.access_token (or "
                "access_token_file), or username/password, or a TLS client certificate",
            )
        self._known_devices(block.names, (*where, "names"), "a device name")
        taken: dict[str, str] = {}
        for device, name in block.names.items():
            if name in taken:
                self.report(
                    (*where, "names", device),
                    f"{device} and {taken[name]} would both be ThingsBoard device {name!r}",
                )
            taken.setdefault(name, device)
        return DestinationSecrets(password=password, access_token=token)

    def _alink(self, block: cfg.AlinkBlock, path: Path_) -> DestinationSecrets:
        secret = self._required_secret(
            block.device_secret,
            block.device_secret_file,
            (*path, "device_secret_file"),
            "the gateway's device_secret",
        )
        self._covers(block.subdevices, (*path, "subdevices"), "alink")
        subs: dict[str, str] = {}
        for device, sub in block.subdevices.items():
            if device not in self.devices:
                continue  # reported above; its secret would not be used
            where: Path_ = (*path, "subdevices", device)
            value = self._required_secret(
                sub.device_secret,
                sub.device_secret_file,
                (*where, "device_secret_file"),
                f"the DeviceSecret of {device} (it signs topo add and login)",
            )
            if value is not None:
                subs[device] = value
            self._known_tags(device, sub.identifiers, (*where, "identifiers"))
            self._known_tags(device, sub.float_tags, (*where, "float_tags"))
        return DestinationSecrets(device_secret=secret, subdevices=subs)

    def _iotda(self, block: cfg.IotdaBlock, path: Path_) -> DestinationSecrets:
        secret = self._required_secret(
            block.secret, block.secret_file, (*path, "secret_file"), "the gateway's secret"
        )
        self._covers(block.subdevices, (*path, "subdevices"), "iotda")
        for device, sub in block.subdevices.items():
            where: Path_ = (*path, "subdevices", device, "identifiers")
            self._known_tags(device, sub.identifiers, where)
        return DestinationSecrets(device_secret=secret)

    def _known_devices(self, keys: Iterable[str], path: Path_, what: str) -> list[str]:
        """Report keys that are not devices of the site; the ones that are."""
        known = []
        for key in keys:
            if key in self.devices or key in self.machines:
                known.append(key)
                continue
            listed = ", ".join([*self.devices, *self.machines]) or "none"
            self.report(
                (*path, key),
                f"{key!r} is not a device of this site, so it cannot have {what} "
                f"(devices: {listed})",
            )
        return known

    def _covers(self, subdevices: Mapping[str, object], path: Path_, dialect: str) -> None:
        """Every enabled device has a cloud identity; every entry names a device."""
        self._known_devices(subdevices, path, "a cloud identity")
        missing = [d for d in self.enabled if d not in subdevices]
        if missing:
            self.report(
                path,
                f"no sub-device entry for {', '.join(missing)}: {dialect} can send a "
                + (
                    "device's (or a machine's) data only under its cloud identity; add one "
                    "per device and machine (or disable the device)"
                    if self.machines
                    else "device's data only under its cloud identity; add one per device "
                    "(or disable the device)"
                ),
            )

    def _known_tags(self, device: str, names: Mapping[str, str] | list[str], path: Path_) -> None:
        config = self.devices.get(device)
        if config is None:
            return
        keyed: Iterable[tuple[str | int, str]] = (
            enumerate(names) if isinstance(names, list) else ((n, n) for n in names)
        )
        for key, name in keyed:
            if name not in config.options.tags:
                self.report(
                    (*path, key),
                    f"{name!r} is not a tag of {device} (tags: {', '.join(config.options.tags)})",
                )


def _a(word: str) -> str:
    """The indefinite article of ``word``, as it is read (an alink, an iotda, a sparkplug)."""
    return "an" if word[:1] in "aeiou" else "a"
