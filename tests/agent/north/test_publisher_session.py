"""The publisher speaking a dialect through a Session: acks after the cloud's reply.

A tiny session written here (one packet per batch, each waiting for a reply
on ``fake/reply``) against a real mosquitto, and a real client playing the
cloud: it reads ``fake/data`` and answers accepted, refused or retry.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from agent.north.dialects.common import Batch, Credentials, Encoded, Packet, Refused
from agent.north.link import Publisher
from agent.north.session import Reaction, ReplyVerdict
from agent.north.sparkplug.encode import Outgoing
from drivers.base import Reading
from tests.agent.north.test_publisher import AGENT, MemorySource, options, running, until
from tests.support.mosquitto import Mosquitto, Subscriber

DATA, REPLY, WILL, HELLO = "fake/data", "fake/reply", "fake/will", "fake/hello"


class FakeSession:
    """One packet per batch; a batch is confirmed by the cloud's reply naming its packet."""

    dialect = "fake"

    def __init__(self) -> None:
        self.packets = 0
        self.connects = 0
        self.refuse_value: object = None  # a value this dialect cannot carry

    def credentials(self, now_ms: int) -> Credentials | None:
        return None

    def will(self, now_ms: int) -> Outgoing:
        return Outgoing(WILL, b"gone", 1, False)

    def subscriptions(self) -> Sequence[tuple[str, int]]:
        return [(REPLY, 1)]

    def on_connect(self, now_ms: int) -> Sequence[Outgoing]:
        self.connects += 1
        return [Outgoing(HELLO, b"%d" % self.connects, 1, False)]

    def ready(self) -> bool:
        return True

    def encode(self, batches: Sequence[Batch], now_ms: int, *, historical: bool) -> Encoded:
        packets: list[Packet] = []
        refused: list[Refused] = []
        idle: list[int] = []
        for batch in batches:
            values = [r.values for r in batch.readings]
            if self.refuse_value is not None and any(
                self.refuse_value in v.values() for v in values
            ):
                refused.append(Refused(batch.seq, batch.device, batch.readings[0].ts, "odd"))
                idle.append(batch.seq)
                continue
            self.packets += 1
            body = {"id": f"p{self.packets}", "seq": batch.seq, "historical": historical}
            packets.append(Packet(DATA, json.dumps(body).encode(), (batch.seq,)))
        return Encoded(tuple(packets), tuple(refused), tuple(idle))

    def reply_key(self, packet: Packet) -> str | None:
        return str(json.loads(packet.payload)["id"])

    def on_message(self, topic: str, payload: bytes, now_ms: int) -> Reaction:
        reply = json.loads(payload)
        verdict: ReplyVerdict = reply["verdict"]
        note = None if verdict == "accepted" else f"cloud said {verdict} to {reply['id']}"
        return Reaction(replies=((reply["id"], verdict),), note=note)

    def device_state(self, device: str, online: bool, now_ms: int) -> Sequence[Outgoing]:
        return [Outgoing(f"fake/state/{device}", b"1" if online else b"0", 1, False)]

    def goodbye(self, now_ms: int) -> Sequence[Outgoing]:
        return [Outgoing("fake/bye", b"bye", 1, False)]


class Cloud:
    """A real MQTT client answering each packet on ``fake/data`` with ``decide(id, seq)``."""

    def __init__(self, port: int, decide: Callable[[str, int], ReplyVerdict | None]) -> None:
        self.decide = decide
        self.seen: list[tuple[str, int]] = []
        self.held: list[str] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="fake-cloud")
        self._client.on_connect = lambda c, *_: c.subscribe(DATA, qos=1)
        self._client.on_subscribe = lambda *_: self._subscribed.set()
        self._client.on_message = self._on_message
        self._client.connect("127.0.0.1", port)
        self._client.loop_start()
        assert self._subscribed.wait(10), "the cloud client got no SUBACK"

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        body = json.loads(msg.payload)
        with self._lock:
            self.seen.append((body["id"], body["seq"]))
        verdict = self.decide(body["id"], body["seq"])
        if verdict is None:
            with self._lock:
                self.held.append(body["id"])
        else:
            self.answer(body["id"], verdict)

    def answer(self, packet_id: str, verdict: ReplyVerdict) -> None:
        body = json.dumps({"id": packet_id, "verdict": verdict})
        self._client.publish(REPLY, body, qos=1)

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


async def test_a_batch_is_acked_only_after_the_cloud_accepted_it(mosquitto: Mosquitto) -> None:
    source = MemorySource()
    for _ in range(3):
        source.add("dev")
    cloud = Cloud(mosquitto.port, lambda _id, _seq: None)  # holds every reply
    with Subscriber(mosquitto.port, "fake/#") as sub:
        session = FakeSession()
        pub = Publisher(options(mosquitto.port), source, AGENT, session)
        try:
            async with running(pub):
                await until(lambda: len(cloud.held) == 3, what="three packets at the cloud")
                await until(lambda: pub.stats.packets_published == 3, what="three PUBACKs")
                assert sorted(source.rows) == [1, 2, 3]  # PUBACKed, not replied: kept
                cloud.answer("p2", "accepted")  # out of order: p1 is still open
                await until(lambda: pub.stats.messages_published == 0 and pub._by_key.keys()
                            == {"p1", "p3"}, what="p2's reply taken")  # fmt: skip
                assert sorted(source.rows) == [1, 2, 3]
                cloud.answer("p1", "accepted")
                await until(lambda: sorted(source.rows) == [3], what="1 and 2 acked")
                cloud.answer("p3", "accepted")
                await until(lambda: not source.rows, what="3 acked")
                await pub.stop(drain_timeout=5)
        finally:
            cloud.stop()
        msgs = await sub.wait_for_async(lambda m: any(x.topic == "fake/bye" for x in m))
    topics = [m.topic for m in msgs]
    assert topics[0] == HELLO  # on_connect before any data
    assert topics.index("fake/bye") > max(i for i, t in enumerate(topics) if t == DATA)
    assert not any(t.startswith("edge/") for t in topics)  # no edge-json status messages
    assert pub.stats.dialect == "fake"
    assert pub.stats.messages_published == 3
    assert pub.stats.values_published == 6
    assert pub.stats.refused_by_cloud == 0
    assert f"Client {pub._o.client_id} disconnected." in mosquitto.log_text()


async def test_a_refused_packet_is_acked_and_counted(mosquitto: Mosquitto) -> None:
    source = MemorySource()
    for _ in range(4):
        source.add("dev", n_values=5)
    cloud = Cloud(mosquitto.port, lambda _id, seq: "refused" if seq == 2 else "accepted")
    try:
        pub = Publisher(options(mosquitto.port), source, AGENT, FakeSession())
        async with running(pub):
            await until(lambda: not source.rows, what="every batch acked")
    finally:
        cloud.stop()
    assert pub.stats.refused_by_cloud == 5
    assert pub.stats.values_published == 15
    assert pub.stats.last_error == "cloud said refused to p2"
    assert [seq for _id, seq in cloud.seen] == [1, 2, 3, 4]  # never sent again


async def test_retry_drops_the_link_and_everything_unconfirmed_is_sent_again(
    mosquitto: Mosquitto,
) -> None:
    source = MemorySource()
    for _ in range(5):
        source.add("dev")
    retried: list[int] = []

    def decide(_id: str, seq: int) -> ReplyVerdict:
        if seq == 3 and not retried:
            retried.append(seq)
            return "retry"
        return "accepted"

    cloud = Cloud(mosquitto.port, decide)
    session = FakeSession()
    try:
        pub = Publisher(options(mosquitto.port), source, AGENT, session)
        async with running(pub):
            await until(lambda: not source.rows, what="every batch acked")
    finally:
        cloud.stop()
    seqs = [seq for _id, seq in cloud.seen]
    assert seqs[:3] == [1, 2, 3]
    assert seqs.count(3) == 2  # sent again on the next connection
    assert seqs[seqs.index(3, 3) :][-3:] == [3, 4, 5]  # in order from there
    assert pub.stats.reconnects >= 1
    assert session.connects >= 2  # on_connect again on the new connection
    assert pub.stats.refused_by_cloud == 0


async def test_a_missing_reply_drops_the_link_like_a_missing_puback(mosquitto: Mosquitto) -> None:
    source = MemorySource()
    source.add("dev")
    answered: list[str] = []

    def decide(packet_id: str, _seq: int) -> ReplyVerdict | None:
        if not answered:  # the first packet never gets its reply
            answered.append(packet_id)
            return None
        return "accepted"

    cloud = Cloud(mosquitto.port, decide)
    try:
        pub = Publisher(options(mosquitto.port, keepalive=1), source, AGENT, FakeSession())
        async with running(pub):
            await until(lambda: not source.rows, within=20, what="acked after a resend")
    finally:
        cloud.stop()
    assert [seq for _id, seq in cloud.seen] == [1, 1]
    assert pub.stats.reconnects >= 1
    assert "no reply from the cloud" in (pub.stats.last_error or "")


async def test_refused_readings_and_device_state(mosquitto: Mosquitto) -> None:
    source = MemorySource()
    for _ in range(3):
        source.add("dev")
    session = FakeSession()
    session.refuse_value = 2  # batch 2 carries {"n": 2}: the dialect cannot carry it
    cloud = Cloud(mosquitto.port, lambda _id, _seq: "accepted")
    with Subscriber(mosquitto.port, "fake/#") as sub:
        try:
            pub = Publisher(options(mosquitto.port), source, AGENT, session)
            pub.device_state("m1", online=False)  # no link yet: dropped, never raises
            async with running(pub):
                await until(lambda: not source.rows, what="every batch acked")
                pub.device_state("m1", online=False)
                await sub.wait_for_async(lambda m: any(x.topic == "fake/state/m1" for x in m))
        finally:
            cloud.stop()
        msgs = sub.messages
    assert [json.loads(m.payload)["seq"] for m in msgs if m.topic == DATA] == [1, 3]
    assert [m.payload for m in msgs if m.topic == "fake/state/m1"] == [b"0"]
    assert pub.stats.refused_by_dialect == 1
    assert "odd" in (pub.stats.last_error or "")


async def test_without_a_session_the_wire_is_unchanged(mosquitto: Mosquitto) -> None:
    """The edge-json path: status birth, data on edge/{agent}/{device}, nothing else."""
    source = MemorySource()
    source.add("dev")
    with Subscriber(mosquitto.port, "#") as sub:
        pub = Publisher(options(mosquitto.port), source, AGENT)
        async with running(pub):
            await until(lambda: not source.rows)
            msgs = await sub.wait_for_async(lambda m: len(m) >= 2)
    assert [m.topic for m in msgs] == [f"edge/{AGENT}/status", f"edge/{AGENT}/dev"]
    assert pub.stats.dialect == "edge-json"
    assert pub.stats.packets_published == 0


class WideSession(FakeSession):
    """400 bytes per reading, accepted by PUBACK alone: a six-reading batch is too large."""

    def encode(self, batches: Sequence[Batch], now_ms: int, *, historical: bool) -> Encoded:
        packets = []
        for batch in batches:
            body = {"seq": batch.seq, "n": [r.values["n"] for r in batch.readings]}
            padding = "x" * (400 * len(batch.readings))
            packets.append(
                Packet(DATA, json.dumps({**body, "pad": padding}).encode(), (batch.seq,))
            )
        return Encoded(tuple(packets))

    def reply_key(self, packet: Packet) -> str | None:
        return None


async def test_a_packet_above_the_limit_is_never_sent_its_batch_is_cut(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    from agent.buffer import Buffer

    session = WideSession()
    async with Buffer(tmp_path / "buffer.db", agent_id=AGENT, commit_interval=0.02) as buf:
        buf.put("dev", [Reading(1764270000000 + i, {"n": i}) for i in range(6)])
        await buf.flush()
        with Subscriber(mosquitto.port, "fake/#") as sub:
            pub = Publisher(options(mosquitto.port, max_message_size=2048), buf, AGENT, session)
            async with running(pub):
                msgs = await sub.wait_for_async(
                    lambda m: sorted(n for x in m if x.topic == DATA
                                     for n in json.loads(x.payload)["n"]) == list(range(6))
                )  # fmt: skip
                await until(lambda: pub.stats.messages_published >= 2, what="pieces acked")
    data = [json.loads(m.payload) for m in msgs if m.topic == DATA]
    assert all(len(d["n"]) < 6 for d in data)  # the whole batch never went out
    assert min(d["seq"] for d in data) > 1  # the pieces have new seqs
    assert pub.stats.oversized_split == 1
    assert [m.topic for m in msgs].count(HELLO) == 2  # on_connect again before the pieces
