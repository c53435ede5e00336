"""Private RabbitMQ (MQTT plugin), NATS (MQTT over JetStream) and amqtt brokers for interop tests.

Each test runs against brokers of every kind in ``tests/support/brokers.py``,
Mosquitto included as the reference: start, 200 QoS 1 messages each acked
and received in order, restart, reconnect. The other tests pin down where
the brokers differ, so these notes stay true when a broker version changes.

What each broker needs (all found by experiment on RabbitMQ 3.10.8 /
Erlang 25, nats-server 2.9.10, amqtt 0.12.1, paho-mqtt 2.2, 2 cores):

RabbitMQ (``rabbitmq-server`` + the bundled ``rabbitmq_mqtt`` plugin)
  - Plugin enabled (``[rabbitmq_mqtt].``), ``mqtt.listeners.tcp.default``;
    anonymous MQTT clients log in as ``mqtt.default_user`` (guest: loopback only).
  - Start: 8-15 s with a new database, 4-7 s with an existing one; a clean
    stop (``rabbitmqctl stop``) ~2 s, so ``restart()`` ~6-11 s.
  - The Debian wrappers in /usr/sbin switch to the ``rabbitmq`` user and
    share the system node's cookie and files: the helper runs the scripts in
    /usr/lib/rabbitmq/bin itself, with its own RABBITMQ_* variables, HOME
    (cookie) and ERL_EPMD_PORT, and stops that epmd again afterwards.
  - MQTT 3.1 and 3.1.1 only: an MQTT 5 CONNECT is closed without a CONNACK.
  - QoS 2: a QoS 2 subscription is granted QoS 1; a QoS 2 PUBLISH is
    acknowledged and delivered as QoS 1.
  - Max message 128 MiB (``max_message_size``). A bigger PUBLISH gets no
    PUBACK and the connection is not closed either: the client waits forever.
  - Topics: '.' is a level separator inside RabbitMQ, so ``a/b.c`` arrives as
    ``a/b/c``, and '*' arrives as '+'.
  - Retained messages (dets store, kept across restarts) reach only
    subscriptions without wildcards: ``edge/box/status`` gets it,
    ``edge/box/+`` or ``edge/#`` do not.
  - Sessions: clean=false sessions are durable queues; they and the messages
    queued for them survive a restart. Duplicate client id: the old
    connection is closed.
  - Will: sent on a dropped connection and on keepalive expiry, not after
    DISCONNECT; retained wills work (exact-topic subscribers only, as above).
  - Keepalive: a silent client is closed after ~3x its keepalive (1 s -> 3 s,
    4 s -> 12 s); with keepalive 0 it was still open after 8 s.
  - Burst of 2000 QoS 1 (100 in flight): in order, no duplicates, ~0.7 s.

NATS (``nats-server`` with ``server_name``, JetStream and ``mqtt {}``)
  - MQTT refuses to start without ``server_name`` and JetStream. Start: ~0.1 s.
  - MQTT 3.1.1 only: MQTT 5 gets CONNACK "unsupported protocol version",
    MQTT 3.1 is closed.
  - QoS 2: a subscription is granted QoS 1, but a QoS 2 PUBLISH closes the
    connection ("publish QoS=2 not supported"); paho resends it after each
    reconnect, so such a client loops forever.
  - Topics with '.' or ' ' close the publisher's connection ("characters ' '
    and '.' not supported for MQTT topics"); a filter with '.' gets SUBACK
    0x80. The agent's ids may contain '.': such an agent cannot publish here.
  - '#' and '+/#' also match NATS-internal ``$JS/...`` and ``$MQTT/...``
    traffic (JSON): subscribe below a prefix, never to bare '#'.
  - Payload: ``max_payload`` (1 MB) does not apply to MQTT: 8 MiB takes 1 s,
    48 MiB 22 s; 64 MiB was acked but never delivered and the store logged
    "malformed or corrupt message". Keep messages small (<= 1 MiB).
  - Retained messages and sessions are JetStream streams: both survive a
    restart, queued messages included. Under load (a reconnect loop) CONNECT
    can fail with a 4 s internal JetStream timeout.
  - Will: sent on a dropped connection and on keepalive expiry, not after
    DISCONNECT. Keepalive: closed after ~1.5x (1 s -> 1 s, 4 s -> 6 s).
  - Burst of 2000 QoS 1: in order, no duplicates, ~0.5 s.

amqtt (Python package ``amqtt``, ``amqtt -c broker.yaml``)
  - YAML: a ``default`` tcp listener and the anonymous-auth plugin. Start
    ~0.5 s. SIGINT is its clean stop (no SIGTERM handler).
  - MQTT 3.1.1 only (MQTT 5 and 3.1 refused). QoS 2 works end to end.
  - No size limit found (255 MiB in 14 s).
  - Everything is in memory: ``restart()`` loses retained messages and sessions.
  - Keepalive is not enforced at all: a silent client is never closed and its
    will is never sent (the will does go out when the socket closes).
  - Duplicate client id: the old connection is not closed (it stays, silent).
  - Retained: on every CONNECT a client gets (QoS 0, retain flag set) the
    retained messages matching anyone's subscriptions, before it subscribes
    to anything, so one subscriber can see a retained message twice, or one
    for a topic it never subscribed to.
  - With anonymous access allowed (as here) every session counts as
    anonymous, even with a username: nothing is queued for a clean=false
    session while it is away, and such a session is dropped within ~1 s of
    its DISCONNECT (not tried: a setup without anonymous access).
  - Burst of 2000 QoS 1: in order, ~2.5 s.

Mosquitto (reference): QoS 2, retained and wills as the spec says; without
persistence ``restart()`` loses state; a subscriber's queue holds 1000
messages by default (``max_queued_messages``): of a burst of 2000 QoS 1
messages (100 in flight) one subscriber got 1303.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.brokers import (
    BROKER_KINDS,
    HOST,
    AmqttBroker,
    Broker,
    BrokerKind,
    BrokerStartError,
    NatsMqttBroker,
    Publisher,
    RabbitMqttBroker,
    broker_available,
    make_broker,
)
from tests.support.mosquitto import Subscriber

pytestmark = pytest.mark.slow  # ~1 min, most of it RabbitMQ booting

SHARED_SERVICE_PORTS = {1883, 4222, 4369, 5672, 25672}
INSTALL = {
    "mosquitto": "apt-get install mosquitto",
    "rabbitmq": "apt-get install rabbitmq-server",
    "nats": "apt-get install nats-server",
    "amqtt": "pip install amqtt (the project's demo extra)",
}


@pytest.fixture(scope="module", params=BROKER_KINDS)
def broker(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Broker]:
    """One running broker of each kind for this module (tests use their own topics)."""
    kind: BrokerKind = request.param
    if not broker_available(kind):
        pytest.fail(f"{kind} broker is not installed: {INSTALL[kind]}")
    b = make_broker(kind, tmp_path_factory.mktemp(f"broker-{kind}"))
    b.start()
    try:
        yield b
    finally:
        b.stop()


class _Client:
    """A paho client recording SUBACKs, messages and disconnects (no automatic reconnect)."""

    def __init__(self, port: int, client_id: str = "") -> None:
        self.messages: list[mqtt.MQTTMessage] = []
        self.granted: list[int] = []
        self.disconnected = threading.Event()
        self._connected = threading.Event()
        self._subacked = threading.Event()
        self._lock = threading.Lock()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, reconnect_on_failure=False
        )
        self.client.on_connect = lambda c, u, f, rc, p: self._connected.set()
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.on_disconnect = lambda c, u, f, rc, p: self.disconnected.set()
        self.client.connect(HOST, port, keepalive=10)
        self.client.loop_start()
        assert self._connected.wait(10), "no CONNACK"

    def subscribe(self, topic: str, qos: int) -> int:
        """Subscribe; the granted QoS (0x80 = refused)."""
        self._subacked.clear()
        self.client.subscribe(topic, qos)
        assert self._subacked.wait(10), "no SUBACK"
        return self.granted[-1]

    def received(self, wait: float = 3.0, count: int = 1) -> list[mqtt.MQTTMessage]:
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and len(self.messages) < count:
            time.sleep(0.05)
        with self._lock:
            return list(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_subscribe(self, c: mqtt.Client, u: Any, mid: int, rcs: list[Any], p: Any) -> None:
        self.granted.append(int(rcs[0].value))
        self._subacked.set()

    def _on_message(self, c: mqtt.Client, u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(msg)


# --------------------------------------------------------------------------- the common contract


def test_qos1_in_order_then_restart_and_reconnect(broker: Broker) -> None:
    assert isinstance(broker, Broker)
    assert broker.host == "127.0.0.1"
    assert broker.port not in SHARED_SERVICE_PORTS
    if isinstance(broker, RabbitMqttBroker):
        assert not {broker.amqp_port, broker.dist_port, broker.epmd_port} & SHARED_SERVICE_PORTS
    topic = f"interop/{broker.name}/seq"
    kept = f"interop/{broker.name}/kept"
    expected = [str(i).encode() for i in range(200)]

    with (
        Subscriber(broker.port, f"interop/{broker.name}/#") as sub,
        Publisher(broker.port) as pub,
    ):
        for payload in expected:
            pub.publish(topic, payload, qos=1, timeout=10)  # each one acked before the next
        sub.wait_for(lambda r: sum(m.topic == topic for m in r) >= 200, timeout=30)
        assert sub.payloads(topic) == expected
        pub.publish(kept, b"retained before restart", qos=1, retain=True)

        port = broker.port
        connects = pub.connects
        broker.restart()
        assert broker.running
        assert broker.port == port

        # the same client objects reconnect by themselves...
        pub.wait_connected(connects, timeout=30)
        after = f"interop/{broker.name}/after"
        deadline = time.monotonic() + 30
        while not sub.payloads(after):  # ...and the subscriber resubscribed (clean session)
            assert time.monotonic() < deadline, "subscriber did not come back after the restart"
            pub.publish(after, b"after restart", qos=1)
            time.sleep(0.3)

    # a new client too; retained messages survive only where the broker keeps state
    with Subscriber(broker.port, kept) as fresh:
        if broker.keeps_state:
            got = fresh.wait_for(lambda r: any(m.topic == kept for m in r), timeout=10)
            assert [m.payload for m in got if m.topic == kept][:1] == [b"retained before restart"]
        else:
            time.sleep(1.0)
            assert fresh.payloads(kept) == []
    with Publisher(broker.port) as cleanup:
        cleanup.publish(kept, b"", qos=1, retain=True)


# --------------------------------------------------------------------------- where they differ

# (granted QoS for a QoS 2 subscription, what happens to a QoS 2 PUBLISH)
QOS2 = {
    "mosquitto": (2, "delivered at QoS 2"),
    "rabbitmq": (1, "delivered at QoS 1"),
    "nats": (1, "connection closed"),
    "amqtt": (2, "delivered at QoS 2"),
}


def test_qos2(broker: Broker) -> None:
    topic = f"q2/{broker.name}/x"
    sub = _Client(broker.port)
    pub = _Client(broker.port)
    try:
        granted = sub.subscribe(topic, 2)
        pub.client.publish(topic, b"two", qos=2)
        got = sub.received(wait=3.0)
        if got:
            outcome = f"delivered at QoS {got[0].qos}"
        elif pub.disconnected.wait(3.0):
            outcome = "connection closed"
        else:
            outcome = "lost"
        assert (granted, outcome) == QOS2[broker.name]
    finally:
        sub.close()
        pub.close()


# which subscriptions get a retained status message published before they subscribe
RETAINED_WILDCARD = {"mosquitto": True, "rabbitmq": False, "nats": True, "amqtt": True}


def test_retained_status_reaches_later_subscribers(broker: Broker) -> None:
    status = f"ret/{broker.name}/box/status"
    with Publisher(broker.port) as pub:
        pub.publish(status, b"online", qos=1, retain=True)
        try:
            wildcard = f"ret/{broker.name}/box/+"
            for filt, wanted in ((status, True), (wildcard, RETAINED_WILDCARD[broker.name])):
                sub = _Client(broker.port)
                try:
                    sub.subscribe(filt, 1)
                    got = [m for m in sub.received(wait=2.0) if m.topic == status]
                finally:
                    sub.close()
                if wanted:
                    assert got, f"{filt}: retained message not delivered"
                    assert {(m.payload, m.retain) for m in got} == {(b"online", True)}
                else:
                    assert got == [], f"{filt}: retained message delivered"
        finally:
            pub.publish(status, b"", qos=1, retain=True)


def test_will_on_dropped_connection_not_after_disconnect(broker: Broker) -> None:
    topic = f"will/{broker.name}"
    with Subscriber(broker.port, f"{topic}/#") as sub:
        dropped = Publisher(broker.port, will=(f"{topic}/dropped", b"offline", 1, False)).start()
        dropped.drop()
        sub.wait_for(lambda r: any(m.topic == f"{topic}/dropped" for m in r), timeout=10)
        clean = Publisher(broker.port, will=(f"{topic}/clean", b"offline", 1, False)).start()
        clean.stop()
        time.sleep(1.5)
        assert sub.payloads(f"{topic}/clean") == []
        assert sub.payloads(f"{topic}/dropped") == [b"offline"]


# what a subscriber to dot/<kind>/# sees when dot/<kind>/box.1/t is published
DOT_TOPIC = {
    "mosquitto": "box.1/t",
    "rabbitmq": "box/1/t",  # '.' is RabbitMQ's own level separator
    "nats": None,  # the publisher's connection is closed
    "amqtt": "box.1/t",
}


def test_topic_with_a_dot(broker: Broker) -> None:
    prefix = f"dot/{broker.name}/"
    sub = _Client(broker.port)
    pub = _Client(broker.port)
    try:
        sub.subscribe(prefix + "#", 1)
        pub.client.publish(prefix + "box.1/t", b"dotted", qos=1)
        got = sub.received(wait=3.0)
        topics = [m.topic.removeprefix(prefix) for m in got]
        want = DOT_TOPIC[broker.name]
        if want is None:
            assert topics == []
            assert pub.disconnected.wait(5.0), "publisher still connected"
        else:
            assert topics == [want]
    finally:
        sub.close()
        pub.close()


# --------------------------------------------------------------------------- failures are bounded

BAD_CONFIG: dict[str, tuple[type[RabbitMqttBroker | NatsMqttBroker | AmqttBroker], str, str]] = {
    "rabbitmq": (RabbitMqttBroker, "mqtt.no_such_key = 1", "mqtt.no_such_key"),
    "nats": (NatsMqttBroker, "no_such_key: 1", 'unknown field "no_such_key"'),
    "amqtt": (AmqttBroker, "  no_such_module.NoPlugin: {}", "no_such_module.NoPlugin"),
}


@pytest.mark.parametrize("kind", sorted(BAD_CONFIG))
def test_a_broker_that_does_not_come_up_is_reported_with_its_log(
    tmp_path: Path, kind: BrokerKind
) -> None:
    if not broker_available(kind):
        pytest.fail(f"{kind} broker is not installed: {INSTALL[kind]}")
    cls, line, cause = BAD_CONFIG[kind]
    b = cls(tmp_path / kind, extra_config=(line,))
    began = time.monotonic()
    with pytest.raises(BrokerStartError) as err:
        b.start(timeout=60)
    assert time.monotonic() - began < 60
    assert cause in str(err.value)
    assert not b.running


def test_start_is_bounded_in_time(tmp_path: Path) -> None:
    """RabbitMQ cannot boot in 1 s: start() gives up in time and leaves no process behind."""
    if not broker_available("rabbitmq"):
        pytest.fail(f"rabbitmq broker is not installed: {INSTALL['rabbitmq']}")
    b = RabbitMqttBroker(tmp_path / "rabbitmq")
    began = time.monotonic()
    with pytest.raises(BrokerStartError, match="did not accept an MQTT CONNECT") as err:
        b.start(timeout=1.0)
    assert time.monotonic() - began < 15  # 1 s of waiting, then the kill and epmd cleanup
    assert str(b.log_path) in str(err.value)
    assert not b.running
    assert b.pid is None
