"""Alibaba Cloud IoT Platform (Alink JSON): a gateway reporting for its sub-devices.

Pure encoding, no I/O: CONNECT credentials, the sub-device topology-add and
login requests (each signed with the sub-device's own secret), the gateway
"pack" post that carries many sub-devices in one message, and the reading of
its ``post_reply``. The gateway's wiring (topics to subscribe, the order
connect -> topo add -> login -> pack posts, the clock) is not here.

Rules kept here, from Alibaba's device documentation:

- password = HMAC(DeviceSecret, the sent parameters sorted by name, each name
  followed by its value, no separators); the client id before the first ``|``
  is the one signed; ``securemode=2`` is TLS, ``3`` plain TCP.
- a pack carries at most 200 properties, 20 events and 20 sub-devices; every
  property is keyed by its identifier, so one pack holds one sample per
  property of a sub-device: a device's second reading goes to the next pack.
- a float or double property always carries a decimal point (``10.0``).
- the message ``id`` is a decimal string below 2**32, unique per device per day;
  it pairs the reply. A batch may span packs (a reading wider than 200
  properties), so ids are not seqs: the caller passes ``first_id`` and keeps
  the counter; the seq travels in ``edge_seq``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import Enum
from typing import Any

import orjson

from agent.north.facts import BOX_SOURCE, event_values
from drivers.base import Reading, Value

from .common import Batch, Credentials, Encoded, Entry, Packet, Sheet, chunks, dumps, hmac_hex
from .common import pack as _pack

MAX_PROPERTIES = 200
MAX_EVENTS = 20
MAX_SUB_DEVICES = 20
MAX_BYTES = 256 * 1024
"""Per-message size: not found in the stored documentation; the commonly cited value."""
ID_MODULUS = 2**32
SIGN_METHODS = {"hmacmd5": "md5", "hmacsha1": "sha1", "hmacsha256": "sha256"}


def sign(secret: str, params: Mapping[str, str], method: str = "hmacsha256") -> str:
    """Lower-case hex HMAC of ``params`` sorted by name and concatenated name+value."""
    content = "".join(f"{name}{params[name]}" for name in sorted(params))
    return hmac_hex(SIGN_METHODS[method.lower()], secret, content)


def connect_credentials(
    product_key: str,
    device_name: str,
    device_secret: str,
    *,
    timestamp_ms: int,
    client_id: str | None = None,
    tls: bool = True,
    method: str = "hmacsha256",
) -> Credentials:
    """The CONNECT client id, username and password of one device certificate.

    ``client_id`` defaults to ``{productKey}.{deviceName}`` (what Alibaba's SDKs
    use); the platform does not check the timestamp for freshness, it only
    re-signs what it is sent.
    """
    cid = client_id if client_id is not None else f"{product_key}.{device_name}"
    mode = 2 if tls else 3
    signed = {
        "clientId": cid,
        "deviceName": device_name,
        "productKey": product_key,
        "timestamp": str(timestamp_ms),
    }
    return Credentials(
        client_id=f"{cid}|securemode={mode},signmethod={method},timestamp={timestamp_ms}|",
        username=f"{device_name}&{product_key}",
        password=sign(device_secret, signed, method),
    )


@dataclass(frozen=True)
class SubDevice:
    """The cloud identity of one agent device, and how its tags map to the thing model.

    ``secret`` is the sub-device's DeviceSecret (from the environment or a
    credential file, never the site file): needed only to sign topo add and login.
    """

    product_key: str
    device_name: str
    secret: str = field(default="", repr=False)
    identifiers: Mapping[str, str] = field(default_factory=dict)
    """Agent tag name -> thing-model identifier; a tag not listed keeps its name."""
    float_tags: frozenset[str] = frozenset()
    """Tags whose property is float/double in the thing model: an int is sent as ``N.0``."""


def _signed_params(sub: SubDevice, timestamp_ms: int, method: str) -> dict[str, str]:
    cid = f"{sub.product_key}.{sub.device_name}"
    fields = {
        "clientId": cid,
        "deviceName": sub.device_name,
        "productKey": sub.product_key,
        "timestamp": str(timestamp_ms),
    }
    return {**fields, "sign": sign(sub.secret, fields, method)}


def topo_add(
    gw_pk: str, gw_dn: str, subs: Iterable[SubDevice], *, msg_id: int, timestamp_ms: int
) -> Packet:
    """``thing.topo.add``: bind sub-devices to the gateway (at most 30 per request)."""
    method = "hmacsha256"
    params = [{**_signed_params(s, timestamp_ms, method), "signmethod": method} for s in subs]
    if not 1 <= len(params) <= 30:
        raise ValueError(f"topo add takes 1 to 30 sub-devices, got {len(params)}")
    body = {"id": str(msg_id), "version": "1.0", "params": params, "method": "thing.topo.add"}
    return Packet(f"/sys/{gw_pk}/{gw_dn}/thing/topo/add", dumps(body))


def login(gw_pk: str, gw_dn: str, sub: SubDevice, *, msg_id: int, timestamp_ms: int) -> Packet:
    """``combine.login``: bring one sub-device online through the gateway's session."""
    method = "hmacsha256"
    params = {
        **_signed_params(sub, timestamp_ms, method),
        "signMethod": method,
        "cleanSession": "true",
    }
    body = {"id": str(msg_id), "version": "1.0", "params": params, "method": "combine.login"}
    return Packet(f"/ext/session/{gw_pk}/{gw_dn}/combine/login", dumps(body))


def logout(gw_pk: str, gw_dn: str, sub: SubDevice, *, msg_id: int) -> Packet:
    """``combine.logout``: take one sub-device offline."""
    params = {"productKey": sub.product_key, "deviceName": sub.device_name}
    body = {"id": str(msg_id), "version": "1.0", "params": params, "method": "combine.logout"}
    return Packet(f"/ext/session/{gw_pk}/{gw_dn}/combine/logout", dumps(body))


def alink_value(value: Value, as_float: bool) -> Any:
    """``value`` as the thing model wants it: bools as 0/1, floats with a decimal point."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int) and as_float:
        value = float(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"not a finite number: {value!r}")
        text = orjson.dumps(value)
        if b"." not in text:  # 1e+16, 1e-07: written out in full, which keeps the digits
            plain = format(Decimal(repr(value)), "f")
            text = (plain if "." in plain else plain + ".0").encode()
        return orjson.Fragment(text)
    return value


_GATEWAY = ""
"""The entry key of the gateway's own properties and events (sub-devices: ``pk/dn``)."""


class _PackSheet(Sheet):
    def __init__(self, topic: str, max_bytes: int, first_id: int) -> None:
        super().__init__(max_bytes)
        self.topic = topic
        self.first_id = first_id
        self.keys: set[str] = set()
        self.properties = 0
        self.events = 0

    def accepts(self, entry: Entry) -> bool:
        return (
            super().accepts(entry)
            and entry.key not in self.keys  # one sample per property per pack
            and len(self.keys - {_GATEWAY}) + (entry.key != _GATEWAY) <= MAX_SUB_DEVICES
            and self.properties + entry.count <= MAX_PROPERTIES
            and self.events + entry.events <= MAX_EVENTS
        )

    def add(self, entry: Entry) -> None:
        super().add(entry)
        self.keys.add(entry.key)
        self.properties += entry.count
        self.events += entry.events

    def render(self, first_seq: int, index: int) -> tuple[str, bytes]:
        own: dict[str, Any] = next((e.body for e in self.entries if e.key == _GATEWAY), {})
        body = {
            "id": str((self.first_id + index) % ID_MODULUS),
            "version": "1.0",
            "sys": {"ack": 1},
            "params": {
                "properties": own.get("properties", {}),
                "events": own.get("events", {}),
                "subDevices": [e.body for e in self.entries if e.key != _GATEWAY],
            },
            "method": "thing.event.property.pack.post",
        }
        return self.topic, dumps(body)


def event_value(event: Mapping[str, Any]) -> dict[str, Any]:
    """An event's fields as the value of a pack event: no type or ts, no nulls, bools 0/1."""
    return {
        k: alink_value(v, False) if isinstance(v, bool | int | float | str) else v
        for k, v in event.items()
        if k not in ("type", "ts") and v is not None
    }


class AlinkGateway:
    """Encodes buffer batches as gateway pack posts for the mapped sub-devices.

    ``seq_property``: the identifier of an int property (declared in each
    sub-device's thing model) that carries the batch seq with every sample, so
    a consumer sees gaps and repeats per device; None leaves it out.
    """

    def __init__(
        self,
        product_key: str,
        device_name: str,
        subdevices: Mapping[str, SubDevice],
        *,
        seq_property: str | None = "edge_seq",
        max_bytes: int = MAX_BYTES,
    ) -> None:
        self.product_key = product_key
        self.device_name = device_name
        self.subdevices = dict(subdevices)
        self.seq_property = seq_property
        self.max_bytes = max_bytes
        self.topic = f"/sys/{product_key}/{device_name}/thing/event/property/pack/post"
        self.reply_topic = self.topic + "_reply"
        self._events: dict[int, Mapping[str, Any]] = {}  # reading id -> its event, in pack()

    def pack(self, batches: Iterable[Batch], *, first_id: int) -> Encoded:
        """The pack posts for ``batches`` in order (see :func:`common.pack`).

        Their ids are ``first_id``, ``first_id + 1``... (mod 2**32).
        """
        self._events = {}
        try:
            return _pack(
                [self._aligned(b) if b.events else b for b in batches],
                self._entries,
                lambda: _PackSheet(self.topic, self.max_bytes, first_id),
                self.max_bytes,
                known=self._known,
            )
        finally:
            self._events = {}

    def _known(self, device: str) -> bool:
        return device in self.subdevices or device == BOX_SOURCE

    def _aligned(self, batch: Batch) -> Batch:
        """An events batch with one reading per event (none skipped), each event noted."""
        readings = []
        for event in batch.events:
            reading = Reading(event["ts"], event_values(event))
            self._events[id(reading)] = event
            readings.append(reading)
        return Batch(batch.seq, batch.device, readings, batch.events)

    def _entries(self, batch: Batch, reading: Reading) -> list[Entry]:
        event = self._events.get(id(reading))
        if event is not None:
            return [self._event_entry(batch, reading, event)]
        if batch.device not in self.subdevices:
            return []  # the box's own data is events only
        sub = self.subdevices[batch.device]
        if not reading.values:
            return []  # tag errors are never values
        key = f"{sub.product_key}/{sub.device_name}"
        identity = {"productKey": sub.product_key, "deviceName": sub.device_name}
        room = MAX_PROPERTIES - (1 if self.seq_property else 0)
        out = []
        for names in chunks(sorted(reading.values), room):
            props = {
                sub.identifiers.get(n, n): {
                    "value": alink_value(reading.values[n], n in sub.float_tags),
                    "time": reading.ts,
                }
                for n in names
            }
            if self.seq_property:
                props[self.seq_property] = {"value": batch.seq, "time": reading.ts}
            body = {"identity": identity, "properties": props, "events": {}}
            out.append(Entry(key, body, count=len(props)))
        return out

    def _event_entry(self, batch: Batch, reading: Reading, event: Mapping[str, Any]) -> Entry:
        """One event: its values as properties and the event itself, of its sub-device."""
        sub = self.subdevices.get(batch.device)
        ids = {} if sub is None else sub.identifiers
        floats = frozenset() if sub is None else sub.float_tags
        props = {
            ids.get(n, n): {"value": alink_value(v, n in floats), "time": reading.ts}
            for n, v in sorted(reading.values.items())
        }
        if self.seq_property:
            props[self.seq_property] = {"value": batch.seq, "time": reading.ts}
        events = {str(event["type"]): {"value": event_value(event), "time": reading.ts}}
        body: dict[str, Any] = {"properties": props, "events": events}
        if sub is None:
            return Entry(_GATEWAY, body, count=len(props), events=1)
        identity = {"productKey": sub.product_key, "deviceName": sub.device_name}
        body = {"identity": identity, **body}
        return Entry(f"{sub.product_key}/{sub.device_name}", body, count=len(props), events=1)


class Verdict(Enum):
    """What a ``post_reply`` code means for the batches of that post."""

    ACCEPTED = "accepted"
    """200: acknowledge the batches to the buffer."""
    RETRY = "retry"
    """Throttled, a platform fault, or a code not known here: keep the batches, send again later."""
    REFUSED = "refused"
    """460: the content itself is refused; sending it again gets the same answer."""


@dataclass(frozen=True)
class Reply:
    """One parsed ``…_reply`` message."""

    msg_id: str
    code: int
    message: str
    verdict: Verdict


REFUSED_CODES = frozenset(
    {460, 6106, 6207, 6300, 6450, 6320, 6321, 6302, 6304}
    | {6306, 6307, 6308, 6309, 6310, 6311, 6312, 6322, 6324, 6325, 6328}
)
"""Codes about the content itself, from Alibaba's device error codes: 460 empty data,
a malformed parameter or too many; 6106 more than 200 properties; 6207 not JSON;
6300, 6450 no method; 6320, 6321 a property the thing model lacks; 6302-6328 a
value that does not match the thing model's type, range or length. Throttling
(429, 6452), platform faults (400, 500, 6313, 6760) and sub-device session errors
(520) are retried."""


def parse_reply(payload: bytes) -> Reply:
    """Read a reply; raise ValueError when it is not an Alink reply at all."""
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"reply is not JSON: {exc}") from exc
    if not isinstance(body, dict) or not isinstance(body.get("code"), int):
        raise ValueError("reply has no integer code")
    code = body["code"]
    if code == 200:
        verdict = Verdict.ACCEPTED
    elif code in REFUSED_CODES:
        verdict = Verdict.REFUSED
    else:
        verdict = Verdict.RETRY
    return Reply(str(body.get("id", "")), code, str(body.get("message", "")), verdict)
