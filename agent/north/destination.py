"""One destination: an MQTT connection, a dialect and the dialect's options.

Built by the runtime from the site file's ``north:`` list (or from its
``mqtt:`` section, which is one ``edge-json`` destination called ``mqtt``).
Secrets (passwords, tokens, device secrets) are read by the site loader from
the environment or credential files and never shown by ``repr``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from agent.north.dialects import alink, iotda
from agent.north.options import MqttOptions
from agent.north.session import Dialect

DEFAULT_ID = "mqtt"
"""The id of the destination made from the site file's ``mqtt:`` section."""


@dataclass(frozen=True, kw_only=True)
class SparkplugOptions:
    """Sparkplug B: this agent is the Edge Node ``edge_node_id`` in group ``group_id``."""

    group_id: str
    edge_node_id: str
    primary_host: str | None = None
    """Wait for this host application's STATE to be online before publishing."""
    data_qos: int = 1
    """QoS of DBIRTH/DDATA/DDEATH. The spec says 0; 1 keeps at-least-once (the default)."""
    state_file: Path | None = None
    """Where the next bdSeq is kept, so that a restart never repeats one."""


@dataclass(frozen=True, kw_only=True)
class ThingsboardOptions:
    """ThingsBoard gateway API; the access token is the MQTT user name."""

    names: Mapping[str, str] = field(default_factory=dict)
    """Agent device -> ThingsBoard device name (unlisted devices keep their id)."""
    seq_key: str | None = "edge_seq"


@dataclass(frozen=True, kw_only=True)
class AlinkOptions:
    """Alibaba Cloud IoT gateway ``product_key``/``device_name`` and its sub-devices."""

    product_key: str
    device_name: str
    device_secret: str = field(repr=False)
    sign_method: str = "hmacsha256"
    subdevices: Mapping[str, alink.SubDevice] = field(default_factory=dict)
    """Agent device -> its cloud identity (with its secret, for topo add and login)."""
    seq_property: str | None = "edge_seq"


@dataclass(frozen=True, kw_only=True)
class IotdaOptions:
    """Huawei IoTDA gateway ``gateway_id`` (secret auth) and its sub-devices."""

    gateway_id: str
    secret: str = field(repr=False)
    subdevices: Mapping[str, iotda.SubDevice] = field(default_factory=dict)
    seq_property: str | None = "edge_seq"


DialectOptions = SparkplugOptions | ThingsboardOptions | AlinkOptions | IotdaOptions


@dataclass(frozen=True, kw_only=True)
class Destination:
    """One place the agent publishes to, with its own cursor in the buffer."""

    id: str
    dialect: Dialect
    mqtt: MqttOptions
    options: DialectOptions | None = None
    """None for ``edge-json``; the options class of ``dialect`` otherwise."""
