"""Site configuration: the typed models of a site file and of a profile.

A site file instantiates device profiles ("N" shared modules) with only what
differs at this factory ("X"). :mod:`agent.site.loader` merges the two and hands
each device's part to its driver for validation; this module holds the
agent's own sections. Every model refuses unknown keys.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BeforeValidator, Field, field_validator, model_validator

from agent.site.params import check_name
from drivers.base import ByteSize, Duration, StrictModel

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
_ID_RULE = "must be 1-64 letters, digits, '_', '.', ':' or '-' (it is used in MQTT topics)"


def check_id(value: str) -> str:
    """Ids end up in MQTT topics: no '/', '+', '#' or spaces."""
    if not _ID.match(value):
        raise ValueError(_ID_RULE)
    return value


def check_topic(value: str, placeholders: tuple[str, ...]) -> str:
    """A topic to publish to: known placeholders only, no wildcards, not empty."""
    known = " and ".join(f"{{{p}}}" for p in placeholders)
    for name in re.findall(r"\{([^}]*)\}", value):
        if name not in placeholders:
            raise ValueError(f"unknown placeholder {{{name}}}: only {known} can be used here")
    if not value or "+" in value or "#" in value:
        raise ValueError("a topic to publish to cannot be empty or hold the wildcards + or #")
    return value


class AgentSection(StrictModel):
    """Who this agent is and where it keeps its state."""

    id: str = Field(description="Agent id, unique per edge box; used in topics and messages.")
    data_dir: Path | None = Field(
        None, description="Buffer and status socket live here (default: state dir of the user)."
    )
    status_socket: Path | None = Field(
        None, description="Unix socket of the status endpoint (default: <data_dir>/status.sock)."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Least important log messages written to the journal."
    )

    _check_id = field_validator("id")(check_id)


class TlsSection(StrictModel):
    """MQTT over TLS. ``insecure`` skips host name checks and must be asked for explicitly."""

    ca: Path | None = Field(None, description="CA certificate to check the broker with (PEM).")
    cert: Path | None = Field(None, description="This box's client certificate (PEM), with key.")
    key: Path | None = Field(None, description="Private key of the client certificate (PEM).")
    insecure: bool = Field(
        False, description="Skip the broker host name check (the certificate is still checked)."
    )

    @model_validator(mode="after")
    def _cert_needs_key(self) -> TlsSection:
        if (self.cert is None) != (self.key is None):
            raise ValueError("cert and key go together: give both or neither")
        return self


_MIN_PAYLOAD = 512  # a batch of one reading of a few tags must fit


class MqttSection(StrictModel):
    """The broker this agent publishes to."""

    host: str = Field("127.0.0.1", description="Broker host name or address.")
    port: int = Field(1883, ge=1, le=65535, description="Broker port (8883 is usual for TLS).")
    client_id: str | None = Field(None, description="Default: edge-agent-<agent id>.")
    username: str | None = Field(None, description="Broker user name.")
    password: str | None = Field(None, description="Prefer ${ENV} or password_file.", repr=False)
    password_file: Path | None = Field(None, description="File holding the password.")
    tls: TlsSection | None = Field(None, description="Connect with TLS; off when unset.")
    keepalive: Duration = Field(
        30.0, ge=5, le=3600, description="MQTT keepalive: ping interval when nothing else is sent."
    )
    topic: str = Field(
        "edge/{agent}/{device}", description="Topic of the data messages ({agent}, {device})."
    )
    status_topic: str = Field(
        "edge/{agent}/status", description="Retained online/offline topic ({agent})."
    )
    events_topic: str = Field(
        "edge/{agent}/events/{source}",
        description="Topic of the events messages: machine facts ({agent}, {source}).",
    )
    qos: Literal[0, 1] = Field(1, description="1: at-least-once. 0 may lose messages.")
    max_inflight: int = Field(
        100, ge=1, le=65535, description="Batches sent and not yet acknowledged and deleted."
    )
    reconnect_max: Duration = Field(
        30.0, ge=1, description="Longest wait between two broker connection attempts."
    )
    max_message_size: ByteSize = Field(
        65536,
        ge=1024,
        le=268_435_455,
        description="The largest MQTT packet the broker accepts (its max packet size); "
        "larger batches are split. 64 KiB suits most clouds; some allow only 16 KiB.",
    )

    @field_validator("topic")
    @classmethod
    def _data_topic(cls, value: str) -> str:
        return check_topic(value, ("agent", "device"))

    @field_validator("status_topic")
    @classmethod
    def _status_topic(cls, value: str) -> str:
        # the status message is the agent's, not a device's: {device} has no value there
        return check_topic(value, ("agent",))

    @field_validator("events_topic")
    @classmethod
    def _events_topic(cls, value: str) -> str:
        # source: a machine of analytics.machines, or _box for the box itself
        return check_topic(value, ("agent", "source"))

    @model_validator(mode="after")
    def _room_for_readings(self) -> MqttSection:
        # the PUBLISH carries the topic too: ids may be 64 characters long
        longest = self.topic.replace("{agent}", "a" * 64).replace("{device}", "d" * 64)
        overhead = len(longest.encode()) + 9  # fixed header, topic length, packet id
        if self.max_message_size - overhead < _MIN_PAYLOAD:
            raise ValueError(
                f"max_message_size {self.max_message_size} leaves less than {_MIN_PAYLOAD} "
                f"bytes for the message after the topic ({overhead} bytes with 64-character "
                f"ids): raise it or shorten mqtt.topic"
            )
        return self

    @model_validator(mode="after")
    def _one_password(self) -> MqttSection:
        if self.password is not None and self.password_file is not None:
            raise ValueError("give password or password_file, not both")
        return self


NorthDialect = Literal["edge-json", "sparkplug-b", "thingsboard", "alink", "iotda"]
"""The dialects a destination may speak (the same names as ``agent.north.session.DIALECTS``)."""

DIALECT_BLOCKS: dict[str, str | None] = {
    "edge-json": None,
    "sparkplug-b": "sparkplug",
    "thingsboard": "thingsboard",
    "alink": "alink",
    "iotda": "iotda",
}
"""The options block each dialect takes (edge-json has none)."""


def check_topic_level(value: str) -> str:
    """A name that is one whole MQTT topic level: not empty, no '/', '+' or '#'."""
    if not value or any(c in value for c in "/+#"):
        raise ValueError("must be one MQTT topic level: not empty, no '/', '+' or '#'")
    return value


class SparkplugBlock(StrictModel):
    """Sparkplug B 3.0: the agent is one Edge Node; each device is a Sparkplug device."""

    group_id: str = Field(description="Sparkplug group id (the second topic level).")
    edge_node_id: str | None = Field(None, description="Edge node id; default: the agent id.")
    primary_host: str | None = Field(
        None,
        description="Host application id: publish only while its STATE is online "
        "(spBv1.0/STATE/<id>). Unset: publish whenever connected.",
    )
    data_qos: Literal[0, 1] = Field(
        1,
        description="QoS of DBIRTH/DDATA/DDEATH. The specification says 0; 1 keeps "
        "at-least-once delivery from the buffer.",
    )

    @field_validator("group_id", "edge_node_id", "primary_host")
    @classmethod
    def _level(cls, value: str | None) -> str | None:
        return None if value is None else check_topic_level(value)


class ThingsboardBlock(StrictModel):
    """ThingsBoard gateway API: one gateway device speaks for every device of the site."""

    access_token: str | None = Field(
        None,
        repr=False,
        description="The gateway device's access token (sent as the MQTT user name). "
        "Prefer ${ENV} or access_token_file; or use username/password or a TLS "
        "client certificate instead.",
    )
    access_token_file: Path | None = Field(None, description="File holding the access token.")
    names: dict[str, str] = Field(
        default_factory=dict,
        description="Device id -> ThingsBoard device name; unlisted devices keep their id.",
    )
    seq_key: str | None = Field(
        "edge_seq",
        description="Telemetry key carrying the buffer seq of each sample; null leaves it out.",
    )


class AlinkSubDeviceBlock(StrictModel):
    """The Alibaba Cloud identity of one device (a sub-device of the gateway)."""

    product_key: str = Field(min_length=1, description="ProductKey of the sub-device.")
    device_name: str = Field(min_length=1, description="DeviceName of the sub-device.")
    device_secret: str | None = Field(
        None, repr=False, description="DeviceSecret (signs topo add and login); prefer ${ENV}."
    )
    device_secret_file: Path | None = Field(None, description="File holding the DeviceSecret.")
    identifiers: dict[str, str] = Field(
        default_factory=dict,
        description="Tag name -> thing-model identifier; unlisted tags keep their name.",
    )
    float_tags: list[str] = Field(
        default_factory=list,
        description="Tags whose thing-model property is float or double (sent as 10.0, never 10).",
    )


class AlinkBlock(StrictModel):
    """Alibaba Cloud IoT Platform (Alink JSON): the agent is a gateway device."""

    product_key: str = Field(min_length=1, description="ProductKey of the gateway device.")
    device_name: str = Field(min_length=1, description="DeviceName of the gateway device.")
    device_secret: str | None = Field(
        None, repr=False, description="DeviceSecret of the gateway; prefer ${ENV}."
    )
    device_secret_file: Path | None = Field(None, description="File holding the DeviceSecret.")
    sign_method: Literal["hmacsha256", "hmacsha1", "hmacmd5"] = Field(
        "hmacsha256", description="HMAC of the CONNECT password."
    )
    subdevices: dict[str, AlinkSubDeviceBlock] = Field(
        default_factory=dict,
        description="Device id -> its cloud identity; every enabled device needs one.",
    )
    seq_property: str | None = Field(
        "edge_seq",
        description="Thing-model property carrying the buffer seq; null leaves it out.",
    )


class IotdaSubDeviceBlock(StrictModel):
    """The Huawei IoTDA identity of one device (a sub-device of the gateway)."""

    device_id: str = Field(
        min_length=1, description="Platform device id (usually <product_id>_<node_id>)."
    )
    service_id: str = Field(min_length=1, description="Service of the product model reported.")
    identifiers: dict[str, str] = Field(
        default_factory=dict,
        description="Tag name -> property name in the product model; unlisted tags keep theirs.",
    )


class IotdaBlock(StrictModel):
    """Huawei Cloud IoTDA: the agent is a gateway device (secret authentication)."""

    gateway_id: str = Field(min_length=1, description="Platform device id of the gateway.")
    secret: str | None = Field(
        None, repr=False, description="Device secret of the gateway; prefer ${ENV}."
    )
    secret_file: Path | None = Field(None, description="File holding the device secret.")
    subdevices: dict[str, IotdaSubDeviceBlock] = Field(
        default_factory=dict,
        description="Device id -> its platform identity; every enabled device needs one.",
    )
    seq_property: str | None = Field(
        "edge_seq",
        description="Product-model property carrying the buffer seq; null leaves it out.",
    )


class _DestinationHead(StrictModel):
    """What names a destination; comes first in :class:`NorthSection`."""

    id: str = Field(
        description="Destination id, unique in the site (its cursor in the buffer, its status). "
        "'mqtt' is the mqtt section's when that section is given."
    )
    dialect: NorthDialect = Field(description="What is sent and how (see docs/NORTH.md).")

    _check_id = field_validator("id")(check_id)


class NorthSection(MqttSection, _DestinationHead):
    """One destination: a broker connection (the keys of ``mqtt``) and a dialect.

    ``topic`` and ``status_topic`` are edge-json's (the other dialects' topics are
    fixed by the cloud); exactly the block of the dialect may be given.
    """

    host: str = Field(description="Broker host name or address.")
    client_id: str | None = Field(
        None,
        description="Default: edge-agent-<agent id>-<destination id> (edge-agent-<agent id> "
        "for the id 'mqtt'). Alink and IoTDA compute their own.",
    )
    sparkplug: SparkplugBlock | None = Field(None, description="Options of sparkplug-b.")
    thingsboard: ThingsboardBlock | None = Field(None, description="Options of thingsboard.")
    alink: AlinkBlock | None = Field(None, description="Options of alink (required there).")
    iotda: IotdaBlock | None = Field(None, description="Options of iotda (required there).")


class BufferSection(StrictModel):
    """The local SQLite buffer; see docs/decisions for the durability trade."""

    path: Path | None = Field(None, description="Default: <data_dir>/buffer.db.")
    max_size: ByteSize = Field(
        256_000_000, ge=1_000_000, description="The buffer file never grows past this."
    )
    on_full: Literal["drop_oldest", "drop_newest"] = Field(
        "drop_oldest", description="What to drop when the file is at max_size; drops are counted."
    )
    synchronous: Literal["FULL", "NORMAL"] = Field(
        "FULL", description="FULL survives a power cut; NORMAL survives a crash only."
    )
    commit_interval: Duration = Field(
        0.1, ge=0, le=10, description="A reading is committed to disk at most this long after."
    )


_LOOPBACK_ONLY = (
    "is not a loopback address: the metrics endpoint listens on loopback only "
    "(127.0.0.1:PORT or [::1]:PORT); scrape it from this box or through an SSH tunnel"
)


def split_listen(value: str) -> tuple[str, int]:
    """``"127.0.0.1:9108"`` / ``"[::1]:9108"`` / ``"localhost:9108"`` -> (host, port).

    Raise ``ValueError`` unless the host is a loopback address: the agent
    listens on no network port, so a scrape endpoint may only face this box.
    """
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError("expected HOST:PORT with a port from 1 to 65535, e.g. 127.0.0.1:9108")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if host == "localhost":
        return "127.0.0.1", int(port)
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"{host} {_LOOPBACK_ONLY}")
    return host, int(port)


class MetricsSection(StrictModel):
    """Prometheus text on a loopback port, and an optional summary published to the broker."""

    listen: str | None = Field(
        None,
        description="Serve GET /metrics on this loopback HOST:PORT (e.g. 127.0.0.1:9108). "
        "Off by default.",
    )
    publish_interval: Duration | None = Field(
        None, ge=1, description="Publish a JSON summary this often (QoS 0). Off by default."
    )
    topic: str = Field("edge/{agent}/metrics", description="Topic of the JSON summary.")

    @field_validator("listen")
    @classmethod
    def _loopback(cls, value: str | None) -> str | None:
        if value is not None:
            split_listen(value)
        return value

    @field_validator("topic")
    @classmethod
    def _topic(cls, value: str) -> str:
        return check_topic(value, ("agent",))


class ComputeTag(StrictModel):
    """A derived tag: a formula over other tags of the same device (agent/formula.py)."""

    expr: str = Field(
        description="The formula, e.g. 'sqrt(p_kw * p_kw + q_kvar * q_kvar)' or "
        "'bit(status_word, 3)': tag names, numbers, + - * / %, comparisons, and/or/not, "
        "abs min max sqrt round clamp bit; at most 200 characters. A comparison, logic "
        "or bit() gives a bool tag, anything else a float tag."
    )
    unit: str | None = Field(None, description="Engineering unit, for people and the cloud.")
    description: str | None = Field(None, description="One line for people.")
    deadband: float | None = Field(
        None, ge=0, description="Report only changes larger than this, as for a tag read."
    )
    heartbeat: Duration | None = Field(
        None, gt=0, description="Report at least this often even without a change."
    )


class DeviceSection(StrictModel):
    """One device: a profile plus this site's connection and overrides."""

    id: str = Field(description="Device id, unique in the site; used in topics and messages.")
    profile: str | None = Field(
        None,
        description="Profile name (NAME or NAME@HASH to pin its content). "
        "Leave it out to give the whole device here (protocol, poll_groups, tags).",
    )
    enabled: bool = Field(True, description="false: keep the entry but do not poll it.")
    connection: dict[str, dict[str, Any]] = Field(
        description="One connection kind and its settings, e.g. {modbus_tcp: {host: 10.0.0.21}}; "
        "the keys are under each driver below."
    )
    unit_id: int | None = Field(
        None,
        ge=0,
        le=247,
        description="Modbus unit id; wins over protocol.unit_id here and in the profile "
        "(default 1). Modbus only.",
    )
    protocol: dict[str, Any] = Field(
        default_factory=dict,
        description="Driver protocol keys (see each driver), merged over the profile's.",
    )
    poll_groups: dict[str, Duration] = Field(
        default_factory=dict,
        description="Group name -> interval, over the profile's; group default is 1s "
        "unless set here.",
    )
    tags: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Tag name -> attributes (see each driver): a new tag, or the attributes "
        "that differ from the profile's tag.",
    )
    compute: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Derived tag name -> attributes (see compute in a profile): a new derived "
        "tag, or the attributes that differ from the profile's.",
    )
    drop_tags: list[str] = Field(
        default_factory=list,
        description="Profile tags (or derived tags) this device does not have.",
    )
    params: dict[str, Any] = Field(
        default_factory=dict, description="Values for the profile's params (its defaults apply)."
    )

    _check_id = field_validator("id")(check_id)

    @field_validator("connection")
    @classmethod
    def _one_connection(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        if len(value) != 1:
            raise ValueError("name exactly one connection kind, e.g. {modbus_tcp: {host: ...}}")
        return value

    @field_validator("poll_groups")
    @classmethod
    def _positive_intervals(cls, value: dict[str, float]) -> dict[str, float]:
        for name, seconds in value.items():
            if seconds < 0.01:
                raise ValueError(f"poll group {name!r}: interval must be at least 10ms")
        return value


# --------------------------------------------------------------------------- machine facts

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:/\s*(s|min|m|h))?\s*$")
_RATE_PER = {"s": 1.0, None: 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
_COND_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_COND_KEYWORDS = frozenset({"and", "or", "not", "true", "false"})
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)(:[0-5]\d)?$")

MachineStateName = Literal["running", "idle", "stopped", "fault"]
"""The states a rule or a map may give (``offline`` is derived, never configured)."""
CounterRoleName = Literal["total", "good", "reject"]
CounterWidth = Literal["uint16", "uint32", "int16", "int32", "uint64"]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_WORKWEEK: list[Weekday] = ["mon", "tue", "wed", "thu", "fri"]


def parse_rate(value: Any) -> float:
    """``"20/s"``, ``"1200/min"``, ``"72000/h"`` or a number (per second) -> counts per second."""
    if isinstance(value, bool):
        raise ValueError("expected a rate such as 20/s, 600/min")
    if isinstance(value, int | float):
        rate = float(value)
    else:
        match = _RATE.match(str(value))
        if not match:
            raise ValueError("expected a rate such as 20/s, 600/min, 5000/h")
        rate = float(match.group(1)) / _RATE_PER[match.group(2)]
    if rate <= 0:
        raise ValueError("a rate must be more than 0")
    return rate


Rate = Annotated[float, BeforeValidator(parse_rate, json_schema_input_type=float | str)]
"""Counts per second, written in config as ``20/s``, ``600/min``, ``5000/h``."""


def check_condition_name(name: str) -> str:
    """A name a condition can use: a letter or '_' first, then letters, digits, '_'."""
    if not _COND_NAME.match(name) or name in _COND_KEYWORDS:
        raise ValueError(
            f"name {name!r}: use letters, digits and '_' (a letter or '_' first, at most 64), "
            "not and/or/not/true/false"
        )
    return name


def _names(value: dict[str, Any]) -> dict[str, Any]:
    for name in value:
        check_condition_name(name)
    return value


def _text_keys(value: Any) -> Any:
    """YAML keys 0, 1... arrive as text from the site loader; the same when built in code."""
    return {str(k): v for k, v in value.items()} if isinstance(value, dict) else value


def check_hhmm(value: Any) -> str:
    """A local time ``"HH:MM"`` (or ``"HH:MM:SS"``); YAML reads an unquoted 10:15 as 615."""
    if isinstance(value, int) and not isinstance(value, bool):
        raise ValueError(
            f'{value}: write times in quotes ("{value // 60:02d}:{value % 60:02d}"): '
            "YAML reads an unquoted 10:15 as the number 615"
        )
    if not isinstance(value, str) or not _HHMM.match(value):
        raise ValueError(f"{value!r}: a local time HH:MM, 00:00 to 23:59")
    return value


HHMM = Annotated[str, BeforeValidator(check_hhmm, json_schema_input_type=str)]


class StateRule(StrictModel):
    """One state rule: the machine is in ``state`` when ``when`` holds (the first that holds)."""

    state: MachineStateName = Field(description="The state this rule gives.")
    when: str = Field(
        min_length=1,
        max_length=200,
        description="Condition over the inputs: names, numbers, true/false, == != < <= > >=, "
        'and, or, not, parentheses (e.g. "run and freq > 0.5"). Write true for the last rule.',
    )
    reason: str | None = Field(None, description="Why, sent with the state (e.g. fault).")


StateEntry = MachineStateName | tuple[MachineStateName, str]


class StateMapBlock(StrictModel):
    """A state tag whose values name the state: the PackML table or a table of its own."""

    tag: str = Field(min_length=1, description="The tag holding the state value.")
    table: Literal["packml"] | dict[str, StateEntry] = Field(
        description="packml (PackML StateCurrent numbers), or value -> state, or value -> "
        "[state, reason], e.g. {0: stopped, 1: running, 3: [fault, E.OC1]}. Keys that are "
        "whole numbers match numbers (and 0/1 match false/true)."
    )

    _keys = field_validator("table", mode="before")(_text_keys)


class StateBlock(StrictModel):
    """Where the machine's state comes from: ordered rules over inputs, or a state tag's map."""

    inputs: dict[str, str] = Field(
        default_factory=dict,
        description="Condition name -> tag of this profile, used in the rules "
        "(e.g. {run: run_bit, freq: output_freq_hz}).",
    )
    rules: list[StateRule] = Field(
        default_factory=list,
        description="Ordered rules; the first that holds gives the state, an input in error "
        "gives no confident state.",
    )
    map: StateMapBlock | None = Field(None, description="Instead of inputs and rules: a state tag.")
    debounce: Duration = Field(
        0.0, description="A new state counts once it has held this long (back-dated)."
    )
    offline_after: Duration | None = Field(
        None,
        gt=0,
        description="Offline after this long without a confident read. Default: 3 x the "
        "poll interval of the state tags (the slowest), at least 5s.",
    )

    _inputs = field_validator("inputs")(_names)

    @model_validator(mode="after")
    def _rules_or_map(self) -> StateBlock:
        if self.map is not None and (self.inputs or self.rules):
            raise ValueError("give inputs and rules, or map, not both")
        if self.map is None and not self.rules:
            raise ValueError(
                "give inputs and rules (the last often {state: idle, when: 'true'}) or map"
            )
        return self


class ModeBlock(StrictModel):
    """An intent tag: production, setup, maintenance...; planned-downtime modes leave OEE."""

    tag: str = Field(min_length=1, description="The tag holding the mode value.")
    names: dict[str, str] = Field(
        min_length=1,
        description="Value -> mode name, e.g. {1: production, 2: maintenance}; a value not "
        "named makes the read not confident.",
    )
    planned_downtime: list[str] = Field(
        default_factory=list,
        description="Modes whose time is planned downtime (not in OEE's planned time).",
    )

    _keys = field_validator("names", mode="before")(_text_keys)

    @model_validator(mode="after")
    def _known_modes(self) -> ModeBlock:
        unknown = [m for m in self.planned_downtime if m not in self.names.values()]
        if unknown:
            known = ", ".join(sorted(set(self.names.values())))
            raise ValueError(f"planned_downtime {unknown} are not among the modes: {known}")
        return self


class CounterBlock(StrictModel):
    """A piece counter of this profile: its tag, register width and fastest count rate."""

    tag: str = Field(min_length=1, description="The tag holding the raw count.")
    width: CounterWidth = Field(
        description="Register width: where it wraps (a signed register is read as unsigned)."
    )
    max_rate: Rate | None = Field(
        None,
        description="Fastest the counter can count, e.g. 20/s. Without it a fall is never "
        "a wrap: a uint16 counter on a fast line needs it, or its wraps read as resets.",
    )
    reset_tag: str | None = Field(
        None, description="A tag of the same device that is true when the device reset it."
    )


class AlarmBlock(StrictModel):
    """An alarm: active while its condition holds over the state inputs and its own inputs."""

    when: str = Field(min_length=1, max_length=200, description="Condition, as in the state rules.")
    severity: int = Field(500, ge=1, le=1000, description="1 (least) to 1000 (most severe).")
    message: str = Field("", description="Text sent with the alarm.")
    min_repeat: Duration = Field(
        0.0, description="Raised again sooner than this after it cleared: still the same alarm."
    )
    inputs: dict[str, str] = Field(
        default_factory=dict,
        description="More condition names -> tags of this profile, besides the state inputs.",
    )

    _inputs = field_validator("inputs")(_names)


def _alarm_names(value: dict[str, Any]) -> dict[str, Any]:
    for name in value:
        if not _COND_NAME.match(name):
            raise ValueError(f"alarm name {name!r}: use letters, digits and '_' (at most 64)")
    return value


def _two_roles(value: dict[str, Any]) -> dict[str, Any]:
    if len(value) > 2:
        raise ValueError("at most two counter roles: the third follows (good = total - reject)")
    return value


class MachineBlock(StrictModel):
    """What this equipment says about its machine: state, mode, counters, alarms."""

    state: StateBlock | None = Field(None, description="Where the state comes from.")
    mode: ModeBlock | None = Field(None, description="The intent tag (optional).")
    counters: dict[CounterRoleName, CounterBlock] = Field(
        default_factory=dict,
        description="Role (total, good, reject) -> counter; at most two roles.",
    )
    alarms: dict[str, AlarmBlock] = Field(
        default_factory=dict, description="Alarm name -> its condition."
    )
    ideal_cycle: Duration | None = Field(
        None, gt=0, description="Default ideal seconds per piece for OEE performance."
    )

    _roles = field_validator("counters")(_two_roles)
    _alarms = field_validator("alarms")(_alarm_names)


class SiteStateMap(StateMapBlock):
    """A state tag written ``device/tag``."""

    tag: str = Field(min_length=1, description="The state tag, written device/tag.")


class SiteState(StateBlock):
    """The machine's state from the site: sources written ``device/tag``, all of one device."""

    inputs: dict[str, str] = Field(
        default_factory=dict,
        description="Condition name -> device/tag (all of one device, the state device).",
    )
    map: SiteStateMap | None = Field(
        None, description="Instead of inputs and rules: a state tag (device/tag)."
    )


class SiteMode(ModeBlock):
    """The intent tag from the site, written ``device/tag``."""

    tag: str = Field(min_length=1, description="The mode tag, written device/tag.")


class SiteCounter(StrictModel):
    """A piece counter given by the site: replaces the profile's counter of that role."""

    source: str = Field(min_length=1, description="The raw count, written device/tag.")
    width: CounterWidth = Field(description="Register width: where it wraps.")
    max_rate: Rate | None = Field(
        None, description="Fastest the counter can count, e.g. 50/s (see the profile's)."
    )
    reset_tag: str | None = Field(
        None, description="device/tag of the same device, true when the device reset it."
    )


class SiteAlarm(AlarmBlock):
    """An alarm given by the site; its own inputs are written ``device/tag``."""

    inputs: dict[str, str] = Field(
        default_factory=dict,
        description="More condition names -> device/tag, besides the state inputs.",
    )


class EnergyBlock(StrictModel):
    """The meter that feeds this machine: a cumulative kWh register."""

    meter: str = Field(min_length=1, description="The kWh register, written device/tag.")
    # "register" would shadow BaseModel.register (abc): the key keeps its name as an alias
    register_kind: Literal["float32", "exact"] = Field(
        "float32",
        alias="register",
        description="float32: the meter sends a float32 (its resolution is reported); "
        "exact: an integer or decimal register.",
    )


class MachineSection(StrictModel):
    """One machine: the devices whose profiles describe it, its calendar, its OEE settings."""

    devices: list[str] = Field(
        default_factory=list,
        description="Devices whose profile machine blocks are merged (one may give the state).",
    )
    calendar: str | None = Field(
        None, description="A calendar of analytics.calendars; without one no shift summaries."
    )
    ideal_cycle: Duration | None = Field(
        None, gt=0, description="Ideal seconds per piece (overrides the profile's); OEE needs it."
    )
    micro_stop_max: Duration = Field(
        120.0, description="Stops up to this long are micro-stops (a performance loss)."
    )
    method: Literal["common", "iso22400"] = Field(
        "common", description="common: micro-stops are run time; iso22400: downtime."
    )
    unknown_time: Literal["exclude", "as_down"] = Field(
        "exclude", description="Planned time offline: left out of availability, or downtime."
    )
    energy: EnergyBlock | None = Field(None, description="The meter feeding this machine.")
    state: SiteState | None = Field(
        None, description="The state, when no profile gives it (replaces a profile's)."
    )
    mode: SiteMode | None = Field(None, description="The intent tag (replaces a profile's).")
    counters: dict[CounterRoleName, SiteCounter] = Field(
        default_factory=dict, description="Role -> counter; replaces the profile's of that role."
    )
    alarms: dict[str, SiteAlarm] = Field(
        default_factory=dict, description="More alarms; a name also in a profile is refused."
    )

    _roles = field_validator("counters")(_two_roles)
    _alarms = field_validator("alarms")(_alarm_names)


class ShiftSection(StrictModel):
    """One shift of a workday, in local time; an end at or before the start crosses midnight."""

    name: str = Field(description="Shift name, unique in the calendar (in the shift's id).")
    start: HHMM = Field(description='Local start, "HH:MM" (quoted; "HH:MM:SS" too).')
    end: HHMM = Field(description='Local end, "HH:MM"; at or before start: the next day.')
    breaks: list[tuple[HHMM, HHMM]] = Field(
        default_factory=list,
        description='Breaks inside the shift, [["10:00", "10:15"], ...]: not planned time.',
    )

    _check_name = field_validator("name")(check_id)


class CalendarSection(StrictModel):
    """A calendar: workdays, holidays and the shifts of a workday."""

    workdays: list[Weekday] = Field(
        default_factory=lambda: list(_WORKWEEK),
        description="Days shifts start on (mon ... sun).",
    )
    holidays: list[date] = Field(
        default_factory=list, description='Dates without shifts, "YYYY-MM-DD".'
    )
    shifts: list[ShiftSection] = Field(min_length=1, description="The shifts of a workday.")
    breaks_count_if_running: bool = Field(
        False, description="A break worked through counts as planned and run time."
    )


class AnalyticsSection(StrictModel):
    """Machine facts computed at the edge: state, pieces, OEE per shift, energy per part."""

    timezone: str | None = Field(
        None, description="IANA time zone of the calendars (default: the box's local zone)."
    )
    publish_every: Duration = Field(
        300.0, description="How often a running shift figure is sent; 0: only at the shift end."
    )
    calendars: dict[str, CalendarSection] = Field(
        default_factory=dict, description="Calendar name -> its shifts."
    )
    machines: dict[str, MachineSection] = Field(
        default_factory=dict,
        description="Machine id -> its devices and settings (same rules as device ids, "
        "not a device id).",
    )

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("not a known IANA time zone, e.g. Asia/Shanghai") from None
        return value


class SiteFile(StrictModel):
    """The top level of a site file."""

    agent: AgentSection = Field(description="Who this agent is.")
    mqtt: MqttSection = Field(
        default_factory=MqttSection,
        description="The broker (an edge-json destination with the id 'mqtt'). With north "
        "and no mqtt key, the agent publishes to the north destinations only.",
    )
    north: list[NorthSection] | None = Field(
        None,
        description="Destinations, each a broker and a dialect. Unset: the mqtt section is "
        "the only one.",
    )
    buffer: BufferSection = Field(default_factory=BufferSection, description="The local buffer.")
    metrics: MetricsSection = Field(
        default_factory=MetricsSection, description="Metrics endpoint and summary."
    )
    profiles: list[Path] = Field(
        default_factory=list, description="Extra profile folders, searched before the shipped ones."
    )
    devices: list[DeviceSection] = Field(default_factory=list, description="The devices to poll.")
    analytics: AnalyticsSection | None = Field(
        None, description="Machine facts: machines, calendars (docs/EVENTS.md). Off when unset."
    )


Expected = bool | int | float | str


class ProfileVector(StrictModel):
    """A test vector: raw input as the device sends it, and the values it must decode to.

    ``edge-agent profile test`` decodes it with the driver's own decoder
    (``drivers.base.DecodesVectors``). Modbus: the ``registers`` of one ``tag``
    (16-bit words as on the wire; 0/1 for a coil). Serial: one ``line`` (without
    its terminator), which gives several tags: ``expect`` is then a mapping.
    DL/T 645: the ``data`` bytes of one ``tag``'s reply value, as on the wire.
    """

    tag: str | None = Field(None, description="The tag the registers hold (Modbus).")
    registers: list[int] | None = Field(
        None, description="16-bit register values as the device sends them, e.g. [0x4366, 0x3334]."
    )
    line: str | None = Field(None, description="One line as the device sends it (serial).")
    data: str | None = Field(
        None,
        description="DL/T 645: the value bytes of a read reply as on the wire, in hex "
        "(low byte first, +0x33 included), e.g. '34 43' for 100.1 V.",
    )
    expect: Expected | dict[str, Expected] = Field(
        description="The decoded, scaled value of ``tag``; or tag -> value for a line."
    )
    tolerance: float = Field(
        0.0, ge=0, description="Largest accepted difference of a number (a manual's rounding)."
    )
    note: str | None = Field(None, description="Where the example comes from.")

    @field_validator("registers")
    @classmethod
    def _words(cls, value: list[int] | None) -> list[int] | None:
        for word in value or []:
            if not 0 <= word <= 0xFFFF:
                raise ValueError(f"{word}: a register holds 0..0xFFFF")
        return value

    @model_validator(mode="after")
    def _one_input(self) -> ProfileVector:
        given = [x for x in (self.registers, self.line, self.data) if x is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of registers (Modbus), line (serial) or data (DL/T 645)"
            )
        if self.data is not None:
            try:
                bytes.fromhex(self.data)
            except ValueError:
                raise ValueError(f"data {self.data!r}: write bytes in hex, e.g. '34 43'") from None
        if not isinstance(self.expect, dict) and self.tag is None:
            raise ValueError("a single expected value needs the tag it belongs to")
        return self


class ProfileFile(StrictModel):
    """A profile: one equipment model, written once, used by every site."""

    profile: str = Field(description="Profile name, as site files name it (the file's stem).")
    version: int = Field(ge=1, description="Raise it with every change of the content.")
    vendor: str | None = Field(None, description="Equipment maker.")
    model: str | None = Field(None, description="Equipment model or family.")
    description: str | None = Field(None, description="One line for people.")
    source: str | None = Field(None, description="Where the register map comes from (manual).")
    notes: str | None = Field(None, description="What a commissioning engineer should know.")
    extends: str | None = Field(
        None, description="A base profile (vendor family) whose parts this one merges over."
    )
    params: dict[str, bool | int | float | str] = Field(
        default_factory=dict,
        description="Per-device settings with defaults, used as ${param.NAME} in attributes.",
    )
    protocol: dict[str, Any] = Field(
        default_factory=dict, description="Driver protocol keys (see each driver)."
    )
    poll_groups: dict[str, Duration] = Field(
        default_factory=dict, description="Group name -> interval; group default is 1s unless set."
    )
    tags: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Tag name -> attributes (see each driver)."
    )
    compute: dict[str, ComputeTag] = Field(
        default_factory=dict,
        description="Derived tag name -> its formula and attributes, computed from the tags "
        "of each reading in this order (one may use those above it). An entry replaces the "
        "base profile's entry of that name.",
    )
    drop_tags: list[str] = Field(
        default_factory=list,
        description="Tags (or derived tags) of the base profile this one does not have.",
    )
    vectors: list[ProfileVector] = Field(
        default_factory=list,
        description="Test vectors: raw input -> expected values (edge-agent profile test).",
    )
    machine: MachineBlock | None = Field(
        None,
        description="What the equipment says about its machine (state, counters, alarms); "
        "used by the site's analytics.machines. Replaces a base profile's block whole.",
    )

    @field_validator("params")
    @classmethod
    def _param_names(
        cls, value: dict[str, bool | int | float | str]
    ) -> dict[str, bool | int | float | str]:
        for name in value:
            check_name(name)
        return value
