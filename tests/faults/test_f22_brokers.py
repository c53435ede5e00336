"""F22: the loss tests against every broker a fleet may scale on.

Mosquitto, RabbitMQ's MQTT plugin, NATS (JetStream) MQTT and amqtt, each a
private instance on a free loopback port (``tests/support/brokers.py``; the
shared services of this machine are never touched). For each broker, with the
real agent process, counter simulators and the QoS 1 checker:

- **outage** (F1): the link to the broker is refused for a few seconds under
  load, then comes back;
- **restart** (F4): the broker process is stopped and started again on the same
  port (RabbitMQ and NATS keep their state, amqtt and this Mosquitto do not:
  to the agent, which uses clean sessions, it is always a broker without
  persistence);
- **kill -9** (F6): the agent is killed a few times and restarted.

Pass: nothing committed is lost and the order per device is kept (the
checker's report), duplicates only where the checker allows them.

The checker must not lose what a broker accepted while the checker itself was
away (a broker without state forgets its session): during a restart the agent
is held off by the fault proxy until a probe message shows that the checker is
subscribed again, so every loss the checker sees is the agent's.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.faults.harness import AGENT, Rig, wait_status
from tests.faults.proxy import Mode
from tests.support.brokers import BROKER_KINDS, Broker, BrokerKind, make_broker

OUTAGE_S = 4.0
KILLS = 3


@pytest.fixture(params=BROKER_KINDS)
def any_broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Broker]:
    kind: BrokerKind = request.param
    broker = make_broker(kind, tmp_path / f"broker-{kind}")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def _checker_subscribed(rig: Rig, broker: Broker, n: int, timeout: float = 60.0) -> None:
    """Publish a probe on the checker's topic until the checker gets it."""
    marker = json.dumps({"state": f"probe-{n}"}).encode()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"probe-{n}")
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.connect(broker.host, broker.port)
            client.loop_start()
            client.publish(f"edge/{AGENT}/status", marker, qos=1).wait_for_publish(5)
            rig.checker.sub.wait_for(lambda ms: any(m.payload == marker for m in ms), 3)
            return
        except (OSError, TimeoutError, RuntimeError, ValueError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
        finally:
            client.loop_stop()
            client.disconnect()


def _judge(rig: Rig) -> None:
    report = rig.finish(timeout=90)
    assert report.problems() == []
    assert report.missing == [], "nothing committed may be lost"


def test_f22_outage(tmp_path: Path, any_broker: Broker) -> None:
    with Rig(tmp_path, any_broker, devices=2, interval="100ms") as rig:
        assert rig.checker.wait_for_count(10)
        rig.proxy.set(Mode.REFUSE)
        rig.proxy.reset_connections()
        wait_status(rig.agent, lambda d: not d["broker"]["connected"], 15)
        time.sleep(OUTAGE_S)
        assert rig.agent.status()["buffer"]["pending_batches"] > 0, "the buffer absorbs it"
        rig.proxy.set(Mode.PASS)
        wait_status(rig.agent, lambda d: d["buffer"]["pending_batches"] < 10, 60)
        _judge(rig)


def test_f22_broker_restart(tmp_path: Path, any_broker: Broker) -> None:
    with Rig(tmp_path, any_broker, devices=2, interval="100ms",
             mqtt={"reconnect_max": "2s"}) as rig:  # fmt: skip
        assert rig.checker.wait_for_count(10)
        for n in range(2):
            # Hold the agent off until the checker is back (see the module docstring).
            rig.proxy.set(Mode.REFUSE)
            rig.proxy.reset_connections()
            wait_status(rig.agent, lambda d: not d["broker"]["connected"], 15)
            any_broker.restart()
            _checker_subscribed(rig, any_broker, n)
            rig.proxy.set(Mode.PASS)
            wait_status(rig.agent, lambda d: d["broker"]["connected"], 30)
        _judge(rig)


def test_f22_agent_sigkill(tmp_path: Path, any_broker: Broker) -> None:
    rng = random.Random(22)
    with Rig(tmp_path, any_broker, devices=2, interval="50ms") as rig:
        for _ in range(KILLS):
            first = rig.checker.count()
            assert rig.checker.wait_for_count(first + 1, 30), "publishing did not resume"
            time.sleep(rng.uniform(0.0, 1.0))
            rig.agent.kill()
            rig.agent.start()
        _judge(rig)
