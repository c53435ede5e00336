"""The Sparkplug session through the real publisher and a real mosquitto.

The "host" is a paho client subscribed to ``spBv1.0/#``; every node message it
gets is checked by the spec-written host of ``host.py`` (seq, bdSeq, births
before data, aliases) and decoded by Eclipse Tahu's decoder where the bytes
matter.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.publish as mqtt_publish

from agent.north.destination import SparkplugOptions
from agent.north.link import Publisher
from agent.north.session import DeviceFacts
from agent.north.sparkplug import sparkplug_b_pb2 as pb
from agent.north.sparkplug.encode import EDGE_SEQ, REBIRTH, TagSpec
from agent.north.sparkplug.session import SparkplugSession, load_next_bd_seq
from drivers.base import Reading
from tests.agent.north.sparkplug.host import Host
from tests.agent.north.test_publisher import AGENT, MemorySource, options, running, until
from tests.support.mosquitto import Mosquitto, Received, Subscriber
from tests.support.tahu import Decode

GROUP, NODE = "plant", "box-1"
NODE_TOPICS = f"spBv1.0/{GROUP}/"
FACTS = {
    "m1": DeviceFacts("m1", "motor@abc", tags=(TagSpec("n", "Int64", "rpm"),)),
}


def _session(tmp_path: Path, **kw: object) -> SparkplugSession:
    opts = SparkplugOptions(
        group_id=GROUP,
        edge_node_id=NODE,
        state_file=tmp_path / "bdseq",
        **kw,  # type: ignore[arg-type]
    )
    return SparkplugSession(opts, AGENT, FACTS)


def _kind(m: Received) -> str:
    return m.topic.split("/")[2]


def _node(msgs: list[Received]) -> list[Received]:
    """What the Edge Node published (not the host's commands)."""
    return [m for m in msgs if m.topic.startswith(NODE_TOPICS) and _kind(m)[1:] != "CMD"]


def _payload(m: Received) -> pb.Payload:
    p = pb.Payload()
    p.ParseFromString(m.payload)
    return p


def _bd_seq(m: Received) -> int:
    return next(x.long_value for x in _payload(m).metrics if x.name == "bdSeq")


def _edge_seqs(msgs: list[Received], aliases: dict[int, str] | None = None) -> list[int]:
    """edge/seq of every DDATA (its alias found in the DBIRTHs)."""
    alias: dict[str, int] = {}
    out: list[int] = []
    for m in msgs:
        if _kind(m) == "DBIRTH":
            alias[m.topic] = next(x.alias for x in _payload(m).metrics if x.name == EDGE_SEQ)
        elif _kind(m) == "DDATA":
            birth = m.topic.replace("/DDATA/", "/DBIRTH/")
            out.extend(x.long_value for x in _payload(m).metrics if x.alias == alias[birth])
    return out


def _check(msgs: list[Received]) -> Host:
    host = Host()
    for m in _node(msgs):
        host.receive(m.topic, m.payload)  # raises RebirthNeeded on any violation
    return host


async def _publish(port: int, topic: str, payload: bytes, retain: bool = False) -> None:
    await asyncio.to_thread(
        mqtt_publish.single, topic, payload, qos=1, retain=retain, hostname="127.0.0.1", port=port
    )


def _state(online: bool, ts: int) -> bytes:
    return json.dumps({"online": online, "timestamp": ts}).encode()


async def test_births_before_data_aliases_and_the_will_on_a_dropped_link(
    mosquitto: Mosquitto, tmp_path: Path, tahu_decode: Decode
) -> None:
    source = MemorySource()
    for _ in range(3):
        source.add("m1")
    session = _session(tmp_path)
    with Subscriber(mosquitto.port, "spBv1.0/#") as sub:
        pub = Publisher(options(mosquitto.port), source, AGENT, session)
        async with running(pub):
            await until(lambda: not source.rows, what="three batches acked")
            assert pub._link is not None
            pub._link.abort("test: the link is cut")  # no DISCONNECT: the broker sends the Will
            msgs = await sub.wait_for_async(
                lambda m: [_kind(x) for x in _node(m)].count("NBIRTH") == 2
            )
            source.add("m1")
            msgs = await sub.wait_for_async(lambda m: _edge_seqs(_node(m))[-1:] == [4])
            await until(lambda: not source.rows, what="batch 4 acked")
    node = _node(msgs)
    kinds = [_kind(m) for m in node]
    first_death = kinds.index("NDEATH")
    assert kinds[:5] == ["NBIRTH", "DBIRTH", "DDATA", "DDATA", "DDATA"]
    births = [m for m in node if _kind(m) == "NBIRTH"]
    assert [_bd_seq(births[0]), _bd_seq(node[first_death]), _bd_seq(births[1])] == [0, 0, 1]
    assert kinds.index("NBIRTH", 1) > first_death
    assert _edge_seqs(node) == [1, 2, 3, 4]
    host = _check(node)
    # MemorySource batches were committed before the connection: a backlog, sent as history
    assert [(d, t, v) for d, t, v, _ in host.history if t == "n"] == [("m1", "n", i) for i in
                                                                      (1, 2, 3, 4)]  # fmt: skip
    assert pub.stats.packets_published >= 4
    assert load_next_bd_seq(tmp_path / "bdseq") == 2

    birth, ddata = tahu_decode([node[1].payload, node[2].payload])
    metrics = {m["name"]: m for m in birth["metrics"]}
    assert metrics["n"]["type"] == "Int64"
    assert metrics["n"]["properties"]["engUnit"]["value"] == "rpm"
    assert all("name" not in m for m in ddata["metrics"])
    assert {m["alias"] for m in ddata["metrics"]} == {
        metrics["n"]["alias"],
        metrics[EDGE_SEQ]["alias"],
    }
    assert all(
        m.get("isHistorical") for m in ddata["metrics"] if m["alias"] == metrics["n"]["alias"]
    )


async def test_bd_seq_is_never_repeated_across_a_restart(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    def count(kind: str, n: int) -> Callable[[list[Received]], bool]:
        return lambda m: [_kind(x) for x in m].count(kind) == n

    seen: list[int] = []
    with Subscriber(mosquitto.port, f"spBv1.0/{GROUP}/+/{NODE}") as sub:
        for run in range(3):  # three agent starts, one state file
            pub = Publisher(options(mosquitto.port), MemorySource(), AGENT, _session(tmp_path))
            async with running(pub):
                await sub.wait_for_async(count("NBIRTH", run + 1))
                await pub.stop(drain_timeout=1)
            msgs = await sub.wait_for_async(count("NDEATH", run + 1))
            seen = [_bd_seq(m) for m in msgs if _kind(m) == "NBIRTH"]
    deaths = [_bd_seq(m) for m in msgs if _kind(m) == "NDEATH"]
    assert seen == [0, 1, 2]
    assert deaths == [0, 1, 2]  # goodbye: NDEATH of the same bdSeq before DISCONNECT
    assert (tmp_path / "bdseq").read_text() == "3\n"


async def test_rebirth_on_ncmd_and_device_death_and_birth(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    source = MemorySource()
    source.add("m1")
    session = _session(tmp_path)
    with Subscriber(mosquitto.port, "spBv1.0/#") as sub:
        pub = Publisher(options(mosquitto.port), source, AGENT, session)
        async with running(pub):
            await until(lambda: not source.rows)
            command = pb.Payload(timestamp=1)
            command.metrics.add(name=REBIRTH, datatype=pb.Boolean, boolean_value=True)
            await _publish(
                mosquitto.port, f"spBv1.0/{GROUP}/NCMD/{NODE}", command.SerializeToString()
            )
            await sub.wait_for_async(lambda m: [_kind(x) for x in _node(m)].count("NBIRTH") == 2)
            source.add("m1")
            await until(lambda: not source.rows)
            pub.device_state("m1", online=False)
            await sub.wait_for_async(lambda m: "DDEATH" in [_kind(x) for x in _node(m)])
            pub.device_state("m1", online=True)
            source.add("m1")
            msgs = await sub.wait_for_async(lambda m: _edge_seqs(_node(m))[-1:] == [3])
    node = _node(msgs)
    kinds = [_kind(m) for m in node]
    assert kinds == [
        "NBIRTH", "DBIRTH", "DDATA",  # first birth, batch 1
        "NBIRTH", "DBIRTH", "DDATA",  # rebirth: same bdSeq, seq 0 again; batch 2
        "DDEATH", "DBIRTH", "DDATA",  # offline, online, batch 3
    ]  # fmt: skip
    births = [m for m in node if _kind(m) == "NBIRTH"]
    assert _bd_seq(births[0]) == _bd_seq(births[1])
    assert _payload(births[1]).seq == 0
    _check(node)  # seq and births in order all the way


async def test_primary_host_state_gates_births_and_data(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    state = "spBv1.0/STATE/scada"
    source = MemorySource()
    source.add("m1")
    session = _session(tmp_path, primary_host="scada")
    await _publish(mosquitto.port, state, _state(False, 1000), retain=True)
    with Subscriber(mosquitto.port, "spBv1.0/#") as sub:
        pub = Publisher(options(mosquitto.port), source, AGENT, session)
        async with running(pub):
            await until(lambda: pub.stats.connected, what="connected")
            assert not session.ready()
            await _publish(mosquitto.port, state, _state(True, 2000), retain=True)
            await until(lambda: not source.rows, what="data once the host is online")
            await _publish(mosquitto.port, state, _state(False, 3000), retain=True)
            await sub.wait_for_async(lambda m: "NDEATH" in [_kind(x) for x in _node(m)])
            await until(lambda: pub.stats.connected and pub.stats.reconnects >= 1)
            source.add("m1")  # the host is offline: it waits
            await _publish(mosquitto.port, state, _state(False, 500), retain=False)  # stale
            await _publish(mosquitto.port, state, _state(True, 4000), retain=True)
            await until(lambda: not source.rows, what="data after the host is back")
            msgs = await sub.wait_for_async(lambda m: _edge_seqs(_node(m))[-1:] == [2])
    order = [
        f"STATE:{json.loads(m.payload)['online']}" if m.topic == state else _kind(m) for m in msgs
    ]
    # nothing of the node before the host said online; NDEATH and a new bdSeq after offline
    assert order[: order.index("STATE:True")] == ["STATE:False"]
    after_offline = order[order.index("STATE:False", 1) :]
    assert after_offline[:2] == ["STATE:False", "NDEATH"]
    back = after_offline.index("STATE:True")
    assert after_offline[2:back] == ["STATE:False"]  # the stale one, and no node message
    assert after_offline[back + 1 : back + 4] == ["NBIRTH", "DBIRTH", "DDATA"]
    births = [m for m in _node(msgs) if _kind(m) == "NBIRTH"]
    assert [_bd_seq(b) for b in births] == [0, 1]
    assert "primary host scada is offline" in (pub.stats.last_error or "")


async def test_seq_wraps_from_255_to_0(mosquitto: Mosquitto, tmp_path: Path) -> None:
    source = MemorySource()
    for _ in range(300):
        source.add("m1")
    with Subscriber(mosquitto.port, "spBv1.0/#") as sub:
        pub = Publisher(options(mosquitto.port, max_inflight=50), source, AGENT, _session(tmp_path))
        async with running(pub):
            await until(lambda: not source.rows, within=30, what="300 batches acked")
            msgs = await sub.wait_for_async(lambda m: len(_edge_seqs(_node(m))) >= 300)
    seqs = [_payload(m).seq for m in _node(msgs) if _kind(m) != "NDEATH"]
    assert seqs[:2] == [0, 1]
    assert seqs[255:258] == [255, 0, 1]
    _check(msgs)
    assert _edge_seqs(_node(msgs)) == list(range(1, 301))


async def test_nothing_is_lost_across_a_broker_restart_with_the_real_buffer(
    tmp_path: Path,
) -> None:
    from agent.buffer import Buffer

    broker = Mosquitto(tmp_path / "broker", persistence=True)
    broker.start()
    devices = ("m1", "m2", "meter")
    try:
        with Subscriber(broker.port, "spBv1.0/#", session="sp-checker") as sub:
            async with Buffer(tmp_path / "buffer.db", agent_id=AGENT, commit_interval=0.1) as buf:
                pub = Publisher(
                    options(broker.port, max_inflight=5), buf, AGENT, _session(tmp_path)
                )
                async with running(pub):

                    async def produce(n: int, start: int) -> None:
                        for i in range(start, start + n):
                            buf.put(devices[i % 3], [Reading(1764270000000 + i, {"n": i})])
                            await asyncio.sleep(0.01)

                    await produce(40, 0)
                    await asyncio.to_thread(broker.stop)
                    await produce(60, 40)
                    await asyncio.to_thread(broker.start)
                    await produce(40, 100)
                    await buf.flush()
                    total = buf.last_seq
                    msgs = await sub.wait_for_async(
                        lambda m: set(_by_device(m).get("all", [])) >= set(range(1, total + 1)),
                        timeout=40,
                    )
        per_device = _by_device(msgs)
        for device in devices:
            got = per_device[device]
            firsts = [s for i, s in enumerate(got) if s not in got[:i]]
            assert firsts == sorted(firsts), f"{device} out of order"
        assert pub.stats.reconnects >= 1
    finally:
        broker.stop()


def _by_device(msgs: list[Received]) -> dict[str, list[int]]:
    """edge/seq per device (and under "all"), with the alias of each connection's DBIRTH."""
    out: dict[str, list[int]] = {"all": []}
    alias: dict[str, int] = {}
    for m in msgs:
        if not m.topic.startswith(NODE_TOPICS):
            continue
        kind, device = _kind(m), m.topic.split("/")[-1]
        if kind == "DBIRTH":
            alias[device] = next(x.alias for x in _payload(m).metrics if x.name == EDGE_SEQ)
        elif kind == "DDATA":
            seqs = [x.long_value for x in _payload(m).metrics if x.alias == alias[device]]
            out.setdefault(device, []).extend(seqs)
            out["all"].extend(seqs)
    return out


async def test_a_dbirth_above_the_limit_refuses_its_readings_loudly(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """300 long tag names: the DBIRTH passes 8 KB. A DDATA without its DBIRTH is of no use
    to a host (aliases only) and a skipped one would gap the seq: nothing of that device
    goes, its readings are refused and counted, and the seq stays whole."""
    from agent.buffer import Buffer

    limit = 8192
    opts = SparkplugOptions(group_id=GROUP, edge_node_id=NODE, state_file=tmp_path / "bd")
    session = SparkplugSession(opts, AGENT, {}, max_message_size=limit)
    tags = {f"area1/line2/cell3/some_long_tag_name_{i:04d}": float(i) for i in range(300)}
    async with Buffer(tmp_path / "b.db", agent_id=AGENT, destinations=("sp",)) as buf:
        for k in range(3):
            buf.put("m1", [Reading(1764270000000 + k * 1000, dict(tags)),
                           Reading(1764270000500 + k * 1000, dict(tags))])  # fmt: skip
        buf.put("small", [Reading(1764270009000, {"t": 1.0})])
        await buf.flush()
        view = buf.view("sp")
        with Subscriber(mosquitto.port, "spBv1.0/#") as sub:
            pub = Publisher(options(mosquitto.port, max_message_size=limit), view, AGENT, session)
            async with running(pub):
                await until(lambda: pub.stats.refused_by_dialect == 6, what="6 readings refused")
                msgs = await sub.wait_for_async(lambda m: _firsts(m) == [4])
                await until(lambda: pub.stats.messages_published == 1, what="seq 4 confirmed")
        assert await view.fetch(0, 10) == []
    kinds = [(_kind(m), m.topic.rsplit("/", 1)[-1]) for m in _node(msgs)]
    assert ("DBIRTH", "m1") not in kinds
    assert ("DDATA", "m1") not in kinds
    assert [k for k, _ in kinds[:3]] == ["NBIRTH", "DBIRTH", "DDATA"]  # the small device goes
    seqs = [_payload(m).seq for m in _node(msgs) if _kind(m) != "NDEATH"]
    assert seqs == list(range(len(seqs)))  # no seq taken by the DBIRTH that was not sent
    assert all(len(m.payload) <= limit for m in msgs)
    assert "DBIRTH of m1" in (pub.stats.last_error or "")
    assert (pub.stats.oversized_split, buf.refused_readings) == (0, 0)


def _firsts(msgs: list[Received]) -> list[int]:
    """edge/seq of every DDATA, read without its DBIRTH: it is the first metric."""
    return [_payload(m).metrics[0].long_value for m in _node(msgs) if _kind(m) == "DDATA"]


async def test_a_batch_of_more_packets_than_the_window_does_not_stall_the_destination(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """2,500 readings of 40 tags under a 1 KiB limit: over 1,200 DDATA for one batch, more
    than the client's queue was sized for (window 1): all go, none is refused."""
    from agent.buffer import Buffer

    limit = 1024
    opts = SparkplugOptions(group_id=GROUP, edge_node_id=NODE, state_file=tmp_path / "bd")
    session = SparkplugSession(opts, AGENT, {}, max_message_size=limit)
    tags = {f"t{i:03d}": float(i) for i in range(40)}
    async with Buffer(tmp_path / "b.db", agent_id=AGENT, destinations=("sp",)) as buf:
        buf.put("m1", [Reading(1764270000000 + k, dict(tags)) for k in range(2500)])
        buf.put("m1", [Reading(1764280000000, {"t000": 1.0})])
        await buf.flush()
        pub = Publisher(
            options(mosquitto.port, max_message_size=limit, max_inflight=1), buf.view("sp"),
            AGENT, session,
        )  # fmt: skip
        async with running(pub):
            await until(lambda: pub.stats.messages_published == 2, within=40, what="both batches")
        assert pub.stats.reconnects == 0, pub.stats.last_error
        assert pub.stats.packets_published > 1200
        assert (pub.stats.refused_by_dialect, pub.stats.oversized_split) == (0, 0)
