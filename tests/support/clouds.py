"""Cloud stand-ins for the gateway dialects: ThingsBoard, Alibaba Alink, Huawei IoTDA.

Each stand-in is a paho client on a real Mosquitto broker playing the cloud's
side of the documented protocol: what it subscribes to, what it answers and
what it checks come from the platforms' device documentation (topics,
payloads, reply codes, signatures), never from the agent's encoders, so a
test passing against them says the agent speaks the protocol as documented.

- :class:`ThingsboardCloud`: records ``v1/gateway/connect`` (device, type),
  ``disconnect``, ``telemetry`` (``{device: [{ts, values}]}``) and client
  ``attributes``. ThingsBoard answers nothing: PUBACK is the receipt.
- :class:`AlinkCloud`: checks and answers ``thing.topo.add``,
  ``combine.login`` / ``logout`` (each sign recomputed from the sub-device's
  secret) and ``thing.event.property.pack.post`` on their ``_reply`` topics
  with code 200, or the codes a test scripts (460 refused, 429 throttled,
  ``None`` = no reply at all).
- :class:`IotdaCloud`: records the gateway's batch property reports and
  ``sub_device_update_status`` events, and answers the latter on
  ``sys/events/down``.

Every recorder gives, per device, the buffer seqs received (``edge_seq``) in
arrival order, each with the number of agent connections made so far, and
:meth:`CloudStandIn.judge` says what was missing, repeated outside a
reconnect, reused for other content, or out of order per device (the same
rules as ``tests/faults/checker.py``).

CONNECT credentials are checked by :class:`ConnectGate`, a TCP relay in front
of the broker that reads each CONNECT packet and refuses it (CONNACK 4, bad
user name or password) unless a check written from the documented formula
passes: Mosquitto's password file cannot hold a password that signs the
connect time (Alink) or the hour (IoTDA).

Mosquitto facts these rest on (2.0.11, checked in ``tests/e2e``): a client may
publish to a topic starting with ``$`` (``$oc/...``) with the default
configuration (only ``$SYS/...`` is denied); a subscription to ``#`` does not
match such topics, so the IoTDA stand-in subscribes ``$oc/devices/...`` itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import itertools
import json
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tests.faults.loopthread import LoopThread

__all__ = [
    "AlinkCloud",
    "CloudStandIn",
    "Connect",
    "ConnectGate",
    "IotdaCloud",
    "Judgement",
    "Sample",
    "ThingsboardCloud",
    "alink_connect_check",
    "iotda_connect_check",
    "tb_connect_check",
]

HOST = "127.0.0.1"


# --------------------------------------------------------------------------- CONNECT gate


@dataclass(frozen=True)
class Connect:
    """One CONNECT packet as the gate read it; ``refused`` says why it was refused."""

    client_id: str
    username: str | None
    password: str | None = field(repr=False)
    at_ms: int
    refused: str | None = None


def _varint(data: bytes, start: int) -> tuple[int, int]:
    value, shift, i = 0, 0, start
    while True:
        byte = data[i]
        value |= (byte & 0x7F) << shift
        i += 1
        if not byte & 0x80:
            return value, i
        shift += 7


def parse_connect(packet: bytes) -> tuple[str, str | None, str | None]:
    """Client id, user name and password of an MQTT 3.1.1 or 5 CONNECT packet."""
    if packet[0] >> 4 != 1:
        raise ValueError("not a CONNECT packet")
    _, i = _varint(packet, 1)

    def take(at: int) -> tuple[bytes, int]:
        size = int.from_bytes(packet[at : at + 2], "big")
        return packet[at + 2 : at + 2 + size], at + 2 + size

    _, i = take(i)  # protocol name
    level, flags = packet[i], packet[i + 1]
    i += 4  # level, flags, keepalive
    if level == 5:
        size, i = _varint(packet, i)
        i += size
    raw_id, i = take(i)
    if flags & 0x04:  # a Will
        if level == 5:
            size, i = _varint(packet, i)
            i += size
        _, i = take(i)
        _, i = take(i)
    username = password = None
    if flags & 0x80:
        raw, i = take(i)
        username = raw.decode()
    if flags & 0x40:
        raw, i = take(i)
        password = raw.decode()
    return raw_id.decode(), username, password


class ConnectGate:
    """A TCP relay in front of a broker that checks the credentials of every CONNECT.

    ``check(connect)`` returns None to let it through, or why it is refused:
    the client then gets CONNACK 4 (bad user name or password) and the link
    closes, as the cloud does. ``connects`` lists every CONNECT seen;
    ``accepted`` counts those let through to a running broker (a new agent
    connection each).
    """

    def __init__(self, broker_port: int, check: Callable[[Connect], str | None]) -> None:
        self.broker_port = broker_port
        self.check = check
        self.port = 0
        self.connects: list[Connect] = []
        self.accepted = 0
        self._lock = threading.Lock()
        self._loop = LoopThread("connect-gate")
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def start(self) -> Self:
        """Listen on a free port of 127.0.0.1 (:attr:`port`)."""

        async def listen() -> None:
            self._server = await asyncio.start_server(self._handle, HOST, 0)
            self.port = int(self._server.sockets[0].getsockname()[1])

        self._loop.run(listen())
        return self

    def close(self) -> None:
        """Stop listening and close every link."""

        async def shut() -> None:
            if self._server is not None:
                self._server.close()
            for writer in list(self._writers):
                writer.close()

        with contextlib.suppress(Exception):
            self._loop.run(shut())
        self._loop.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def refused(self) -> list[Connect]:
        """The CONNECTs refused so far."""
        with self._lock:
            return [c for c in self.connects if c.refused is not None]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        upstream: asyncio.StreamWriter | None = None
        try:
            head = await reader.readexactly(2)
            length, need = head[1] & 0x7F, 2
            shift = 7
            while head[-1] & 0x80:  # remaining length continues
                head += await reader.readexactly(1)
                length |= (head[-1] & 0x7F) << shift
                shift += 7
                need += 1
            packet = head + await reader.readexactly(length)
            client_id, username, password = parse_connect(packet)
            seen = Connect(client_id, username, password, int(time.time() * 1000))
            reason = self.check(seen)
            with self._lock:
                self.connects.append(Connect(client_id, username, password, seen.at_ms, reason))
            if reason is not None:
                writer.write(b"\x20\x02\x00\x04")
                await writer.drain()
                return
            server_r, upstream = await asyncio.open_connection(HOST, self.broker_port)
            self._writers.add(upstream)
            with self._lock:
                self.accepted += 1  # counted once it reaches the broker (not while it is down)
            upstream.write(packet)
            async with asyncio.TaskGroup() as group:
                group.create_task(_relay(reader, upstream))
                group.create_task(_relay(server_r, writer))
        except (OSError, ValueError, IndexError, asyncio.IncompleteReadError, ExceptionGroup):
            pass  # either side went away, or not MQTT: close the link
        except asyncio.CancelledError:
            pass
        finally:
            for w in (writer, upstream):
                if w is not None:
                    self._writers.discard(w)
                    w.close()


async def _relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    raise ConnectionResetError("one side closed")  # ends the other direction too


def _hmac(digest: str, key: str, message: str) -> str:
    return hmac.new(key.encode(), message.encode(), getattr(hashlib, digest)).hexdigest()


def tb_connect_check(token: str) -> Callable[[Connect], str | None]:
    """ThingsBoard access-token auth: the token is the user name, the password empty."""

    def check(c: Connect) -> str | None:
        if c.username != token:
            return "the user name is not the gateway's access token"
        if c.password not in (None, ""):
            return "a password was sent with an access token"
        return None

    return check


_ALINK_ID = re.compile(r"^([^|]+)\|securemode=(\d+),signmethod=(hmac\w+),timestamp=(\d+)\|$")


def alink_connect_check(
    product_key: str, device_name: str, secret: str, *, securemode: int = 3, skew_ms: int = 60_000
) -> Callable[[Connect], str | None]:
    """Alibaba's documented device CONNECT: ``clientId|securemode=..,signmethod=..,timestamp=..|``,
    user ``deviceName&productKey``, password = hex HMAC(DeviceSecret) over
    ``clientId{id}deviceName{dn}productKey{pk}timestamp{ts}``; the timestamp here
    must be the connect time (within ``skew_ms``)."""

    def check(c: Connect) -> str | None:
        found = _ALINK_ID.match(c.client_id)
        if found is None:
            return f"client id {c.client_id!r} is not of the documented form"
        cid, mode, method, stamp = found.groups()
        digests = {"hmacsha256": "sha256", "hmacsha1": "sha1", "hmacmd5": "md5"}
        problems = [
            (int(mode) != securemode, f"securemode={mode}, expected {securemode}"),
            (method not in digests, f"unknown signmethod {method}"),
            (abs(int(stamp) - c.at_ms) > skew_ms, f"timestamp {stamp} is not the connect time"),
            (
                c.username != f"{device_name}&{product_key}",
                "user name is not deviceName&productKey",
            ),
        ]
        for wrong, why in problems:
            if wrong:
                return why
        content = f"clientId{cid}deviceName{device_name}productKey{product_key}timestamp{stamp}"
        if c.password != _hmac(digests[method], secret, content):
            return "the password is not the documented HMAC"
        return None

    return check


def iotda_connect_check(device_id: str, secret: str) -> Callable[[Connect], str | None]:
    """Huawei's documented secret auth: ``{device_id}_0_0_{YYYYMMDDHH}`` (UTC hour of the
    connect), user = device id, password = hex HMAC-SHA256 keyed by ``YYYYMMDDHH`` over
    the secret."""

    def check(c: Connect) -> str | None:
        hours = {time.strftime("%Y%m%d%H", time.gmtime(c.at_ms / 1000 - d)) for d in (0, 5)}
        stamp = c.client_id.rsplit("_", 1)[-1]
        if stamp not in hours or c.client_id != f"{device_id}_0_0_{stamp}":
            return f"client id {c.client_id!r} is not {device_id}_0_0_<UTC hour of now>"
        if c.username != device_id:
            return f"user name {c.username!r} is not the device id"
        if c.password != _hmac("sha256", stamp, secret):
            return "the password is not HMAC-SHA256(key=hour, secret)"
        return None

    return check


# --------------------------------------------------------------------------- recording


@dataclass(frozen=True)
class Sample:
    """One sample of a device with its buffer seq; ``conn``: agent connections so far."""

    seq: int
    ts: object
    values: Mapping[str, Any]
    conn: int
    redelivered: bool = False
    """MQTT's DUP flag: the broker re-sent it to this stand-in's session (the rig's repeat)."""


@dataclass
class Judgement:
    """What :meth:`CloudStandIn.judge` found."""

    last_seq: int
    received: int
    missing: list[int]
    duplicates: list[tuple[str, int]]
    illegal_duplicates: list[tuple[str, int]]
    reused: list[tuple[str, int]]
    order_violations: dict[str, list[tuple[int, int]]]
    wrong_tag: list[tuple[str, int, str, Any]]
    errors: list[str]

    def problems(self, allowed_missing: int = 0) -> list[str]:
        """Every broken promise as a sentence; ``allowed_missing``: batches of errors only."""
        out = []
        if len(self.missing) > allowed_missing:
            out.append(f"{len(self.missing)} seqs never received: {self.missing[:10]}")
        if self.illegal_duplicates:
            out.append(f"repeats without a reconnect: {self.illegal_duplicates[:5]}")
        if self.reused:
            out.append(f"one seq, two contents: {self.reused[:5]}")
        out += [f"{d}: order broken at {v[:5]}" for d, v in self.order_violations.items()]
        if self.wrong_tag:
            out.append(f"values on the wrong tag: {self.wrong_tag[:5]}")
        out += self.errors[:10]
        return out


class CloudStandIn:
    """A paho client on its own thread: persistent session, subscribes ``topics`` at QoS 1.

    The persistent session (on a broker with persistence) keeps what the broker
    accepted while this client reconnects after a broker restart, so a loss
    seen here is the agent's.
    """

    def __init__(
        self, port: int, topics: Iterable[str], *, name: str, gate: ConnectGate | None = None
    ) -> None:
        self.port = port
        self.topics = list(topics)
        self.gate = gate
        self.lock = threading.RLock()
        self.samples: dict[str, list[Sample]] = {}
        self.events: list[tuple[str, ...]] = []
        """What happened, in arrival order: (kind, device, ...)."""
        self.errors: list[str] = []
        self._dup = False  # the DUP flag of the message being handled
        self._subscribed = threading.Event()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=name, clean_session=False)
        self._client.reconnect_delay_set(1, 2)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = lambda *_: self._subscribed.set()
        self._client.on_message = self._on_message

    def start(self, timeout: float = 10.0) -> Self:
        """Connect and wait for the SUBACK, so nothing published afterwards is missed."""
        self._client.connect(HOST, self.port, keepalive=10)
        self._client.loop_start()
        if not self._subscribed.wait(timeout):
            self.stop()
            raise TimeoutError(f"{type(self).__name__}: no SUBACK in {timeout} s")
        return self

    def stop(self) -> None:
        """Disconnect and stop the network thread."""
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any
    ) -> None:
        if not rc.is_failure:
            client.subscribe([(t, 1) for t in self.topics])

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            body = json.loads(msg.payload)
        except ValueError:
            with self.lock:
                self.errors.append(f"{msg.topic}: not JSON: {bytes(msg.payload)[:80]!r}")
            return
        with self.lock:
            self._dup = bool(msg.dup)
            try:
                self.handle(msg.topic, body)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                self.errors.append(f"{msg.topic}: not of the documented form: {exc!r}")

    def handle(self, topic: str, body: Any) -> None:
        """One message (under :attr:`lock`, on paho's thread)."""
        raise NotImplementedError

    def reply(self, topic: str, body: Mapping[str, Any], qos: int = 0) -> None:
        """Publish a JSON answer."""
        self._client.publish(topic, json.dumps(body), qos=qos)

    def connections(self) -> int:
        """Agent connections let through the gate so far (0 without a gate)."""
        return 0 if self.gate is None else self.gate.accepted

    def record(self, device: str, seq: int, ts: object, values: Mapping[str, Any]) -> None:
        """Note one sample (under :attr:`lock`)."""
        sample = Sample(seq, ts, values, self.connections(), self._dup)
        self.samples.setdefault(device, []).append(sample)

    # --- queries (any thread)

    def seqs(self) -> set[int]:
        """Every distinct seq received, over all devices."""
        with self.lock:
            return {s.seq for samples in self.samples.values() for s in samples}

    def device_seqs(self, device: str) -> list[int]:
        """The seqs of ``device`` in arrival order, repeats included."""
        with self.lock:
            return [s.seq for s in self.samples.get(device, [])]

    def kinds(self, kind: str) -> list[tuple[str, ...]]:
        """The events of one kind, in arrival order."""
        with self.lock:
            return [e for e in self.events if e[0] == kind]

    def wait(self, predicate: Callable[[], bool], timeout: float = 30.0) -> bool:
        """Poll ``predicate`` every 50 ms until it holds; False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if predicate():
                    return True
            time.sleep(0.05)
        return False

    def wait_for_seqs(self, last_seq: int, timeout: float, allowed_missing: int = 0) -> bool:
        """Wait until all of ``1..last_seq`` but ``allowed_missing`` arrived."""
        return self.wait(
            lambda: (
                sum(1 for s in range(1, last_seq + 1) if s not in self.seqs()) <= allowed_missing
            ),
            timeout,
        )

    def judge(self, last_seq: int, *, window: int = 100, excused: Iterable[int] = ()) -> Judgement:
        """Loss, repeats, reuse, order and counter values over ``1..last_seq``.

        A repeat of (device, seq) is legal only with a new agent connection
        since the first copy, and at most ``window`` repeats per connection
        (or when the broker re-sent it to this stand-in, MQTT's DUP flag);
        ``excused`` seqs (refused by the cloud) are not missing.
        """
        with self.lock:
            samples = {d: list(v) for d, v in self.samples.items()}
            errors = list(self.errors)
        seen = {s.seq for v in samples.values() for s in v}
        skip = set(excused)
        missing = [s for s in range(1, last_seq + 1) if s not in seen and s not in skip]
        duplicates, illegal, reused = [], [], []
        order: dict[str, list[tuple[int, int]]] = {}
        wrong: list[tuple[str, int, str, Any]] = []
        resent: dict[int, int] = {}
        for device, got in samples.items():
            first: dict[int, Sample] = {}
            highest = 0
            for sample in got:
                for tag, value in sample.values.items():
                    if tag.startswith("t") and tag[1:].isdigit() and not _counts(value, tag):
                        wrong.append((device, sample.seq, tag, value))
                if sample.seq in first:
                    duplicates.append((device, sample.seq))
                    earlier = first[sample.seq]
                    if (earlier.ts, dict(earlier.values)) != (sample.ts, dict(sample.values)):
                        reused.append((device, sample.seq))
                    if sample.redelivered:
                        continue  # the broker's re-send to this stand-in: always legal
                    resent[sample.conn] = resent.get(sample.conn, 0) + 1
                    if sample.conn <= earlier.conn or resent[sample.conn] > window:
                        illegal.append((device, sample.seq))
                    continue
                first[sample.seq] = sample
                if sample.seq < highest:
                    order.setdefault(device, []).append((highest, sample.seq))
                highest = max(highest, sample.seq)
        owners: dict[int, str] = {}
        reused += [
            (device, sample.seq)
            for device, got in samples.items()
            for sample in got
            if owners.setdefault(sample.seq, device) != device
        ]
        return Judgement(
            last_seq, sum(map(len, samples.values())), missing, duplicates, illegal,
            reused, order, wrong, errors,
        )  # fmt: skip


def _counts(value: Any, tag: str) -> bool:
    """The counter simulator's invariant: ``value % 1000`` is the index in ``tN``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return int(value) % 1000 == int(tag[1:])


# --------------------------------------------------------------------------- ThingsBoard

OWN_TELEMETRY = "v1/devices/me/telemetry"
GATEWAY = "(gateway)"
"""The device name the stand-ins record the gateway's own data under."""


class ThingsboardCloud(CloudStandIn):
    """The ThingsBoard server's side of the gateway API (see the module docstring).

    ``connected``: devices announced and not disconnected since; ``types``:
    the device type (profile) each connect gave; ``attributes``: the client
    attributes last received per device. A telemetry sample of a device never
    announced is an error; the seq is the telemetry key ``seq_key``.
    """

    def __init__(
        self, port: int, *, seq_key: str = "edge_seq", gate: ConnectGate | None = None
    ) -> None:
        super().__init__(port, ["v1/gateway/#", OWN_TELEMETRY], name="thingsboard", gate=gate)
        self.seq_key = seq_key
        self.connected: set[str] = set()
        self.announced: set[str] = set()
        self.types: dict[str, str] = {}
        self.attributes: dict[str, dict[str, Any]] = {}

    def handle(self, topic: str, body: Any) -> None:
        if topic == "v1/gateway/connect":
            device, kind = body["device"], body.get("type")
            self.events.append(("connect", device, str(kind)))
            self.connected.add(device)
            self.announced.add(device)
            if isinstance(kind, str):
                self.types[device] = kind
        elif topic == "v1/gateway/disconnect":
            self.events.append(("disconnect", body["device"]))
            self.connected.discard(body["device"])
        elif topic == "v1/gateway/attributes":
            for device, values in body.items():
                self.attributes.setdefault(device, {}).update(values)
                self.events.append(("attributes", device))
        elif topic == "v1/gateway/telemetry":
            for device, samples in body.items():
                if device not in self.announced:
                    self.errors.append(f"telemetry of {device} before its v1/gateway/connect")
                for sample in samples:
                    values = dict(sample["values"])
                    seq = values.pop(self.seq_key)
                    if not isinstance(sample["ts"], int):
                        self.errors.append(f"{device}: ts {sample['ts']!r} is not epoch ms")
                    self.record(device, int(seq), sample["ts"], values)
                self.events.append(("telemetry", device))
        elif topic == OWN_TELEMETRY:  # the gateway device's own (device API)
            for sample in body if isinstance(body, list) else [body]:
                values = dict(sample["values"])
                seq = values.pop(self.seq_key)
                self.record(GATEWAY, int(seq), sample["ts"], values)
            self.events.append(("telemetry", GATEWAY))
        else:
            self.errors.append(f"a message on {topic}, not a gateway API topic")


# --------------------------------------------------------------------------- Alibaba


@dataclass(frozen=True)
class AlinkIdentity:
    """A sub-device as the console knows it: ProductKey, DeviceName, DeviceSecret."""

    product_key: str
    device_name: str
    secret: str = field(repr=False)


@dataclass
class Post:
    """One pack post as received, and the code it was answered with (None: no answer)."""

    msg_id: str
    code: int | None
    samples: list[tuple[str, int, int]]  # (deviceName, edge_seq, values besides edge_seq)


class AlinkCloud(CloudStandIn):
    """Alibaba IoT Platform's side of a gateway (see the module docstring).

    ``script``: codes for the next pack posts, taken one per post (``None``:
    the post is kept but its reply is lost); 200 once empty. Samples of posts
    answered 200 or ``None`` are recorded (what the platform keeps). ``logins`` / ``logouts`` count
    per DeviceName. A post carrying a sub-device that was not logged in since
    the gateway's last topo add is recorded in :attr:`not_logged_in`; a post
    for a sub-device logged out since, in :attr:`after_logout`.
    """

    def __init__(
        self,
        port: int,
        product_key: str,
        device_name: str,
        subdevices: Iterable[AlinkIdentity],
        *,
        seq_property: str = "edge_seq",
        gate: ConnectGate | None = None,
    ) -> None:
        self.gw = f"{product_key}/{device_name}"
        topics = {
            "topo": f"/sys/{self.gw}/thing/topo/add",
            "login": f"/ext/session/{self.gw}/combine/login",
            "logout": f"/ext/session/{self.gw}/combine/logout",
            "post": f"/sys/{self.gw}/thing/event/property/pack/post",
        }
        super().__init__(port, topics.values(), name="alink-cloud", gate=gate)
        self.topic = topics
        self.subs = {(s.product_key, s.device_name): s for s in subdevices}
        self.seq_property = seq_property
        self.script: deque[int | None] = deque()
        self.posts: list[Post] = []
        self.bound: set[str] = set()
        self.state: dict[str, str] = {}  # deviceName -> "bound", "online", "offline"
        self.logins: dict[str, int] = {}
        self.logouts: dict[str, int] = {}
        self.not_logged_in: list[tuple[str, int]] = []
        self.after_logout: list[tuple[str, int]] = []
        self.pack_events: list[tuple[str, str, dict[str, Any], int]] = []
        """(deviceName or GATEWAY, identifier, value, time) of each event posted and kept."""

    def answer_next(self, *codes: int | None) -> None:
        """Answer the next pack posts with ``codes`` (None: no reply), then 200 again."""
        with self.lock:
            self.script.extend(codes)

    def refused_seqs(self) -> set[int]:
        """Seqs of the posts answered with a code the platform calls a content error."""
        with self.lock:
            return {s for p in self.posts if p.code == 460 for _, s, _ in p.samples}

    def _events_of(self, device: str, holder: Mapping[str, Any]) -> None:
        for identifier, event in holder.get("events", {}).items():
            if not isinstance(event["value"], dict) or not isinstance(event["time"], int):
                self.errors.append(f"event {identifier} of {device} is not {{value, time}}")
            self.pack_events.append((device, identifier, dict(event["value"]), event["time"]))

    def _signed(self, params: Mapping[str, Any], sign_key: str) -> str | None:
        """Why a topo add / login entry is badly signed; None when it is right."""
        sub = self.subs.get((params["productKey"], params["deviceName"]))
        if sub is None:
            return f"unknown sub-device {params['productKey']}/{params['deviceName']}"
        method = str(params[sign_key]).lower()
        digest = {"hmacsha256": "sha256", "hmacsha1": "sha1", "hmacmd5": "md5"}.get(method)
        if digest is None:
            return f"unknown sign method {method}"
        fields = {k: str(params[k]) for k in ("clientId", "deviceName", "productKey", "timestamp")}
        content = "".join(f"{k}{fields[k]}" for k in sorted(fields))
        if str(params["sign"]).lower() != _hmac(digest, sub.secret, content):
            return f"bad sign for {sub.device_name}"
        return None

    def handle(self, topic: str, body: Any) -> None:
        msg_id = body["id"]
        if not isinstance(msg_id, str) or not msg_id.isdigit() or int(msg_id) >= 2**32:
            self.errors.append(f"{topic}: id {msg_id!r} is not a decimal string below 2^32")
        if topic == self.topic["topo"]:
            self._topo(body)
        elif topic == self.topic["login"]:
            self._login(body)
        elif topic == self.topic["logout"]:
            params = body["params"]
            name = params["deviceName"]
            self.events.append(("logout", name))
            self.logouts[name] = self.logouts.get(name, 0) + 1
            self.state[name] = "offline"
            self.reply(topic + "_reply", {"id": msg_id, "code": 200, "message": "success",
                                          "data": {"productKey": params["productKey"],
                                                   "deviceName": name}})  # fmt: skip
        elif topic == self.topic["post"]:
            self._post(body)

    def _topo(self, body: Any) -> None:
        if body.get("method") != "thing.topo.add" or not 1 <= len(body["params"]) <= 30:
            self.errors.append(f"topo add of the wrong form: {body.get('method')}")
        bad = [r for r in (self._signed(p, "signmethod") for p in body["params"]) if r]
        self.errors.extend(bad)
        names = [p["deviceName"] for p in body["params"]]
        self.events.append(("topo", *names))
        if not bad:
            for name in names:  # a topo add starts the gateway's session anew here
                self.bound.add(name)
                self.state[name] = "bound"
        data = [{"productKey": p["productKey"], "deviceName": p["deviceName"]}
                for p in body["params"]]  # fmt: skip
        code, message = (200, "success") if not bad else (6402, "sign check failed")
        self.reply(self.topic["topo"] + "_reply",
                   {"id": body["id"], "code": code, "message": message, "data": data})  # fmt: skip

    def _login(self, body: Any) -> None:
        params = body["params"]
        name = params["deviceName"]
        if body.get("method") != "combine.login" or params.get("cleanSession") not in (
            "true",
            "false",
        ):
            self.errors.append(f"login of {name} of the wrong form")
        problem = self._signed(params, "signMethod")
        self.events.append(("login", name))
        if problem is not None:
            self.errors.append(problem)
            code, message = 6287, "sign check failed"
        elif name not in self.bound:
            code, message = 6401, "topo relation not exist"
        else:
            code, message = 200, "success"
            self.state[name] = "online"
            self.logins[name] = self.logins.get(name, 0) + 1
        self.reply(self.topic["login"] + "_reply", {
            "id": body["id"], "code": code, "message": message,
            "data": {"productKey": params["productKey"], "deviceName": name},
        })  # fmt: skip

    def _post(self, body: Any) -> None:
        if body.get("method") != "thing.event.property.pack.post":
            self.errors.append(f"pack post with method {body.get('method')!r}")
        params = body["params"]
        subs = params["subDevices"]
        if len(subs) > 20:
            self.errors.append(f"a pack of {len(subs)} sub-devices (at most 20)")
        code = self.script.popleft() if self.script else 200
        post = Post(body["id"], code, [])
        total = len(params.get("properties", {}))
        posted = sum(len(p.get("events", {})) for p in [params, *subs])
        if posted > 20:
            self.errors.append(f"a pack of {posted} events (at most 20)")
        if code in (200, None):
            self._events_of(GATEWAY, params)
            own = dict(params.get("properties", {}))
            if own:
                seq = int(own.pop(self.seq_property)["value"])
                stamps = {p["time"] for p in own.values()}
                values = {k: p["value"] for k, p in own.items()}
                self.record(GATEWAY, seq, min(stamps) if stamps else None, values)
        for sub in subs:
            identity = sub["identity"]
            name = identity["deviceName"]
            if (identity["productKey"], name) not in self.subs:
                self.errors.append(f"a post for unknown sub-device {identity}")
            props = dict(sub["properties"])
            total += len(props)
            seq = int(props.pop(self.seq_property)["value"])
            state = self.state.get(name)
            if state in (None, "bound"):
                self.not_logged_in.append((name, seq))
            elif state == "offline":
                self.after_logout.append((name, seq))
            stamps = {p["time"] for p in props.values()}
            values = {k: p["value"] for k, p in props.items()}
            post.samples.append((name, seq, len(values)))
            if code in (200, None):  # kept; None: taken, only its reply is lost
                self.record(name, seq, min(stamps) if stamps else None, values)
                self._events_of(name, sub)
        if total > 200:
            self.errors.append(f"a pack of {total} properties (at most 200)")
        self.posts.append(post)
        self.events.append(("post", body["id"], str(code)))
        if code is not None:
            message = {200: "success", 460: "request parameter error", 429: "rate limit"}
            self.reply(self.topic["post"] + "_reply", {
                "id": body["id"], "code": code, "message": message.get(code, "error"),
                "data": {}, "version": "1.0",
            })  # fmt: skip


# --------------------------------------------------------------------------- Huawei

_EVENT_TIME = re.compile(r"^\d{8}T\d{6}Z$")


class IotdaCloud(CloudStandIn):
    """Huawei IoTDA's side of a gateway (see the module docstring).

    ``statuses``: per sub-device id, the statuses reported in order; each
    status request is answered with ``sub_device_update_status_response``
    naming every device as successful.
    """

    def __init__(
        self,
        port: int,
        gateway_id: str,
        *,
        seq_property: str = "edge_seq",
        gate: ConnectGate | None = None,
    ) -> None:
        self.base = f"$oc/devices/{gateway_id}/sys"
        self.report_topic = f"{self.base}/gateway/sub_devices/properties/report"
        super().__init__(
            port, [self.report_topic, f"{self.base}/events/up"], name="iotda-cloud", gate=gate
        )
        self.gateway_id = gateway_id
        self.seq_property = seq_property
        self.statuses: dict[str, list[str]] = {}
        self.services: dict[str, list[str]] = {}
        """Per device id, the service of each sample reported, in arrival order."""
        self._ids = itertools.count(1)

    def handle(self, topic: str, body: Any) -> None:
        if topic == self.report_topic:
            devices = body["devices"]
            if not 1 <= len(devices) <= 100:
                self.errors.append(f"a batch report of {len(devices)} sub-devices")
            for device in devices:
                for service in device["services"]:
                    stamp = service.get("event_time")
                    if stamp is not None and not _EVENT_TIME.match(stamp):
                        self.errors.append(f"event_time {stamp!r} not yyyyMMdd'T'HHmmss'Z'")
                    props = dict(service["properties"])
                    seq = int(props.pop(self.seq_property))
                    self.record(device["device_id"], seq, stamp, props)
                    self.services.setdefault(device["device_id"], []).append(
                        str(service["service_id"])
                    )
                self.events.append(("report", device["device_id"]))
            return
        for service in body["services"]:
            if service.get("service_id") != "$sub_device_manager":
                self.errors.append(f"an event of service {service.get('service_id')!r}")
                continue
            if service.get("event_type") != "sub_device_update_status":
                self.errors.append(f"an event of type {service.get('event_type')!r}")
                continue
            listed = service["paras"]["device_statuses"]
            if not 1 <= len(listed) <= 100:
                self.errors.append(f"a status request of {len(listed)} devices")
            for entry in listed:
                if entry["status"] not in ("ONLINE", "OFFLINE"):
                    self.errors.append(f"status {entry['status']!r}")
                self.statuses.setdefault(entry["device_id"], []).append(entry["status"])
                self.events.append(("status", entry["device_id"], entry["status"]))
            response = {
                "service_id": "$sub_device_manager",
                "event_type": "sub_device_update_status_response",
                "event_time": time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()),
                "event_id": service.get("event_id", str(next(self._ids))),
                "paras": {"successful_devices": listed, "failed_devices": []},
            }
            self.reply(f"{self.base}/events/down",
                       {"object_device_id": self.gateway_id, "services": [response]})  # fmt: skip

    def status(self, device_id: str) -> str | None:
        """The last status reported for ``device_id``."""
        with self.lock:
            found = self.statuses.get(device_id)
            return found[-1] if found else None
