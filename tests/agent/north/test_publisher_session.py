"""The publisher speaking a dialect through a Session: acks after the cloud's reply.

A tiny session written here (one packet per batch, each waiting for a reply
on ``fake/reply``) against a real mosquitto, and a real client playing the
cloud: it reads ``fake/data`` and answers accepted, refused or retry.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.buffer import Buffer
from agent.errors import PublishError
from agent.north.destination import ThingsboardOptions
from agent.north.dialects.common import Batch, Credentials, Encoded, Packet, Refused
from agent.north.dialects.tb_session import TbSession
from agent.north.link import Publisher
from agent.north.publisher import PublishLoop
from agent.north.session import Reaction, ReplyVerdict
from agent.north.sparkplug.encode import Outgoing
from drivers.base import Reading
from tests.agent.north.test_publisher import AGENT, MemorySource, options, running, until
from tests.support.mosquitto import Mosquitto, Received, Subscriber

DATA, REPLY, WILL, HELLO = "fake/data", "fake/reply", "fake/will", "fake/hello"


class FakeSession:
    """One packet per batch; a batch is confirmed by the cloud's reply naming its packet."""

    dialect = "fake"

    def __init__(self) -> None:
        self.packets = 0
        self.connects = 0
        self.refuse_value: object = None  # a value this dialect cannot carry
        self.limits: list[int] = []  # what the publisher told limit()

    def limit(self, max_message_size: int) -> None:
        self.limits.append(max_message_size)

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

    pad = 400

    def encode(self, batches: Sequence[Batch], now_ms: int, *, historical: bool) -> Encoded:
        packets = []
        for batch in batches:
            body = {"seq": batch.seq, "n": [r.values["n"] for r in batch.readings],
                    "historical": historical}  # fmt: skip
            padding = "x" * (self.pad * len(batch.readings))
            packets.append(
                Packet(DATA, json.dumps({**body, "pad": padding}).encode(), (batch.seq,))
            )
        return Encoded(tuple(packets))

    def reply_key(self, packet: Packet) -> str | None:
        return None


async def test_a_packet_above_the_limit_is_never_sent_its_batch_is_cut(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
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
                await until(lambda: pub.stats.messages_published == 1, what="the batch acked")
            await buf.flush()
            assert await buf.fetch(0, 10) == []
    data = [json.loads(m.payload) for m in msgs if m.topic == DATA]
    assert all(len(d["n"]) < 6 for d in data)  # the whole batch never went out
    assert {d["seq"] for d in data} == {1}  # cut in memory: the pieces keep the batch's seq
    assert [n for d in data for n in d["n"]] == list(range(6))  # in order, once each
    assert buf.last_seq == 1  # nothing queued again in the buffer
    assert pub.stats.oversized_split >= 1
    assert [m.topic for m in msgs].count(HELLO) == 2  # on_connect again before the pieces


class PackingSession(WideSession):
    """Every batch of a run in one packet, whatever its size (a dialect that does not cut)."""

    pad = 300

    def encode(self, batches: Sequence[Batch], now_ms: int, *, historical: bool) -> Encoded:
        body = {
            "seqs": [b.seq for b in batches],
            "pad": "x" * (self.pad * sum(len(b.readings) for b in batches)),
        }
        return Encoded((Packet(DATA, json.dumps(body).encode(), tuple(b.seq for b in batches)),))


class BigBirthSession(WideSession):
    """A birth above any limit, in ``on_connect`` and before the data of each run."""

    pad = 10
    BIRTH = "fake/birth"

    def on_connect(self, now_ms: int) -> Sequence[Outgoing]:
        self.connects += 1
        return [Outgoing(HELLO, b"%d" % self.connects, 1, False),
                Outgoing(self.BIRTH, b"b" * 5000, 1, False)]  # fmt: skip

    def encode(self, batches: Sequence[Batch], now_ms: int, *, historical: bool) -> Encoded:
        data = super().encode(batches, now_ms, historical=historical)
        birth = Packet(self.BIRTH, b"b" * 5000, data=False)
        return Encoded((birth, *data.packets))


def _data(msgs: Sequence[Received]) -> list[dict[str, Any]]:
    return [json.loads(m.payload) for m in msgs if m.topic == DATA]


async def test_a_run_too_large_together_is_sent_in_smaller_runs_nothing_cut(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """Fewer batches per encode first: no stored batch is cut, no reading refused."""
    async with Buffer(tmp_path / "buffer.db", agent_id=AGENT, commit_interval=0.02) as buf:
        for i in range(8):  # 8 x 300 bytes in one packet is above 2048; 4 fit
            buf.put("dev", [Reading(1764270000000 + i, {"n": i})])
        await buf.flush()
        session = PackingSession()
        with Subscriber(mosquitto.port, "fake/#") as sub:
            pub = Publisher(options(mosquitto.port, max_message_size=2048), buf, AGENT, session)
            async with running(pub):
                msgs = await sub.wait_for_async(
                    lambda m: sorted(s for d in _data(m) for s in d["seqs"]) == list(range(1, 9))
                )  # fmt: skip
                await until(lambda: pub.stats.messages_published == 8, what="8 batches acked")
    assert all(len(m.payload) <= 2048 for m in msgs)
    assert (pub.stats.oversized_split, pub.stats.refused_by_dialect) == (0, 0)
    assert buf.refused_readings == 0
    assert session.limits == [2048]  # told the broker's limit before connecting


async def test_a_batch_is_cut_in_halves_of_its_readings_keeping_its_age(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """One reading alone fits where two do not: the halves are one reading each, historical."""
    session = WideSession()
    session.pad = 600  # one reading ~650 bytes, two ~1250: above 1024
    async with Buffer(tmp_path / "buffer.db", agent_id=AGENT, commit_interval=0.02) as buf:
        buf.put("dev", [Reading(1764270000000, {"n": 0}), Reading(1764270000001, {"n": 1})])
        await buf.flush()
        with Subscriber(mosquitto.port, "fake/#") as sub:
            pub = Publisher(options(mosquitto.port, max_message_size=1024), buf, AGENT, session)
            async with running(pub):
                msgs = await sub.wait_for_async(lambda m: len(_data(m)) == 2)
                await until(lambda: pub.stats.messages_published == 1, what="the batch acked")
    data = _data(msgs)
    assert [d["n"] for d in data] == [[0], [1]]
    assert all(d["historical"] for d in data)  # committed before the connection, as the batch
    assert [d["seq"] for d in data] == [1, 1]  # one batch, finished by its last piece
    assert pub.stats.oversized_split == 1
    assert (pub.stats.refused_by_dialect, buf.refused_readings) == (0, 0)


async def test_a_reading_too_large_alone_is_refused_by_this_destination(
    mosquitto: Mosquitto, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    session = WideSession()
    session.pad = 1500
    async with Buffer(tmp_path / "buffer.db", agent_id=AGENT, commit_interval=0.02) as buf:
        buf.put("dev", [Reading(1764270000000, {"n": 0})])
        buf.put("dev", [Reading(1764270000001, {"n": 1}), Reading(1764270000002, {"n": 2})])
        await buf.flush()
        pub = Publisher(options(mosquitto.port, max_message_size=1024), buf, AGENT, session)
        async with running(pub):
            await until(lambda: pub.stats.refused_by_dialect == 3, what="three refused")
            await until(lambda: pub.stats.inflight == 0 and not buf.unsynced_acks(), what="acks")
            await buf.flush()
            assert await buf.fetch(0, 10) == []  # acknowledged: refused, not retried
    assert buf.refused_readings == 0  # counted where it happened: this destination
    assert "above the 1,024-byte limit: refused" in (pub.stats.last_error or "")
    warned = [r for r in caplog.records if "refused" in r.message and r.levelname == "WARNING"]
    assert len(warned) == 1


async def test_a_birth_above_the_limit_is_left_out_the_readings_go(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    session = BigBirthSession()
    async with Buffer(tmp_path / "buffer.db", agent_id=AGENT, commit_interval=0.02) as buf:
        for i in range(3):
            buf.put("dev", [Reading(1764270000000 + i, {"n": i}), Reading(1764270000100, {"n": 9})])
        await buf.flush()
        with Subscriber(mosquitto.port, "fake/#") as sub:
            pub = Publisher(options(mosquitto.port, max_message_size=2048), buf, AGENT, session)
            async with running(pub):
                await until(lambda: pub.stats.messages_published == 3, what="3 batches acked")
                msgs = await sub.wait_for_async(lambda m: len(_data(m)) == 3)
    assert [d["seq"] for d in _data(msgs)] == [1, 2, 3]  # whole, in order, nothing cut
    assert BigBirthSession.BIRTH not in {m.topic for m in msgs}
    assert pub.stats.oversized_skipped >= 2  # the on_connect birth and the one in encode
    assert (pub.stats.oversized_split, pub.stats.refused_by_dialect) == (0, 0)
    assert "fake/birth of 5,0" in (pub.stats.last_error or "")


async def test_thingsboard_packets_follow_the_publishers_limit(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """A session built for 60 kB under a 16 kB limit: told the limit, it packs below it."""
    session = TbSession(ThingsboardOptions(), AGENT, {}, max_bytes=60000)
    async with Buffer(tmp_path / "b.db", agent_id=AGENT, destinations=("tb",)) as buf:
        for k in range(600):  # 600 batches of one small reading: ~45 kB in one run
            buf.put("m1", [Reading(1764270000000 + k, {f"t{j}": 20.5 + k for j in range(5)})])
        await buf.flush()
        view = buf.view("tb")
        with Subscriber(mosquitto.port, "v1/gateway/#") as sub:
            opts = options(mosquitto.port, max_inflight=500, max_message_size=16384)
            pub = Publisher(opts, view, AGENT, session)
            async with running(pub):
                await until(lambda: pub.stats.messages_published == 600, what="600 acked")
            telemetry = [m for m in sub.messages if m.topic == "v1/gateway/telemetry"]
    seqs = [s["values"]["edge_seq"] for m in telemetry for s in json.loads(m.payload)["m1"]]
    assert sorted(set(seqs)) == list(range(1, 601))
    assert all(len(m.payload) <= 16384 for m in telemetry)
    assert (pub.stats.refused_by_dialect, pub.stats.oversized_split) == (0, 0)


async def test_thingsboard_errors_of_one_device_cost_no_readings(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """2,000 failing tags: their last_error is cut to fit; every reading of both devices goes."""
    session = TbSession(ThingsboardOptions(), AGENT, {}, max_bytes=60000)
    reason = "no answer from 10.0.0.17:502 within 2.0 s (timeout)"
    async with Buffer(tmp_path / "b.db", agent_id=AGENT, destinations=("tb",)) as buf:
        for k in range(5):
            buf.put("m1", [Reading(1764270000000 + 10 * k + j, {"t": 20.0 + j}) for j in range(3)])
        errors = {f"plc/area/tag_{i:05d}": reason for i in range(2000)}
        buf.put("big", [Reading(1764270001000, {}, errors)])
        await buf.flush()
        view = buf.view("tb")
        with Subscriber(mosquitto.port, "v1/gateway/#") as sub:
            pub = Publisher(options(mosquitto.port), view, AGENT, session)
            async with running(pub):
                await until(lambda: pub.stats.messages_published == 6, what="6 batches acked")
                msgs = await sub.wait_for_async(
                    lambda m: any("big" in json.loads(x.payload) for x in m
                                  if x.topic == "v1/gateway/attributes")
                )  # fmt: skip
    telemetry = [json.loads(m.payload) for m in msgs if m.topic == "v1/gateway/telemetry"]
    assert sum(len(t["m1"]) for t in telemetry) == 15
    (attributes,) = [json.loads(m.payload)["big"] for m in msgs if m.topic.endswith("attributes")]
    assert attributes["last_error"].endswith(" more")
    assert all(len(m.payload) <= 65536 for m in msgs)
    assert (pub.stats.refused_by_dialect, pub.stats.oversized_split, buf.refused_readings) == (
        0, 0, 0,
    )  # fmt: skip


class FlakySession(FakeSession):
    """Raises (a dialect bug) in the named call, the first ``times`` times it is made."""

    def __init__(self, call: str, times: int = 1) -> None:
        super().__init__()
        self.call, self.left = call, times

    def _maybe_fail(self, call: str) -> None:
        if call == self.call and self.left > 0:
            self.left -= 1
            raise KeyError(f"{call} bug")

    def limit(self, max_message_size: int) -> None:
        self._maybe_fail("limit")
        super().limit(max_message_size)

    def credentials(self, now_ms: int) -> Credentials | None:
        self._maybe_fail("credentials")
        return super().credentials(now_ms)

    def will(self, now_ms: int) -> Outgoing:
        self._maybe_fail("will")
        return super().will(now_ms)

    def subscriptions(self) -> Sequence[tuple[str, int]]:
        self._maybe_fail("subscriptions")
        return super().subscriptions()

    def on_connect(self, now_ms: int) -> Sequence[Outgoing]:
        self._maybe_fail("on_connect")
        return super().on_connect(now_ms)

    def ready(self) -> bool:
        self._maybe_fail("ready")
        return super().ready()

    def reply_key(self, packet: Packet) -> str | None:
        self._maybe_fail("reply_key")
        return super().reply_key(packet)

    def on_message(self, topic: str, payload: bytes, now_ms: int) -> Reaction:
        self._maybe_fail("on_message")
        return super().on_message(topic, payload, now_ms)

    def device_state(self, device: str, online: bool, now_ms: int) -> Sequence[Outgoing]:
        self._maybe_fail("device_state")
        return super().device_state(device, online, now_ms)

    def goodbye(self, now_ms: int) -> Sequence[Outgoing]:
        self._maybe_fail("goodbye")
        return super().goodbye(now_ms)


CALLS = ["limit", "credentials", "will", "subscriptions", "on_connect", "ready", "reply_key",
         "on_message", "device_state"]  # fmt: skip


@pytest.mark.parametrize("call", CALLS)
async def test_a_session_call_that_raises_drops_the_link_not_the_publisher(
    mosquitto: Mosquitto, call: str, caplog: pytest.LogCaptureFixture
) -> None:
    source = MemorySource()
    for _ in range(3):
        source.add("dev")
    session = FlakySession(call, times=2)
    cloud = Cloud(mosquitto.port, lambda _id, _seq: "accepted")
    try:
        pub = Publisher(options(mosquitto.port), source, AGENT, session)
        async with running(pub) as task:
            if call == "device_state":
                pub.device_state("dev", online=False)  # no link yet: counted, logged
                await until(lambda: pub.stats.connected, what="connected")
                pub.device_state("dev", online=False)  # on a link: the link is dropped
            await until(lambda: not source.rows, what="every batch acked")
            assert not task.done()
    finally:
        cloud.stop()
    assert session.left == 0  # it did fail twice
    assert pub.stats.dialect_errors == 2
    assert call in (pub.stats.last_error or "")
    logged = [r for r in caplog.records if r.exc_info and "dialect failed" in r.message]
    assert len(logged) == 1  # one traceback, the repeat at debug
    if call not in ("limit", "credentials", "will", "subscriptions", "device_state"):
        assert pub.stats.reconnects >= 1  # the link it failed on was dropped
    assert session.connects >= 1  # on_connect went out on a later link


async def test_a_failing_goodbye_ends_the_link_without_ending_the_stop(
    mosquitto: Mosquitto,
) -> None:
    source = MemorySource()
    session = FlakySession("goodbye")
    with Subscriber(mosquitto.port, "fake/#") as sub:
        pub = Publisher(options(mosquitto.port), source, AGENT, session)
        async with running(pub) as task:
            await until(lambda: pub.stats.connected, what="connected")
            await pub.stop(drain_timeout=1)
            await task  # returns: no exception out of run()
        msgs = await sub.wait_for_async(lambda m: any(x.topic == WILL for x in m))
    assert "fake/bye" not in [m.topic for m in msgs]  # the Will spoke instead
    assert pub.stats.dialect_errors == 1


class PoisonSession(FakeSession):
    """Cannot encode the batch whose reading has n == 2, ever."""

    def encode(self, batches: Sequence[Batch], now_ms: int, *, historical: bool) -> Encoded:
        if any(r.values.get("n") == 2 for b in batches for r in b.readings):
            raise ValueError("cannot encode n=2")
        return super().encode(batches, now_ms, historical=historical)


async def test_a_batch_the_dialect_can_never_encode_is_refused_the_rest_goes(
    mosquitto: Mosquitto,
) -> None:
    source = MemorySource()
    for _ in range(4):
        source.add("dev")
    cloud = Cloud(mosquitto.port, lambda _id, _seq: "accepted")
    try:
        pub = Publisher(options(mosquitto.port), source, AGENT, PoisonSession())
        async with running(pub) as task:
            await until(lambda: not source.rows, what="every batch acked or refused")
            assert not task.done()
    finally:
        cloud.stop()
    assert sorted({seq for _id, seq in cloud.seen}) == [1, 3, 4]
    assert pub.stats.refused_by_dialect == 1
    assert pub.stats.messages_published == 3
    assert "batch seq 2 of dev failed the fake encoder 3 times" in (pub.stats.last_error or "")


class LoginSession(FakeSession):
    """Ready for its births, then only once the cloud answered them (like an Alink login)."""

    def __init__(self) -> None:
        super().__init__()
        self.phase = "connecting"

    def credentials(self, now_ms: int) -> Credentials | None:
        self.phase = "connecting"
        return None

    def subscriptions(self) -> Sequence[tuple[str, int]]:
        return [(REPLY, 1), ("fake/hello_reply", 1)]

    def on_connect(self, now_ms: int) -> Sequence[Outgoing]:
        self.phase = "login"
        return super().on_connect(now_ms)

    def ready(self) -> bool:
        return self.phase in ("connecting", "in")

    def on_message(self, topic: str, payload: bytes, now_ms: int) -> Reaction:
        if topic == "fake/hello_reply":
            self.phase = "in"
            return Reaction(ready_changed=True)
        return super().on_message(topic, payload, now_ms)


async def test_a_session_left_unready_by_a_lost_reply_to_its_births_connects_again(
    mosquitto: Mosquitto,
) -> None:
    """Births whose answer never comes (a lost login reply) must not stall the destination."""
    source = MemorySource()
    source.add("dev")
    hellos: list[bytes] = []
    answer = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="fake-login")

    def on_hello(client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        hellos.append(bytes(msg.payload))
        if len(hellos) > 1:  # the first hello's reply is lost
            client.publish("fake/hello_reply", b"ok", qos=1)

    subscribed = threading.Event()
    answer.on_connect = lambda c, *_: c.subscribe(HELLO, qos=1)
    answer.on_subscribe = lambda *_: subscribed.set()
    answer.on_message = on_hello
    answer.connect("127.0.0.1", mosquitto.port)
    answer.loop_start()
    assert subscribed.wait(10)
    cloud = Cloud(mosquitto.port, lambda _id, _seq: "accepted")
    session = LoginSession()
    try:
        pub = Publisher(options(mosquitto.port, keepalive=1), source, AGENT, session)
        async with running(pub):
            await until(lambda: not source.rows, within=25, what="sent after a second login")
    finally:
        cloud.stop()
        answer.loop_stop()
        answer.disconnect()
    assert len(hellos) >= 2
    assert pub.stats.reconnects >= 1
    assert "not ready" in (pub.stats.last_error or ""), pub.stats.last_error


async def test_a_session_that_never_gets_ready_waits_longer_each_time(
    mosquitto: Mosquitto,
) -> None:
    """A refusal (a wrong sub-device secret) is not a lost reply: no reconnect storm."""
    source = MemorySource()
    source.add("dev")
    session = LoginSession()  # nobody ever answers its hello
    pub = Publisher(options(mosquitto.port, keepalive=1), source, AGENT, session)
    async with running(pub):
        await until(lambda: pub.stats.reconnects >= 2, within=30, what="two reconnects")
    assert "still not ready 4 s after" in (pub.stats.last_error or ""), pub.stats.last_error
    assert source.rows  # nothing sent while it is not ready


class _RefusedSubscribeLink:
    """A connection whose SUBSCRIBE the broker refuses (an ACL): only what the loop calls."""

    made: ClassVar[list[_RefusedSubscribeLink]] = []

    def __init__(self) -> None:
        self.closed = False
        self.ended: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        _RefusedSubscribeLink.made.append(self)

    async def open(self) -> None:
        return None

    async def subscribe(self, topics: Sequence[tuple[str, int]]) -> None:
        raise PublishError("broker refused the subscription to fake/reply")

    def close(self, reason: str = "closed") -> None:
        self.closed = True

    def abort(self, reason: str) -> None:
        self.closed = True


class _RefusingLoop(PublishLoop):
    def _make_link(
        self, will: Outgoing | None, credentials: Credentials | None = None,
        on_message: Callable[[str, bytes], None] | None = None,
    ) -> Any:  # fmt: skip
        return _RefusedSubscribeLink()


async def test_a_refused_subscribe_closes_its_connection() -> None:
    loop = _RefusingLoop(
        options(1, reconnect_min=0.05, reconnect_max=0.05), MemorySource(), AGENT, FakeSession()
    )
    task = asyncio.create_task(loop.run())
    for _ in range(200):  # bounded: 4 s
        if len(_RefusedSubscribeLink.made) >= 3:
            break
        await asyncio.sleep(0.02)
    await loop.stop(drain_timeout=0.1)
    await task
    assert len(_RefusedSubscribeLink.made) >= 3
    assert all(link.closed for link in _RefusedSubscribeLink.made), "connections left open"
    assert "refused the subscription" in (loop.stats.last_error or "")
