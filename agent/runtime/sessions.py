"""Which dialect session a destination gets, and what it may say about each device.

A destination's dialect decides its :class:`~agent.north.session.Session`
(``edge-json`` has none: the stored message is sent as it is). The facts a
session announces (Sparkplug DBIRTH metrics, ThingsBoard attributes, the
device type) come from the merged site: each device's profile and its tags.
A machine of ``analytics.machines`` is announced like a device
(:func:`machine_facts`): profile ``machine@1``, the values its events become
(:func:`agent.north.facts.machine_tags`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from agent import __version__
from agent.north.destination import (
    AlinkOptions,
    Destination,
    IotdaOptions,
    SparkplugOptions,
    ThingsboardOptions,
)
from agent.north.facts import MACHINE_PROFILE, machine_tags
from agent.north.options import payload_budget
from agent.north.session import DeviceFacts, Session, TagSpec
from agent.site.device import DeviceConfig

if TYPE_CHECKING:
    from agent.compute.plan import MachinePlan

__all__ = ["device_facts", "machine_facts", "make_session"]


def device_facts(devices: list[DeviceConfig]) -> dict[str, DeviceFacts]:
    """What each enabled device is, for the dialects that announce devices."""
    facts: dict[str, DeviceFacts] = {}
    for device in devices:
        if not device.enabled:
            continue
        profile = (
            f"{device.profile}@{device.profile_hash}" if device.profile else f"({device.kind})"
        )
        tags = tuple(TagSpec(name, None, tag.unit) for name, tag in device.options.tags.items())
        # a derived tag's type is known from its formula, before its first value
        tags += tuple(TagSpec(d.name, d.datatype, d.attrs.unit) for d in device.derived)
        facts[device.id] = DeviceFacts(
            device=device.id,
            profile=profile,
            vendor=device.vendor,
            model=device.model,
            tags=tags,
            static={"agent_version": __version__, "driver": device.kind},
        )
    return facts


def machine_facts(machines: Sequence[MachinePlan]) -> dict[str, DeviceFacts]:
    """What each machine is, announced next to the devices (same mapping, merge both)."""
    return {
        plan.name: DeviceFacts(
            device=plan.name,
            profile=MACHINE_PROFILE,
            tags=machine_tags([c.role for c in plan.counters], [a.name for a in plan.alarms]),
            static={"agent_version": __version__},
        )
        for plan in machines
    }


def make_session(
    destination: Destination, agent_id: str, facts: Mapping[str, DeviceFacts]
) -> Session | None:
    """The session of ``destination``'s dialect; None for ``edge-json``.

    Each session cuts its packets to the smaller of the cloud's own limit and
    the destination's ``max_message_size`` (the PUBLISH header included).
    """
    o, mqtt = destination.options, destination.mqtt
    limit = mqtt.max_message_size

    def budget(cloud: int) -> int:
        # the longest topic of these dialects stays well under 512 bytes
        return min(cloud, payload_budget(limit, "t" * 512))

    # each dialect is imported when a destination speaks it: an edge-json box loads
    # neither protobuf nor the cloud sessions (a few MB of RSS on a small box)
    if destination.dialect == "edge-json":
        return None
    if destination.dialect == "sparkplug-b" and isinstance(o, SparkplugOptions):
        from agent.north.sparkplug.session import SparkplugSession

        return SparkplugSession(o, agent_id, facts, max_message_size=limit)
    if destination.dialect == "thingsboard" and isinstance(o, ThingsboardOptions):
        from agent.north.dialects import thingsboard as tb
        from agent.north.dialects.tb_session import TbSession

        return TbSession(o, agent_id, facts, max_bytes=budget(tb.MAX_BYTES))
    if destination.dialect == "alink" and isinstance(o, AlinkOptions):
        from agent.north.dialects import alink
        from agent.north.dialects.alink_session import AlinkSession

        return AlinkSession(
            o, agent_id, facts, tls=mqtt.tls is not None, max_bytes=budget(alink.MAX_BYTES)
        )
    if destination.dialect == "iotda" and isinstance(o, IotdaOptions):
        from agent.north.dialects import iotda
        from agent.north.dialects.iotda_session import IotdaSession

        return IotdaSession(o, agent_id, facts, max_bytes=budget(iotda.MAX_BYTES))
    raise ValueError(
        f"destination {destination.id}: dialect {destination.dialect} has no options of its kind"
    )
