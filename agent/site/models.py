"""Site configuration: the typed models of a site file and of a profile.

A site file instantiates device profiles ("N" shared modules) with only what
differs at this factory ("X"). :mod:`agent.site.loader` merges the two and hands
each device's part to its driver for validation; this module holds the
agent's own sections. Every model refuses unknown keys.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

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

    @field_validator("params")
    @classmethod
    def _param_names(
        cls, value: dict[str, bool | int | float | str]
    ) -> dict[str, bool | int | float | str]:
        for name in value:
            check_name(name)
        return value
