"""Where does this site publish? The :class:`~agent.north.destination.Destination` records.

One per place the agent publishes to, in the order of the site file: the
``mqtt:`` section first when it is a destination (id ``mqtt``, edge-json; see
:mod:`agent.site.north` for when it is), then every ``north:`` entry. Each
connection is built by :func:`connection_options`, the one function that
turns a site's broker section into publisher options, so the ``mqtt``
section and a north entry with the same keys connect the same way. Secrets
come from the validated site (read by the loader from the file, ``${ENV}``
or their files); nothing here reads a file.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from agent.north.destination import (
    DEFAULT_ID,
    AlinkOptions,
    Destination,
    DialectOptions,
    IotdaOptions,
    SparkplugOptions,
    ThingsboardOptions,
)
from agent.north.dialects import alink, iotda
from agent.north.options import MqttOptions, TlsOptions
from agent.site import models as cfg
from agent.site.loader import DestinationSecrets, Site

__all__ = ["connection_options", "default_client_id", "destinations", "sparkplug_state_file"]


def default_client_id(agent_id: str, destination_id: str) -> str:
    """``edge-agent-<agent>`` for the ``mqtt`` destination, ``edge-agent-<agent>-<id>`` else.

    Distinct per destination, so two destinations on one broker never take
    over each other's session.
    """
    base = f"edge-agent-{agent_id}"
    return base if destination_id == DEFAULT_ID else f"{base}-{destination_id}"


def connection_options(
    site: Site,
    section: cfg.MqttSection,
    *,
    destination_id: str = DEFAULT_ID,
    password: str | None,
    username: str | None = None,
) -> MqttOptions:
    """The publisher's options for one broker section of ``site``.

    ``username`` replaces the section's (a ThingsBoard access token is sent
    as the user name); TLS files are taken relative to the site file, as
    validation checked them (the working directory is / under systemd).
    """
    tls = None
    if section.tls is not None:
        base = site.file.resolve().parent
        ca, cert, key = (
            None if p is None else base / p
            for p in (section.tls.ca, section.tls.cert, section.tls.key)
        )
        tls = TlsOptions(ca=ca, cert=cert, key=key, insecure=section.tls.insecure)
    return MqttOptions(
        host=section.host,
        port=section.port,
        client_id=section.client_id or default_client_id(site.agent.id, destination_id),
        username=username if username is not None else section.username,
        password=password,
        tls=tls,
        keepalive=section.keepalive,
        topic=section.topic,
        status_topic=section.status_topic,
        events_topic=section.events_topic,
        qos=section.qos,
        max_inflight=section.max_inflight,
        reconnect_max=section.reconnect_max,
        max_message_size=section.max_message_size,
    )


def sparkplug_state_file(site: Site, destination_id: str) -> Path:
    """Where a Sparkplug destination keeps its next bdSeq: ``<data_dir>/sparkplug-<id>.bdseq``."""
    return site.data_dir / f"sparkplug-{destination_id}.bdseq"


def destinations(site: Site) -> list[Destination]:
    """Every destination of ``site``, the ``mqtt`` one first when it is published to."""
    found = []
    if site.mqtt_is_destination:
        mqtt = connection_options(site, site.mqtt, password=site.mqtt_password)
        found.append(Destination(id=DEFAULT_ID, dialect="edge-json", mqtt=mqtt))
    for section in site.north:
        secrets = site.north_secrets.get(section.id, DestinationSecrets())
        connection = connection_options(
            site,
            section,
            destination_id=section.id,
            password=secrets.password,
            username=secrets.access_token if section.dialect == "thingsboard" else None,
        )
        options = _dialect_options(site, section, secrets)
        if isinstance(options, SparkplugOptions):  # DDATA goes at the connection's QoS
            connection = dataclasses.replace(connection, qos=options.data_qos)
        found.append(
            Destination(id=section.id, dialect=section.dialect, mqtt=connection, options=options)
        )
    return found


def _dialect_options(
    site: Site, section: cfg.NorthSection, secrets: DestinationSecrets
) -> DialectOptions | None:
    """The options record of ``section``'s dialect (validation made sure its block is there)."""
    if section.dialect == "sparkplug-b" and section.sparkplug is not None:
        block = section.sparkplug
        return SparkplugOptions(
            group_id=block.group_id,
            edge_node_id=block.edge_node_id or site.agent.id,
            primary_host=block.primary_host,
            data_qos=block.data_qos,
            state_file=sparkplug_state_file(site, section.id),
        )
    if section.dialect == "thingsboard":
        tb = section.thingsboard or cfg.ThingsboardBlock()
        return ThingsboardOptions(names=dict(tb.names), seq_key=tb.seq_key)
    if section.dialect == "alink" and section.alink is not None:
        ali = section.alink
        return AlinkOptions(
            product_key=ali.product_key,
            device_name=ali.device_name,
            device_secret=secrets.device_secret or "",
            sign_method=ali.sign_method,
            subdevices={
                device: alink.SubDevice(
                    product_key=sub.product_key,
                    device_name=sub.device_name,
                    secret=secrets.subdevices.get(device, ""),
                    identifiers=dict(sub.identifiers),
                    float_tags=frozenset(sub.float_tags),
                )
                for device, sub in ali.subdevices.items()
            },
            seq_property=ali.seq_property,
        )
    if section.dialect == "iotda" and section.iotda is not None:
        hw = section.iotda
        return IotdaOptions(
            gateway_id=hw.gateway_id,
            secret=secrets.device_secret or "",
            subdevices={
                device: iotda.SubDevice(
                    device_id=sub.device_id,
                    service_id=sub.service_id,
                    identifiers=dict(sub.identifiers),
                )
                for device, sub in hw.subdevices.items()
            },
            seq_property=hw.seq_property,
        )
    return None
