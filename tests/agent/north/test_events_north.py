"""Events messages from a real buffer through every dialect, read by an independent side.

The buffer holds the events of a machine and of the box (docs/EVENTS.md), put
as the agent stores them (:func:`tests.support.events.put_events`); a real
Mosquitto carries them; the receiving side is a plain subscriber (edge-json)
or the cloud stand-ins of ``tests/support/clouds.py``, written from the
platforms' documentation. Checked: values, timestamps, order, every seq
acknowledged, and for edge-json nothing lost across a broker restart.
Sparkplug B is in ``tests/agent/north/sparkplug/test_events.py`` (Tahu).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from agent.buffer import Buffer
from agent.message import decode_events, decode_message
from agent.north.destination import AlinkOptions, IotdaOptions, ThingsboardOptions
from agent.north.dialects import alink, iotda
from agent.north.dialects.alink_session import AlinkSession
from agent.north.dialects.iotda_session import IotdaSession
from agent.north.dialects.tb_session import TbSession
from agent.north.link import Publisher
from agent.north.session import Session
from agent.runtime.sessions import machine_facts
from drivers.base import Reading
from tests.agent.north.test_publisher import AGENT, options, running, until
from tests.support.clouds import (
    GATEWAY,
    AlinkCloud,
    AlinkIdentity,
    CloudStandIn,
    IotdaCloud,
    ThingsboardCloud,
)
from tests.support.events import (
    BOX_VALUES,
    MACHINE,
    MACHINE_VALUES,
    SCENARIO,
    T0,
    count,
    machine_plan,
    put_events,
    put_scenario,
)
from tests.support.mosquitto import Mosquitto, Subscriber

FACTS = machine_facts([machine_plan()])


def _buffer(tmp_path: Path) -> Buffer:
    return Buffer(tmp_path / "buffer.db", agent_id=AGENT, commit_interval=0.02)


async def _drained(buf: Buffer, pub: Publisher) -> None:
    async def pending() -> int:
        await buf.flush()
        return (await buf.stats()).pending_batches

    for _ in range(200):
        if await pending() == 0:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"batches still pending: {pub.stats}")


def _samples(cloud: CloudStandIn, device: str) -> list[tuple[Any, dict[str, Any]]]:
    with cloud.lock:
        return [(s.ts, dict(s.values)) for s in cloud.samples.get(device, [])]


# --------------------------------------------------------------------------- edge-json


async def test_edge_json_sends_events_on_their_topic_as_stored(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    async with _buffer(tmp_path) as buf:
        with Subscriber(mosquitto.port, "edge/#") as sub:
            pub = Publisher(options(mosquitto.port), buf, AGENT)
            async with running(pub):
                buf.put("motor-1", [Reading(T0, {"rpm": 1480})])
                put_scenario(buf)
                buf.put("motor-1", [Reading(T0 + 9000, {"rpm": 1490})])
                msgs = await sub.wait_for_async(lambda m: len(_data(m)) >= 6)
                await _drained(buf, pub)
    data = _data(msgs)
    topics = [m.topic for m in data]
    assert topics == [
        f"edge/{AGENT}/motor-1",
        f"edge/{AGENT}/events/{MACHINE}",
        f"edge/{AGENT}/events/_box",
        f"edge/{AGENT}/events/{MACHINE}",
        f"edge/{AGENT}/events/{MACHINE}",
        f"edge/{AGENT}/motor-1",
    ]
    assert all(m.payload.startswith(b'{"kind":"events",') for m in data[1:5])
    events = [decode_events(m.payload) for m in data[1:5]]
    assert [e["seq"] for e in events] == [2, 3, 4, 5]
    assert [(e["source"], e["events"]) for e in events] == SCENARIO
    assert [decode_message(m.payload)["seq"] for m in (data[0], data[5])] == [1, 6]
    assert pub.stats.messages_published == 6


async def test_edge_json_events_topic_is_configurable(mosquitto: Mosquitto, tmp_path: Path) -> None:
    async with _buffer(tmp_path) as buf:
        with Subscriber(mosquitto.port, "plant/#") as sub:
            o = options(mosquitto.port, events_topic="plant/{agent}/facts/{source}")
            pub = Publisher(o, buf, AGENT)
            async with running(pub):
                put_scenario(buf)
                msgs = await sub.wait_for_async(lambda m: len(m) >= 4)
                await _drained(buf, pub)
    assert [m.topic for m in msgs][:2] == [
        f"plant/{AGENT}/facts/{MACHINE}",
        f"plant/{AGENT}/facts/_box",
    ]


async def test_edge_json_events_survive_a_broker_restart(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "broker", persistence=True)
    broker.start()
    window = 4
    try:
        with Subscriber(broker.port, "edge/+/events/+", session="events-checker") as sub:
            async with Buffer(tmp_path / "b.db", agent_id=AGENT, commit_interval=0.05) as buf:
                pub = Publisher(options(broker.port, max_inflight=window), buf, AGENT)
                async with running(pub):

                    async def produce(first: int, n: int) -> None:
                        for i in range(first, first + n):
                            ts = T0 + i * 1000
                            put_events(buf, MACHINE, [count(MACHINE, "total", i, 1, ts - 1000, ts)])
                            await asyncio.sleep(0.01)

                    await produce(0, 30)
                    await asyncio.to_thread(broker.stop)
                    await produce(30, 60)
                    assert not pub.stats.connected
                    await asyncio.to_thread(broker.start)
                    await produce(90, 30)
                    await buf.flush()
                    total = buf.last_seq
                    msgs = await sub.wait_for_async(
                        lambda m: (
                            {decode_events(x.payload)["seq"] for x in m} >= set(range(1, total + 1))
                        ),
                        timeout=30,
                    )
                    await _drained(buf, pub)
    finally:
        broker.stop()
    assert total == 120
    first: dict[int, list[dict[str, Any]]] = {}
    highest = 0
    for message in (decode_events(m.payload) for m in msgs):
        seq = message["seq"]
        if seq in first:
            assert first[seq] == message["events"], "one seq, two contents"
            continue
        assert seq > highest, f"seq {seq} after {highest}"
        highest = seq
        first[seq] = message["events"]
    assert [first[s][0]["total"] for s in range(1, total + 1)] == list(range(120))
    assert len(msgs) - total <= window * max(1, pub.stats.reconnects)


def _data(msgs: list[Any]) -> list[Any]:
    return [m for m in msgs if not m.topic.endswith("/status")]


# --------------------------------------------------------------------------- the clouds


async def _deliver(
    mosquitto: Mosquitto, tmp_path: Path, session: Session, cloud: CloudStandIn, seqs: int
) -> Publisher:
    """Put the scenario, publish it through ``session`` until every batch is acknowledged."""
    async with _buffer(tmp_path) as buf:
        put_scenario(buf)
        await buf.flush()
        pub = Publisher(options(mosquitto.port), buf, AGENT, session)
        async with running(pub):
            await until(lambda: len(cloud.seqs()) >= seqs, what="every seq at the cloud")
            await _drained(buf, pub)
            await pub.stop(drain_timeout=5)
    return pub


async def test_thingsboard_machine_telemetry_attributes_and_the_gateway_clock(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    with ThingsboardCloud(mosquitto.port) as cloud:
        session = TbSession(ThingsboardOptions(), AGENT, FACTS)
        pub = await _deliver(mosquitto, tmp_path, session, cloud, 4)
        with cloud.lock:
            assert cloud.types[MACHINE] == "machine@1"
            attributes = dict(cloud.attributes[MACHINE])
            order = [e for e in cloud.events if e[1] == MACHINE]
            assert cloud.errors == []
    assert _samples(cloud, MACHINE) == MACHINE_VALUES
    assert _samples(cloud, GATEWAY) == BOX_VALUES
    assert cloud.device_seqs(MACHINE) == [1, 1, 3, 3, 3, 4]
    assert cloud.device_seqs(GATEWAY) == [2]
    assert attributes["state"] == "fault"
    assert attributes["state_reason"] == "fault"
    assert attributes["mode"] == "production"
    assert attributes["alarm_overcurrent"] is False
    assert attributes["profile"] == "machine@1"
    assert order[0][0] == "connect"
    assert order.index(("attributes", MACHINE), 2) > order.index(("telemetry", MACHINE))
    assert pub.stats.refused_by_dialect == 0


async def test_alink_machine_properties_pack_events_and_the_gateway_clock(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    sub = alink.SubDevice("a1MCpk0001", MACHINE, secret="machine-secret")
    o = AlinkOptions(
        product_key="a1GWpk0001", device_name="gw01", device_secret="gw-secret",
        subdevices={MACHINE: sub},
    )  # fmt: skip
    identity = AlinkIdentity("a1MCpk0001", MACHINE, "machine-secret")
    with AlinkCloud(mosquitto.port, "a1GWpk0001", "gw01", [identity]) as cloud:
        session = AlinkSession(o, AGENT, FACTS, tls=False)
        pub = await _deliver(mosquitto, tmp_path, session, cloud, 4)
        with cloud.lock:
            events = list(cloud.pack_events)
            assert cloud.errors == []
            assert cloud.not_logged_in == []
    booleans = [(ts, {k: int(v) if isinstance(v, bool) else v for k, v in values.items()})
                for ts, values in MACHINE_VALUES]  # fmt: skip
    assert _samples(cloud, MACHINE) == booleans  # Alink's bool is 0/1
    assert _samples(cloud, GATEWAY) == BOX_VALUES
    mine = [(i, v, t) for d, i, v, t in events if d == MACHINE]
    assert [(i, t) for i, _, t in mine] == [
        ("state", T0), ("count", T0 + 1000), ("alarm", T0 + 2000), ("state", T0 + 3000),
        ("state", T0 + 3000), ("alarm", T0 + 4000),
    ]  # fmt: skip
    opened = mine[0][1]
    assert opened == {
        "id": f"{MACHINE}/state/{T0}", "state": "running", "mode": "production",
        "planned_downtime": 0, "start": T0,
    }  # fmt: skip
    assert mine[1][1]["kinds"] == ["normal"]
    assert mine[3][1]["end"] == T0 + 3000
    assert [(i, v["state"], t) for d, i, v, t in events if d == GATEWAY] == [
        ("clock", "unsynced", T0 + 500)
    ]
    assert pub.stats.refused_by_cloud == 0


async def test_iotda_machine_service_and_the_box_clock_refused_and_counted(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    o = IotdaOptions(
        gateway_id="gw01", secret="gw-secret",
        subdevices={MACHINE: iotda.SubDevice("prod_press01", "drive")},
    )  # fmt: skip
    with IotdaCloud(mosquitto.port, "gw01") as cloud:
        session = IotdaSession(o, AGENT, FACTS)
        pub = await _deliver(mosquitto, tmp_path, session, cloud, 3)
        with cloud.lock:
            services = list(cloud.services["prod_press01"])
            assert cloud.errors == []
    expected = [(iotda.event_time(ts), values) for ts, values in MACHINE_VALUES]
    assert _samples(cloud, "prod_press01") == expected
    assert services == ["machine"] * len(MACHINE_VALUES)
    assert cloud.seqs() == {1, 3, 4}
    assert pub.stats.refused_by_dialect == 1  # the box's batch: no sub-device
    assert "_box" in str(pub.stats.last_error)


def test_the_scenario_is_what_the_events_contract_says() -> None:
    """The shared scenario itself: the encoder takes it, the values match the table."""
    from agent.message import encode_event_parts
    from agent.north.facts import event_values

    for source, events in SCENARIO:
        head, tail = encode_event_parts(AGENT, source, events)
        assert json.loads(head + b"1" + tail)["events"] == events
    machine = [e for s, batch in SCENARIO if s == MACHINE for e in batch]
    assert [(e["ts"], event_values(e)) for e in machine] == MACHINE_VALUES
