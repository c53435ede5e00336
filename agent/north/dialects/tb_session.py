"""The ThingsBoard gateway session: what one connection says around the telemetry.

The gateway device's access token is the configured MQTT user name, so
:meth:`TbSession.credentials` keeps the destination's own. After CONNACK the
session announces every device that answers (``v1/gateway/connect``, its
profile ``name@hash`` as device type, so ThingsBoard creates it with that
device profile on first sight), then sends their client attributes: profile,
vendor, model, the static facts, and an empty ``last_error``.

- Will: none. A Will names one topic and one payload, and the gateway topics
  speak for many devices; ThingsBoard ends the gateway's device sessions
  itself when the gateway's connection closes, and marks the gateway inactive
  by its own activity timeout.
- Receipts: ThingsBoard has no application reply to telemetry, so a packet's
  PUBACK confirms it (:meth:`TbSession.reply_key` is always None).
- Tag errors are never telemetry values: when the set of errors of a device
  changes, ``encode`` adds a ``last_error`` / ``last_error_ts`` attributes
  packet after the telemetry (an empty text clears it, a long one is cut to
  ``max_bytes``); that packet finishes the batches whose errors it carries.
- A device that stops answering gets ``v1/gateway/disconnect``; when it
  answers again, ``v1/gateway/connect`` once more. The goodbye disconnects
  every connected device. Nothing here asks for a rebirth.

Machines (docs/EVENTS.md) are devices of the gateway, announced with their
facts (device type ``machine@1``): their events are telemetry at each event's
``ts``, and ``state``, ``state_reason``, ``mode`` and the ``alarm_*`` values
also client attributes (one packet after the telemetry, which finishes those
batches), so a machine's page shows its current state. The box's own events
(``_box``: its clock) are the gateway device's own telemetry
(``v1/devices/me/telemetry``).

Duplicates and loss, as a consumer sees them: every sample carries the batch
seq under ``options.seq_key`` (``edge_seq``). A packet sent again after a lost
PUBACK repeats its samples with the same ``ts`` and ``edge_seq``; ThingsBoard
keeps one value per (device, key, ts), so a repeat overwrites itself. The seq
is the agent's buffer seq: one number per batch, shared by all devices of the
agent, increasing by one (a jump after the buffer lost its database is counted
as dropped batches). Merged over all the agent's devices, a missing
``edge_seq`` is a lost batch, except a batch that held only tag errors (it has
no telemetry; its errors are in ``last_error``) or that was refused (counted
in the agent's status).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from agent.north.destination import ThingsboardOptions
from agent.north.dialects import thingsboard as tb
from agent.north.dialects.common import (
    Batch,
    Credentials,
    Encoded,
    Packet,
    dumps,
    payload_room,
)
from agent.north.facts import BOX_SOURCE, machine_attributes
from agent.north.session import DeviceFacts, Outgoing, Reaction
from drivers.base import Value

QOS = 1


class TbSession:
    """One ThingsBoard gateway destination (see the module docstring)."""

    def __init__(
        self,
        options: ThingsboardOptions,
        agent_id: str,
        facts: Mapping[str, DeviceFacts],
        *,
        max_bytes: int = tb.MAX_BYTES,
    ) -> None:
        self.options = options
        self.agent_id = agent_id
        self.facts = dict(facts)
        self.max_bytes = self._ceiling = max_bytes
        self._gateway = tb.TbGateway(options.names, seq_key=options.seq_key, max_bytes=max_bytes)
        self._offline: set[str] = set()
        """Agent devices known not to answer: not announced until they answer again."""
        self._errors: dict[str, dict[str, str]] = {}
        """The tag errors last sent per agent device, on this connection."""

    def name(self, device: str) -> str:
        """The ThingsBoard device name of an agent device."""
        return self.options.names.get(device, device)

    def credentials(self, now_ms: int) -> Credentials | None:
        return None  # the access token is the configured user name

    def will(self, now_ms: int) -> Outgoing | None:
        return None

    def subscriptions(self) -> Sequence[tuple[str, int]]:
        return ()  # no shared attributes or RPC are served

    def limit(self, max_message_size: int) -> None:
        self.max_bytes = min(self._ceiling, payload_room(max_message_size))
        self._gateway.max_bytes = self.max_bytes

    def on_connect(self, now_ms: int) -> Sequence[Outgoing]:
        self._errors = {device: {} for device in self.facts}  # on_connect clears last_error
        online = [d for d in self.facts if d not in self._offline]
        out = [_out(tb.connect(self.name(d), self.facts[d].profile)) for d in online]
        attributes = {self.name(d): self._attributes(self.facts[d]) for d in self.facts}
        out.extend(_out(p) for p in self._attribute_packets(attributes))
        return out

    def ready(self) -> bool:
        return True

    def encode(self, batches: Sequence[Batch], now_ms: int, *, historical: bool) -> Encoded:
        """Telemetry packets, then one ``last_error`` packet per device whose errors changed.

        A batch that changed its device's errors is finished by that attributes
        packet (its errors travel there), not by the telemetry before it: it is
        acknowledged only once its errors were confirmed too.
        """
        own = [b for b in batches if b.device == BOX_SOURCE and b.events]
        if own:
            batches = [b for b in batches if not (b.device == BOX_SOURCE and b.events)]
        encoded = self._gateway.pack(batches)
        changed: dict[str, tuple[dict[str, str], int]] = {}
        owners: dict[str, list[int]] = {}
        states: dict[str, dict[str, Value]] = {}  # machine -> its state attributes
        state_owners: list[int] = []
        for batch in batches:
            for reading in batch.readings:
                if batch.events:
                    found = machine_attributes(reading.values)
                    if found:
                        states.setdefault(batch.device, {}).update(found)
                        if batch.seq not in state_owners:
                            state_owners.append(batch.seq)
                    continue
                if reading.errors != self._errors.get(batch.device, {}):
                    self._errors[batch.device] = dict(reading.errors)
                    changed[batch.device] = (dict(reading.errors), reading.ts)
                    seqs = owners.setdefault(batch.device, [])
                    if batch.seq not in seqs:
                        seqs.append(batch.seq)
        extra = [
            replace(
                tb.error_attributes(self.name(d), e, ts, self.max_bytes),
                done=tuple(owners[d]),
                data=False,
            )
            for d, (e, ts) in changed.items()
        ]
        if states:
            names = {self.name(d): values for d, values in states.items()}
            extra.append(replace(tb.attributes(names), done=tuple(state_owners), data=False))
        if extra:
            moved = {seq for seqs in owners.values() for seq in seqs} | set(state_owners)
            packets = [
                replace(p, done=tuple(s for s in p.done if s not in moved)) for p in encoded.packets
            ]
            idle = tuple(s for s in encoded.idle if s not in moved)
            encoded = Encoded((*packets, *extra), encoded.refused, idle)
        if not own:
            return encoded
        mine = self._gateway.pack_own(own)
        return Encoded(
            (*encoded.packets, *mine.packets),
            (*encoded.refused, *mine.refused),
            (*encoded.idle, *mine.idle),
        )

    def reply_key(self, packet: Packet) -> str | None:
        return None  # PUBACK is the only receipt ThingsBoard gives

    def on_message(self, topic: str, payload: bytes, now_ms: int) -> Reaction:
        return Reaction(note=f"ignored a message on {topic!r}: no ThingsBoard topic is served")

    def device_state(self, device: str, online: bool, now_ms: int) -> Sequence[Outgoing]:
        if device not in self.facts:
            return ()
        if online:
            if device not in self._offline:
                return ()
            self._offline.discard(device)
            return (_out(tb.connect(self.name(device), self.facts[device].profile)),)
        if device in self._offline:
            return ()
        self._offline.add(device)
        return (_out(tb.disconnect(self.name(device))),)

    def goodbye(self, now_ms: int) -> Sequence[Outgoing]:
        return [_out(tb.disconnect(self.name(d))) for d in self.facts if d not in self._offline]

    @staticmethod
    def _attributes(facts: DeviceFacts) -> dict[str, Value]:
        out: dict[str, Value] = {"profile": facts.profile}
        if facts.vendor is not None:
            out["vendor"] = facts.vendor
        if facts.model is not None:
            out["model"] = facts.model
        out.update(facts.static)
        out["last_error"] = ""
        return out

    def _attribute_packets(self, attributes: Mapping[str, Mapping[str, Value]]) -> list[Packet]:
        """Client attributes of many devices, several devices a packet, under ``max_bytes``."""
        packets: list[Packet] = []
        sheet: dict[str, Mapping[str, Value]] = {}
        size = 2
        for name, values in attributes.items():
            cost = len(dumps({name: dict(values)}))
            if sheet and size + cost > self.max_bytes:
                packets.append(tb.attributes(sheet))
                sheet, size = {}, 2
            sheet[name] = values
            size += cost
        if sheet:
            packets.append(tb.attributes(sheet))
        return packets


def _out(packet: Packet) -> Outgoing:
    return Outgoing(packet.topic, packet.payload, QOS, False)
