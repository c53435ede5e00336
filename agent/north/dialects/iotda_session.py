"""The Huawei IoTDA gateway session: sign in each CONNECT, report sub-device status.

One MQTT connection is the gateway ``options.gateway_id`` (secret auth);
every agent device listed in ``options.subdevices`` is a sub-device whose
properties go in the gateway's batch report
(``$oc/devices/{gateway}/sys/gateway/sub_devices/properties/report``).

- CONNECT: :meth:`IotdaSession.credentials` computes the client id and the
  password from the current UTC hour (``YYYYMMDDHH``, the HMAC key), afresh
  before each CONNECT, so a reconnect in a new hour signs that hour. Sign
  type 0: the platform does not check the hour against its clock. No Will
  (IoTDA supports none).
- After CONNACK: one ``sub_device_update_status`` event (100 statuses a
  message) saying every sub-device ONLINE, or OFFLINE for those known not to
  answer: the platform keeps showing a sub-device online after the gateway
  drops, until the gateway says otherwise. A device that stops answering (or
  answers again) gets its own status event; the goodbye says OFFLINE for all.
- Subscribed: the gateway's ``sys/events/down``. A status response listing
  failed devices becomes a note; other events, commands and property
  requests are not served (a note, no reply).

What IoTDA confirms: a batch report has no application reply, so its PUBACK
is the receipt (:meth:`IotdaSession.reply_key` is None). The PUBACK says the
platform took the message, not that every property passed the product model:
a service or property the model lacks, or a device that is not this gateway's
sub-device, is dropped by the platform without a word to the gateway.

Duplicates and loss, as a consumer sees them: every service entry carries the
batch seq as the ``options.seq_property`` property (``edge_seq``). A report
sent again after a lost PUBACK repeats entries with the same ``event_time``
and ``edge_seq``: the consumer sees a repeat as the same (device_id, edge_seq)
arriving twice. The seq is the agent's buffer seq, one number per batch for
all devices of the agent, increasing by one (a jump after the buffer lost its
database is counted as dropped batches): merged over the agent's sub-devices,
a missing ``edge_seq`` is a lost batch, except a batch that held only tag
errors or was refused (both counted in the agent's status).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from agent.north.destination import IotdaOptions
from agent.north.dialects import iotda
from agent.north.dialects.common import (
    Batch,
    Credentials,
    Encoded,
    Packet,
    chunks,
    payload_room,
)
from agent.north.session import DeviceFacts, Outgoing, Reaction

QOS = 1
STATUS_RESPONSE = "sub_device_update_status_response"


class IotdaSession:
    """One Huawei IoTDA gateway destination (see the module docstring)."""

    def __init__(
        self,
        options: IotdaOptions,
        agent_id: str,
        facts: Mapping[str, DeviceFacts],
        *,
        max_bytes: int = iotda.MAX_BYTES,
    ) -> None:
        self.options = options
        self.agent_id = agent_id
        self.facts = dict(facts)
        self._ceiling = max_bytes
        self._gateway = iotda.IotdaGateway(
            options.gateway_id,
            options.subdevices,
            seq_property=options.seq_property,
            max_bytes=max_bytes,
        )
        self._offline: set[str] = set()
        self._events = 0
        self.events_down = f"$oc/devices/{options.gateway_id}/sys/events/down"

    def credentials(self, now_ms: int) -> Credentials | None:
        return iotda.connect_credentials(
            self.options.gateway_id, self.options.secret, epoch_s=now_ms / 1000
        )

    def will(self, now_ms: int) -> Outgoing | None:
        return None

    def subscriptions(self) -> Sequence[tuple[str, int]]:
        return [(self.events_down, 1)]

    def limit(self, max_message_size: int) -> None:
        self._gateway.max_bytes = min(self._ceiling, payload_room(max_message_size))

    def on_connect(self, now_ms: int) -> Sequence[Outgoing]:
        return self._status({d: d not in self._offline for d in self.options.subdevices}, now_ms)

    def ready(self) -> bool:
        return True

    def encode(self, batches: Sequence[Batch], now_ms: int, *, historical: bool) -> Encoded:
        return self._gateway.pack(batches)

    def reply_key(self, packet: Packet) -> str | None:
        return None  # PUBACK is the only receipt of a property report

    def on_message(self, topic: str, payload: bytes, now_ms: int) -> Reaction:
        if topic != self.events_down:
            return Reaction(note=f"ignored a message on {topic!r}: not served")
        try:
            body = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return Reaction(note="unreadable IoTDA event")
        services = body.get("services") if isinstance(body, dict) else None
        if not isinstance(services, list):
            return Reaction(note="IoTDA event without services")
        notes = [_event_note(s) for s in services if isinstance(s, dict)]
        text = "; ".join(n for n in notes if n)
        return Reaction(note=text or None)

    def device_state(self, device: str, online: bool, now_ms: int) -> Sequence[Outgoing]:
        if device not in self.options.subdevices or online == (device not in self._offline):
            return ()
        if online:
            self._offline.discard(device)
        else:
            self._offline.add(device)
        return self._status({device: online}, now_ms)

    def goodbye(self, now_ms: int) -> Sequence[Outgoing]:
        return self._status(dict.fromkeys(self.options.subdevices, False), now_ms)

    def _status(self, states: Mapping[str, bool], now_ms: int) -> list[Outgoing]:
        cloud = {self.options.subdevices[d].device_id: up for d, up in states.items()}
        out: list[Outgoing] = []
        for names in chunks(sorted(cloud), iotda.MAX_STATUSES):
            if not names:
                break
            self._events += 1  # one event id per request, to pair its response
            event_id = f"{self.agent_id}-{now_ms}-{self._events}"
            part = {d: cloud[d] for d in names}
            packets = self._gateway.status(part, event_id=event_id, now_ms=now_ms)
            out.extend(Outgoing(p.topic, p.payload, QOS, False) for p in packets)
        return out


def _event_note(service: Mapping[str, Any]) -> str | None:
    kind = service.get("event_type")
    if kind != STATUS_RESPONSE:
        return f"ignored IoTDA event {kind!r}"
    paras = service.get("paras")
    failed = paras.get("failed_devices") if isinstance(paras, dict) else None
    if not failed:
        return None
    parts = [
        f"{f.get('device_id')}: {f.get('error_code')} {f.get('error_msg', '')}".rstrip()
        for f in failed
        if isinstance(f, dict)
    ]
    return "sub-device status refused for " + ", ".join(parts)
