"""Huawei Cloud IoTDA: a gateway reporting the properties of its sub-devices.

Pure encoding, no I/O. From Huawei's device documentation:

- client id ``{device_id}_0_{sig}_{YYYYMMDDHH}`` (UTC hour): ``0`` is the
  device-id identity type; ``sig`` 0 signs without the platform checking the
  timestamp against its clock, 1 with the check. The agent uses 0 by default,
  because a box's clock may be wrong exactly when it reconnects.
- password = lower-case hex HMAC-SHA256 *keyed by the timestamp string* over
  the device secret (the unusual direction is the documented one).
- the gateway batch report carries at most 100 sub-devices, a message at most
  1 MB; ``event_time`` is UTC ``yyyyMMdd'T'HHmmss'Z'`` (whole seconds).
- sub-device online/offline goes as ``sub_device_update_status`` events of the
  ``$sub_device_manager`` service, 1 to 100 statuses per request.
- no application-level reply to a property report: PUBACK is the only receipt.

A machine's events (docs/EVENTS.md) are properties of the service
``machine`` of its sub-device, one service entry per event. The box's own
events (``_box``: its clock) have no sub-device: they are refused and counted
like any device without a cloud identity (the gateway's own property report
would need a service of the gateway's product model the site does not name).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from drivers.base import Reading

from .common import Batch, Credentials, Encoded, Entry, Packet, Sheet, chunks, dumps, hmac_hex
from .common import pack as _pack

MAX_DEVICES = 100
MAX_STATUSES = 100
MAX_BYTES = 1024 * 1024
MACHINE_SERVICE = "machine"
"""The product-model service a machine's values are reported under (docs/EVENTS.md)."""


def hour_stamp(epoch_s: float) -> str:
    """The ``YYYYMMDDHH`` of ``epoch_s`` in UTC."""
    return time.strftime("%Y%m%d%H", time.gmtime(epoch_s))


def connect_credentials(
    device_id: str, secret: str, *, epoch_s: float, check_time: bool = False
) -> Credentials:
    """The CONNECT client id, username and password of one IoTDA device (secret auth)."""
    stamp = hour_stamp(epoch_s)
    return Credentials(
        client_id=f"{device_id}_0_{1 if check_time else 0}_{stamp}",
        username=device_id,
        password=hmac_hex("sha256", stamp, secret),
    )


def event_time(ts_ms: int) -> str:
    """``ts_ms`` as IoTDA's compact UTC form, ``20231101T080000Z``."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(ts_ms // 1000))


@dataclass(frozen=True)
class SubDevice:
    """The IoTDA identity of one agent device and its product-model service."""

    device_id: str
    service_id: str
    identifiers: Mapping[str, str] = field(default_factory=dict)
    """Agent tag name -> property name in the product model; unlisted tags keep their name."""


class _BatchSheet(Sheet):
    def __init__(self, topic: str, max_bytes: int) -> None:
        super().__init__(max_bytes)
        self.topic = topic
        self.devices: dict[str, list[object]] = {}

    def accepts(self, entry: Entry) -> bool:
        new = entry.key not in self.devices
        return super().accepts(entry) and not (new and len(self.devices) >= MAX_DEVICES)

    def add(self, entry: Entry) -> None:
        super().add(entry)
        self.devices.setdefault(entry.key, []).append(entry.body)

    def render(self, first_seq: int, index: int) -> tuple[str, bytes]:
        devices = [{"device_id": d, "services": s} for d, s in self.devices.items()]
        return self.topic, dumps({"devices": devices})


class IotdaGateway:
    """Encodes buffer batches as gateway batch property reports.

    Each reading is one service entry of its device, so a device's readings
    keep their own ``event_time``. ``seq_property`` names an int property of the
    service (declared in the product model) carrying the batch seq; None leaves it out.
    """

    def __init__(
        self,
        gateway_id: str,
        subdevices: Mapping[str, SubDevice],
        *,
        seq_property: str | None = "edge_seq",
        max_bytes: int = MAX_BYTES,
    ) -> None:
        self.gateway_id = gateway_id
        self.subdevices = dict(subdevices)
        self.seq_property = seq_property
        self.max_bytes = max_bytes
        self.topic = f"$oc/devices/{gateway_id}/sys/gateway/sub_devices/properties/report"

    def pack(self, batches: Iterable[Batch]) -> Encoded:
        """The batch reports for ``batches`` in order (see :func:`common.pack`)."""
        return _pack(
            batches,
            self._entries,
            lambda: _BatchSheet(self.topic, self.max_bytes),
            self.max_bytes,
            known=self.subdevices.__contains__,
        )

    def _entries(self, batch: Batch, reading: Reading) -> list[Entry]:
        sub = self.subdevices[batch.device]
        if not reading.values:
            return []  # tag errors are never values
        props: dict[str, object] = {
            sub.identifiers.get(n, n): reading.values[n] for n in sorted(reading.values)
        }
        if self.seq_property:
            props[self.seq_property] = batch.seq
        body = {
            "service_id": MACHINE_SERVICE if batch.events else sub.service_id,
            "properties": props,
            "event_time": event_time(reading.ts),
        }
        return [Entry(sub.device_id, body, count=len(props))]

    def status(
        self, statuses: Mapping[str, bool], *, event_id: str | None = None, now_ms: int
    ) -> list[Packet]:
        """``sub_device_update_status`` events: True = ONLINE, split by 100 statuses."""
        topic = f"$oc/devices/{self.gateway_id}/sys/events/up"
        packets = []
        for names in chunks(sorted(statuses), MAX_STATUSES):
            if not names:
                break
            listed = [
                {"device_id": d, "status": "ONLINE" if statuses[d] else "OFFLINE"} for d in names
            ]
            service: dict[str, object] = {
                "service_id": "$sub_device_manager",
                "event_type": "sub_device_update_status",
                "event_time": event_time(now_ms),
                "paras": {"device_statuses": listed},
            }
            if event_id is not None:
                service["event_id"] = event_id
            packets.append(Packet(topic, dumps({"services": [service]})))
        return packets
