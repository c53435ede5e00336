"""The Alibaba Alink gateway session: sign in, bind and log in sub-devices, pair replies.

One MQTT connection is the gateway's device certificate
(``options.product_key`` / ``device_name``); every agent device listed in
``options.subdevices`` is a sub-device speaking through it.

- CONNECT: :meth:`AlinkSession.credentials` signs the gateway triple with the
  connect time, afresh before each CONNECT. No Will (Alibaba supports none).
- After CONNACK: ``thing.topo.add`` (30 sub-devices a request, each signed with
  its own secret), then one ``combine.login`` per sub-device that answers.
  Data waits (:meth:`AlinkSession.ready` is False) until every one of them has
  a successful ``login_reply``. Before that, from :meth:`AlinkSession.credentials`
  (asked before each CONNECT) until :meth:`AlinkSession.on_connect`, ``ready``
  is True: the publisher sends ``on_connect`` only to a ready session, and here
  those messages are what makes it ready. A login refused because the topology was not
  there yet (6401) is sent once more when a ``topo/add_reply`` succeeds; any
  other refusal keeps the destination waiting, with a note naming the device,
  the code and the message, until the next connection.
- Sub-device session messages go at QoS 0 (the only QoS the platform gives
  them); topo add at QoS 1. A sub-device that stops answering is logged out
  and logged in again when it answers; the goodbye logs out every sub-device.
- Data: gateway pack posts (:class:`~agent.north.dialects.alink.AlinkGateway`),
  ``sys.ack`` 1. The post's ``id`` is the :meth:`AlinkSession.reply_key`: the
  publisher holds the packet until its ``post_reply``. Ids come from one
  counter for every request of the gateway, never below the milliseconds since
  UTC midnight, so they increase and a restart later the same day does not
  repeat an earlier id (ids must be unique per device per day, below 2**32).

``post_reply`` verdicts: 200 accepted; refused for the codes in
:data:`~agent.north.dialects.alink.REFUSED_CODES` (the content itself: 460
empty or malformed parameters or too many, 6106 more than 200 properties,
6207 not JSON, 6300/6450 no method, 6320/6321 a property not in the thing
model, 6302-6328 a value not matching the thing model); everything else is
retry: 429 and 6452 throttled, 500/400/6760 platform faults, 6313 the model
check unavailable, 520 a sub-device session error, and any code not listed.
Errors the platform sends on ``/ext/error/{pk}/{dn}`` become a note, and a
retry for the request they name.

Duplicates and loss, as a consumer sees them: every property sample carries
the batch seq as the ``options.seq_property`` property (``edge_seq``). A post
sent again (no reply, a retry verdict, a new connection) repeats samples with
the same ``time`` and ``edge_seq`` under the same or a new request id: the
consumer sees a repeat as the same (device, edge_seq). The seq is the agent's
buffer seq, one number per batch for all devices of the agent, increasing by
one (a jump after the buffer lost its database is counted as dropped batches):
merged over the agent's sub-devices, a missing ``edge_seq`` is a lost batch,
except a batch that held only tag errors or was refused (both counted in the
agent's status).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from agent.north.destination import AlinkOptions
from agent.north.dialects import alink
from agent.north.dialects.common import Batch, Credentials, Encoded, Packet, payload_room
from agent.north.session import DeviceFacts, Outgoing, Reaction, ReplyVerdict

DAY_MS = 86_400_000
MAX_TOPO = 30
"""Sub-devices per ``thing.topo.add`` request."""
TOPO_MISSING = 6401
_ID = re.compile(rb'\{"id":"(\d+)"')

State = Literal["pending", "online", "refused", "offline"]


@dataclass
class _Sub:
    state: State = "pending"
    login_id: str | None = None
    refusal: str | None = None
    refusal_code: object = None
    retried: bool = False
    """A login refused for a missing topology was sent once more on this connection."""


class AlinkSession:
    """One Alibaba gateway destination (see the module docstring).

    ``tls`` says whether the connection is TLS: it is part of the signed client id.
    """

    def __init__(
        self,
        options: AlinkOptions,
        agent_id: str,
        facts: Mapping[str, DeviceFacts],
        *,
        tls: bool = True,
        max_bytes: int = alink.MAX_BYTES,
    ) -> None:
        self.options = options
        self.agent_id = agent_id
        self.facts = dict(facts)
        self.tls = tls
        self._ceiling = max_bytes
        pk, dn = options.product_key, options.device_name
        self._gateway = alink.AlinkGateway(
            pk, dn, options.subdevices, seq_property=options.seq_property, max_bytes=max_bytes
        )
        self._subs = {device: _Sub() for device in options.subdevices}
        self._next_id = 0
        self._offline: set[str] = set()
        self._topo_ok = False
        self._greeting_due = False
        """A CONNECT is under way whose topo add and logins were not sent yet."""
        self.topics = {
            "topo": f"/sys/{pk}/{dn}/thing/topo/add_reply",
            "login": f"/ext/session/{pk}/{dn}/combine/login_reply",
            "logout": f"/ext/session/{pk}/{dn}/combine/logout_reply",
            "post": self._gateway.reply_topic,
            "error": f"/ext/error/{pk}/{dn}",
        }

    # -- ids ------------------------------------------------------------------
    def _take_ids(self, now_ms: int, count: int = 1) -> int:
        """The first of ``count`` fresh request ids (see the module docstring)."""
        first = max(self._next_id, now_ms % DAY_MS)
        self._next_id = first + count
        return first % alink.ID_MODULUS

    # -- the Session protocol -------------------------------------------------
    def credentials(self, now_ms: int) -> Credentials | None:
        self._greeting_due = True  # asked before each CONNECT: a new connection
        o = self.options
        return alink.connect_credentials(
            o.product_key,
            o.device_name,
            o.device_secret,
            timestamp_ms=now_ms,
            tls=self.tls,
            method=o.sign_method,
        )

    def will(self, now_ms: int) -> Outgoing | None:
        return None

    def subscriptions(self) -> Sequence[tuple[str, int]]:
        return [(topic, 1) for topic in self.topics.values()]

    def limit(self, max_message_size: int) -> None:
        self._gateway.max_bytes = min(self._ceiling, payload_room(max_message_size))

    def on_connect(self, now_ms: int) -> Sequence[Outgoing]:
        self._greeting_due = False
        self._topo_ok = False
        for device, sub in self._subs.items():
            sub.state = "offline" if device in self._offline else "pending"
            sub.login_id, sub.refusal, sub.retried = None, None, False
        devices = list(self._subs)
        out: list[Outgoing] = []
        for i in range(0, len(devices), MAX_TOPO):
            subs = [self.options.subdevices[d] for d in devices[i : i + MAX_TOPO]]
            msg_id = self._take_ids(now_ms)
            packet = alink.topo_add(
                self.options.product_key,
                self.options.device_name,
                subs,
                msg_id=msg_id,
                timestamp_ms=now_ms,
            )
            out.append(Outgoing(packet.topic, packet.payload, 1, False))
        out.extend(self._login(d, now_ms) for d in devices if d not in self._offline)
        return out

    def ready(self) -> bool:
        if self._greeting_due:
            return True  # only on_connect may go: its logins are what makes data wait
        return all(sub.state in ("online", "offline") for sub in self._subs.values())

    def encode(self, batches: Sequence[Batch], now_ms: int, *, historical: bool) -> Encoded:
        # Reserve an id for every packet the batches could need; unused ones are skipped.
        first = max(self._next_id, now_ms % DAY_MS)
        encoded = self._gateway.pack(batches, first_id=first % alink.ID_MODULUS)
        self._next_id = first + len(encoded.packets)
        return encoded

    def reply_key(self, packet: Packet) -> str | None:
        found = _ID.match(packet.payload)
        return found.group(1).decode() if found else None

    def on_message(self, topic: str, payload: bytes, now_ms: int) -> Reaction:
        handlers = {
            self.topics["post"]: self._post_reply,
            self.topics["login"]: self._login_reply,
            self.topics["topo"]: self._topo_reply,
            self.topics["logout"]: self._logout_reply,
            self.topics["error"]: self._error,
        }
        handler = handlers.get(topic)
        if handler is None:
            return Reaction(note=f"ignored a message on {topic!r}")
        return handler(payload, now_ms)

    def device_state(self, device: str, online: bool, now_ms: int) -> Sequence[Outgoing]:
        if device not in self._subs:
            return ()
        sub = self._subs[device]
        if online:
            if device not in self._offline:
                return ()
            self._offline.discard(device)
            sub.state = "pending"
            return (self._login(device, now_ms),)
        if device in self._offline:
            return ()
        self._offline.add(device)
        sub.state, sub.login_id = "offline", None
        return (self._logout(device, now_ms),)

    def goodbye(self, now_ms: int) -> Sequence[Outgoing]:
        return [self._logout(d, now_ms) for d in self._subs if d not in self._offline]

    # -- helpers --------------------------------------------------------------
    def _login(self, device: str, now_ms: int) -> Outgoing:
        msg_id = self._take_ids(now_ms)
        self._subs[device].login_id = str(msg_id)
        o = self.options
        packet = alink.login(
            o.product_key,
            o.device_name,
            o.subdevices[device],
            msg_id=msg_id,
            timestamp_ms=now_ms,
        )
        return Outgoing(packet.topic, packet.payload, 0, False)

    def _logout(self, device: str, now_ms: int) -> Outgoing:
        o = self.options
        packet = alink.logout(
            o.product_key, o.device_name, o.subdevices[device], msg_id=self._take_ids(now_ms)
        )
        return Outgoing(packet.topic, packet.payload, 0, False)

    def _post_reply(self, payload: bytes, now_ms: int) -> Reaction:
        try:
            reply = alink.parse_reply(payload)
        except ValueError as exc:
            return Reaction(note=f"unreadable pack post reply: {exc}")
        verdict = _VERDICTS[reply.verdict]
        note = None
        if verdict != "accepted":
            note = f"pack post {reply.msg_id} {verdict}: {reply.code} {reply.message}"
        return Reaction(replies=((reply.msg_id, verdict),), note=note)

    def _logout_reply(self, payload: bytes, now_ms: int) -> Reaction:
        body = _body(payload)
        if body is None or body.get("code") in (200, 520):  # 520: no session, already out
            return Reaction()
        return Reaction(note=f"sub-device logout refused: {_code(body)}")

    def _login_reply(self, payload: bytes, now_ms: int) -> Reaction:
        body = _body(payload)
        if body is None:
            return Reaction(note="unreadable sub-device login reply")
        return self._login_result(
            body, self._device_of(str(body.get("id", "")), body.get("data")), now_ms
        )

    def _login_result(self, body: Mapping[str, Any], device: str | None, now_ms: int) -> Reaction:
        if device is None:
            return Reaction(note=f"login reply for no pending sub-device: {_code(body)}")
        sub = self._subs[device]
        if sub.state == "offline":
            return Reaction()  # logged out since: this login no longer counts
        if body.get("code") == 200:
            sub.state, sub.refusal = "online", None
            return Reaction(ready_changed=True)
        sub.state, sub.refusal, sub.refusal_code = "refused", _code(body), body.get("code")
        note = f"login of {device} refused: {sub.refusal}"
        if body.get("code") == TOPO_MISSING and self._topo_ok and not sub.retried:
            sub.retried, sub.state = True, "pending"  # bound since this login was sent
            return Reaction(send=(self._login(device, now_ms),), note=note)
        return Reaction(ready_changed=True, note=note)

    def _device_of(self, msg_id: str, data: object) -> str | None:
        for device, sub in self._subs.items():
            if sub.login_id == msg_id:
                return device
        if isinstance(data, dict):  # a reply without our id still names the sub-device
            for device, cloud in self.options.subdevices.items():
                if (data.get("productKey"), data.get("deviceName")) == (
                    cloud.product_key,
                    cloud.device_name,
                ):
                    return device
        return None

    def _topo_reply(self, payload: bytes, now_ms: int) -> Reaction:
        body = _body(payload)
        if body is None:
            return Reaction(note="unreadable topo add reply")
        if body.get("code") != 200:
            return Reaction(note=f"topo add refused: {_code(body)}")
        self._topo_ok = True
        again = [
            d
            for d, sub in self._subs.items()
            if sub.state == "refused" and sub.refusal_code == TOPO_MISSING and not sub.retried
        ]
        for device in again:
            self._subs[device].state, self._subs[device].retried = "pending", True
        return Reaction(
            send=tuple(self._login(d, now_ms) for d in again), ready_changed=bool(again)
        )

    def _error(self, payload: bytes, now_ms: int) -> Reaction:
        body = _body(payload)
        if body is None:
            return Reaction(note="unreadable platform error message")
        msg_id = str(body.get("id", ""))
        login = next((d for d, s in self._subs.items() if msg_id and s.login_id == msg_id), None)
        if login is not None:
            return self._login_result(body, login, now_ms)
        note = f"platform error: {_code(body)}"
        if not msg_id:
            return Reaction(note=note)
        return Reaction(replies=((msg_id, "retry"),), note=note)


_VERDICTS: dict[alink.Verdict, ReplyVerdict] = {
    alink.Verdict.ACCEPTED: "accepted",
    alink.Verdict.REFUSED: "refused",
    alink.Verdict.RETRY: "retry",
}


def _body(payload: bytes) -> dict[str, Any] | None:
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    return body if isinstance(body, dict) else None


def _code(body: Mapping[str, Any]) -> str:
    return f"{body.get('code')} {body.get('message', '')}".rstrip()
