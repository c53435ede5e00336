"""The MQTT publisher against a real mosquitto, and against a tiny stub broker that
withholds PUBACKs (to see what is acked when, and how a stalled link is handled)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import struct
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.north.link import MqttOptions, Publisher, TlsOptions
from drivers.base import Reading
from tests.support.mosquitto import (
    Mosquitto,
    MosquittoTls,
    Received,
    Subscriber,
    TestCerts,
    make_test_certs,
)

AGENT = "line-a-box-1"
_ids = itertools.count(1)


# --------------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class Batch:
    seq: int
    device: str
    created_ms: int
    n_values: int
    payload: bytes


class MemorySource:
    """In-memory stand-in for the buffer (window logic only; see the real-Buffer test)."""

    def __init__(self) -> None:
        self.rows: dict[int, Batch] = {}
        self.last_seq = 0
        self.acks: list[list[int]] = []
        self.max_message_bytes: int | None = None
        self._changed = asyncio.Event()

    def add(self, device: str, n_values: int = 2) -> Batch:
        seq = self.last_seq + 1
        message = {"v": 1, "agent": AGENT, "device": device, "seq": seq,
                   "readings": [{"ts": 1764270000000 + seq, "values": {"n": seq}}]}  # fmt: skip
        batch = Batch(seq, device, 0, n_values, json.dumps(message).encode())
        self.rows[seq] = batch
        self.last_seq = seq
        self._changed.set()
        self._changed = asyncio.Event()
        return batch

    async def wait_committed(self, after_seq: int, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        if self.last_seq > after_seq:
            return True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._changed.wait()
        return self.last_seq > after_seq

    async def fetch(self, after_seq: int, limit: int) -> list[Batch]:
        await asyncio.sleep(0)
        return [self.rows[s] for s in sorted(self.rows) if s > after_seq][:limit]

    async def first_pending_seq(self) -> int | None:
        return min(self.rows, default=None)

    def ack(self, seqs: Iterable[int]) -> None:
        seqs = list(seqs)
        self.acks.append(seqs)
        for s in seqs:
            self.rows.pop(s, None)

    def unsynced_acks(self) -> int:
        return 0  # acks delete at once here: the real buffer's bound is in test_publisher_bound

    async def flush(self) -> None:
        await asyncio.sleep(0)

    def resplit(
        self,
        seq: int,
        device: str,
        payload: bytes,
        limit: int,
        *,
        created_ms: int | None = None,
    ) -> int:
        raise AssertionError("these batches fit any broker")


def options(port: int, **kw: object) -> MqttOptions:
    base: dict[str, object] = {
        "host": "127.0.0.1",
        "port": port,
        "client_id": f"test-publisher-{next(_ids)}",
        "keepalive": 5,
        "reconnect_min": 0.1,
        "reconnect_max": 1.0,
        "connect_timeout": 5,
    }
    base.update(kw)
    return MqttOptions(**base)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def running(pub: Publisher) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(pub.run(), name="publisher-under-test")
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until(cond: Callable[[], bool], within: float = 20.0, what: str = "condition") -> None:
    """Poll ``cond`` (state changed by callbacks has no event to wait on), bounded in time."""
    for _ in range(int(within / 0.02)):
        if cond():
            return
        await asyncio.sleep(0.02)
    assert cond(), f"{what} not reached within {within} s"


def seqs_of(msgs: Sequence[Received]) -> list[int]:
    return [json.loads(m.payload)["seq"] for m in msgs if not m.topic.endswith("/status")]


def data(msgs: Sequence[Received]) -> list[Received]:
    return [m for m in msgs if not m.topic.endswith("/status")]


# --------------------------------------------------------------------------- stub broker


class StubBroker:
    """A minimal MQTT 3.1.1 broker on a real socket: CONNACK, PINGRESP, PUBACK on demand."""

    def __init__(self, *, connack: bool = True) -> None:
        self.connack = connack
        self.hold = True
        self.connections = 0
        self.publishes: list[tuple[int, str, bytes]] = []  # (connection, topic, payload)
        self._held: list[tuple[asyncio.StreamWriter, int]] = []
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> StubBroker:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for w in self._writers:
            w.close()
        await self._server.wait_closed()

    def release(self) -> None:
        """Send every withheld PUBACK and stop withholding."""
        self.hold = False
        for writer, mid in self._held:
            if not writer.is_closing():
                writer.write(b"\x40\x02" + struct.pack("!H", mid))
        self._held.clear()

    def data_publishes(self, connection: int | None = None) -> list[int]:
        return [
            json.loads(p)["seq"]
            for c, t, p in self.publishes
            if not t.endswith("/status") and connection in (None, c)
        ]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn = self.connections
        self._writers.append(writer)
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                first = (await reader.readexactly(1))[0]
                body = await reader.readexactly(await _remaining_length(reader))
                kind = first >> 4
                if kind == 1 and self.connack:  # CONNECT
                    writer.write(b"\x20\x02\x00\x00")
                elif kind == 3:  # PUBLISH
                    self._on_publish(conn, first, body, writer)
                elif kind == 12:  # PINGREQ
                    writer.write(b"\xd0\x00")
                elif kind == 14:  # DISCONNECT
                    break
                await writer.drain()
        writer.close()

    def _on_publish(self, conn: int, first: int, body: bytes, w: asyncio.StreamWriter) -> None:
        qos = (first >> 1) & 3
        (tlen,) = struct.unpack("!H", body[:2])
        topic = body[2 : 2 + tlen].decode()
        pos = 2 + tlen
        if qos:
            (mid,) = struct.unpack("!H", body[pos : pos + 2])
            pos += 2
            if self.hold and not topic.endswith("/status"):
                self._held.append((w, mid))
            else:
                w.write(b"\x40\x02" + struct.pack("!H", mid))
        self.publishes.append((conn, topic, body[pos:]))


async def _remaining_length(reader: asyncio.StreamReader) -> int:
    value, shift = 0, 0
    for _ in range(4):
        byte = (await reader.readexactly(1))[0]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value
        shift += 7
    raise ConnectionError("malformed remaining length")


# --------------------------------------------------------------------------- options


def test_options_repr_masks_the_password() -> None:
    o = options(1883, username="edge", password="hunter2-secret")
    assert "hunter2-secret" not in repr(o)
    assert "password='***'" in repr(o)
    assert "username='edge'" in repr(o)


def test_options_refuse_bad_values() -> None:
    with pytest.raises(ValueError, match="qos"):
        options(1883, qos=2)
    with pytest.raises(ValueError, match="max_inflight"):
        options(1883, max_inflight=0)


def test_a_topic_with_wildcards_is_refused() -> None:
    with pytest.raises(ValueError, match="wildcard"):
        Publisher(options(1883, topic="edge/+/{device}"), MemorySource(), AGENT)


# --------------------------------------------------------------------------- window (stub broker)


async def test_rows_are_acked_only_after_their_puback() -> None:
    source = MemorySource()
    for i in range(5):
        source.add(f"dev-{i % 2}")
    async with StubBroker() as broker:
        pub = Publisher(options(broker.port), source, AGENT)
        async with running(pub):
            await until(lambda: len(broker.data_publishes()) == 5)
            await asyncio.sleep(0.3)  # give a wrong implementation time to ack early
            assert source.acks == []
            assert sorted(source.rows) == [1, 2, 3, 4, 5]
            assert pub.stats.inflight == 5
            assert pub.stats.messages_published == 0
            broker.release()
            await until(lambda: not source.rows)
        assert sorted(itertools.chain.from_iterable(source.acks)) == [1, 2, 3, 4, 5]
        assert pub.stats.messages_published == 5
        assert pub.stats.values_published == 10
        assert pub.stats.last_publish_ms is not None


async def test_in_flight_window_is_bounded() -> None:
    source = MemorySource()
    for _ in range(10):
        source.add("dev")
    async with StubBroker() as broker:
        pub = Publisher(options(broker.port, max_inflight=3), source, AGENT)
        async with running(pub):
            await until(lambda: len(broker.data_publishes()) == 3)
            await asyncio.sleep(0.5)
            assert broker.data_publishes() == [1, 2, 3]
            broker.release()
            await until(lambda: not source.rows)
        assert broker.data_publishes() == list(range(1, 11))


async def test_withheld_pubacks_drop_the_link_and_the_window_is_resent() -> None:
    source = MemorySource()
    for _ in range(4):
        source.add("dev")
    async with StubBroker() as broker:
        # keepalive 1 s: no PUBACK for 2 s means a dead link, although pings are answered
        pub = Publisher(options(broker.port, keepalive=1), source, AGENT)
        async with running(pub):
            await until(lambda: broker.connections >= 2 and len(broker.data_publishes(2)) == 4)
            assert "no PUBACK" in (pub.stats.last_error or "")
            broker.release()
            await until(lambda: not source.rows)
    # the same seqs again, in order: duplicates only within the window
    assert broker.data_publishes(1) == [1, 2, 3, 4]
    assert broker.data_publishes(2) == [1, 2, 3, 4]
    assert pub.stats.reconnects >= 1


async def test_a_broker_that_never_answers_connect_times_out_and_is_retried() -> None:
    async with StubBroker(connack=False) as broker:
        pub = Publisher(options(broker.port, connect_timeout=0.5), MemorySource(), AGENT)
        async with running(pub):
            await until(lambda: broker.connections >= 2)
            assert not pub.stats.connected
            assert "no answer from broker" in (pub.stats.last_error or "")


async def test_nothing_listening_gives_a_clear_error() -> None:
    async with StubBroker() as broker:
        port = broker.port
    pub = Publisher(options(port), MemorySource(), AGENT)
    async with running(pub):
        await until(lambda: pub.stats.last_error is not None)
    assert "connection refused" in (pub.stats.last_error or "")
    assert not pub.stats.connected


async def test_stop_waits_for_pubacks_then_says_offline() -> None:
    source = MemorySource()
    for _ in range(3):
        source.add("dev")
    async with StubBroker() as broker:
        pub = Publisher(options(broker.port), source, AGENT)
        async with running(pub) as task:
            await until(lambda: len(broker.data_publishes()) == 3)
            stopping = asyncio.create_task(pub.stop(drain_timeout=20))
            await asyncio.sleep(0.5)
            assert not stopping.done()  # still waiting for the PUBACKs
            broker.release()
            await asyncio.wait_for(stopping, 20)
            assert task.done()
        assert not source.rows
        statuses = [json.loads(p)["state"] for _, t, p in broker.publishes if t.endswith("/status")]
        assert statuses == ["online", "offline"]


async def test_stop_gives_up_after_the_drain_timeout_and_keeps_the_rows() -> None:
    source = MemorySource()
    for _ in range(3):
        source.add("dev")
    async with StubBroker() as broker:
        pub = Publisher(options(broker.port), source, AGENT)
        async with running(pub) as task:
            await until(lambda: len(broker.data_publishes()) == 3)
            await asyncio.wait_for(pub.stop(drain_timeout=0.5), 20)
            assert task.done()
    assert sorted(source.rows) == [1, 2, 3]
    assert source.acks == []


async def test_a_missing_tls_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "ca.pem"
    pub = Publisher(options(1, tls=TlsOptions(ca=missing)), MemorySource(), AGENT)
    async with running(pub):
        await until(lambda: pub.stats.last_error is not None)
    assert (
        pub.stats.last_error
        == f"cannot read mqtt.tls.ca: {missing} does not exist or is not a file"
    )


# --------------------------------------------------------------------------- real mosquitto


async def test_batches_arrive_in_seq_order_with_topic_and_exact_payload(
    mosquitto: Mosquitto,
) -> None:
    source = MemorySource()
    sent = [source.add(f"motor-{i % 3}") for i in range(30)]
    with Subscriber(mosquitto.port, "edge/#") as sub:
        pub = Publisher(options(mosquitto.port, max_inflight=7), source, AGENT)
        async with running(pub):
            msgs = await sub.wait_for_async(lambda m: len(data(m)) >= 30)
            await until(lambda: not source.rows)
        got = data(msgs)
        assert [m.topic for m in got] == [f"edge/{AGENT}/{b.device}" for b in sent]
        assert [m.payload for m in got] == [b.payload for b in sent]
        assert pub.stats.messages_published == 30
        assert pub.stats.values_published == 60
        assert pub.stats.inflight == 0


async def test_status_online_retained_then_offline_after_stop(mosquitto: Mosquitto) -> None:
    source = MemorySource()
    status = f"edge/{AGENT}/status"
    opts = options(mosquitto.port)
    pub = Publisher(opts, source, AGENT)
    async with running(pub) as task:
        await until(lambda: pub.stats.connected)
        with Subscriber(mosquitto.port, status) as late:  # retained, so a late subscriber sees it
            msgs = await late.wait_for_async(lambda m: len(m) >= 1)
        assert msgs[0].retain
        assert json.loads(msgs[0].payload)["state"] == "online"
        assert json.loads(msgs[0].payload)["agent"] == AGENT
        for _ in range(5):  # stop drains what is pending first
            source.add("dev")
        await pub.stop(drain_timeout=10)
        assert task.done()
    assert not source.rows
    assert not pub.stats.connected
    with Subscriber(mosquitto.port, status) as after:
        msgs = await after.wait_for_async(lambda m: len(m) >= 1)
    assert msgs[0].retain
    assert json.loads(msgs[0].payload)["state"] == "offline"
    assert f"Client {opts.client_id} disconnected." in mosquitto.log_text()  # a clean DISCONNECT


async def test_an_abrupt_end_leaves_the_last_will(mosquitto: Mosquitto) -> None:
    status = f"edge/{AGENT}/status"
    with Subscriber(mosquitto.port, status) as sub:
        pub = Publisher(options(mosquitto.port), MemorySource(), AGENT)
        async with running(pub):
            await sub.wait_for_async(lambda m: any(b'"online"' in x.payload for x in m))
        # cancelled: socket dropped without DISCONNECT, so the broker sends the will
        msgs = await sub.wait_for_async(lambda m: b'"offline"' in m[-1].payload)
    will = json.loads(msgs[-1].payload)
    assert (will["state"], will["agent"]) == ("offline", AGENT)


async def test_broker_restart_loses_nothing_and_keeps_order(tmp_path: Path) -> None:
    """With the real buffer: its acks are deleted a commit later, and that counts too."""
    from agent.buffer import Buffer

    broker = Mosquitto(tmp_path / "broker", persistence=True)
    broker.start()
    window = 5
    devices = ("motor-1", "motor-2", "meter")
    try:
        # a persistent subscriber session: the broker queues for it across the restart
        with Subscriber(broker.port, "edge/+/+", session="checker") as sub:
            async with Buffer(tmp_path / "buffer.db", agent_id=AGENT, commit_interval=0.1) as buf:
                pub = Publisher(options(broker.port, max_inflight=window), buf, AGENT)
                async with running(pub):

                    async def produce(n: int) -> None:
                        for i in range(n):
                            buf.put(
                                devices[i % 3], [Reading(ts=1764270000000 + i, values={"n": i})]
                            )
                            await asyncio.sleep(0.01)

                    await produce(50)
                    await asyncio.to_thread(broker.stop)
                    await produce(100)  # broker down: the buffer absorbs it
                    assert not pub.stats.connected
                    assert (await buf.stats()).pending_batches >= 90
                    await asyncio.to_thread(broker.start)
                    await produce(50)
                    await buf.flush()
                    total = buf.last_seq
                    msgs = await sub.wait_for_async(
                        lambda m: set(seqs_of(m)) >= set(range(1, total + 1)), timeout=30
                    )
        duplicates = _check_order(data(msgs))
        assert pub.stats.reconnects >= 1
        assert duplicates <= window * pub.stats.reconnects, "re-sends beyond the window"
    finally:
        broker.stop()


def _check_order(msgs: list[Received]) -> int:
    """No gap, no reorder per device; the number of duplicates."""
    seen: set[int] = set()
    highest, duplicates = 0, 0
    per_device: dict[str, list[int]] = {}
    for m in msgs:
        seq = json.loads(m.payload)["seq"]
        if seq in seen:
            duplicates += 1
            continue
        assert seq == highest + 1, f"gap or reorder: {seq} after {highest}"
        seen.add(seq)
        highest = seq
        per_device.setdefault(m.topic, []).append(seq)
    for topic, seqs in per_device.items():
        assert seqs == sorted(seqs), topic
    return duplicates


async def test_password_right_and_wrong(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secret, wrong = "s3cret-Pw-77", "wr0ng-Pw-99"
    broker = Mosquitto(tmp_path / "broker", users={"edge": secret})
    broker.start()
    try:
        source = MemorySource()
        source.add("dev")
        good = Publisher(options(broker.port, username="edge", password=secret), source, AGENT)
        async with running(good):
            await until(lambda: not source.rows)
        assert good.stats.last_error is None

        bad = Publisher(options(broker.port, username="edge", password=wrong), source, AGENT)
        source.add("dev")
        async with running(bad):
            await until(lambda: broker.log_text().count("not authorised") >= 3, what="retries")
        assert bad.stats.last_error == (
            "broker refused the connection: not authorised (check mqtt.username/password)"
        )
        assert not bad.stats.connected
        assert list(source.rows) == [2]  # still buffered
    finally:
        broker.stop()
    for record in caplog.records:
        text = record.getMessage()
        assert secret not in text
        assert wrong not in text
    ours = [r for r in caplog.records if r.name == "agent.north.link"]
    assert len([r for r in ours if r.levelno == logging.WARNING]) == 1  # repeats at debug
    assert sum(r.levelno == logging.DEBUG for r in ours) >= 1


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> TestCerts:
    return make_test_certs(tmp_path_factory.mktemp("certs"))


async def test_tls_with_client_certificate(tmp_path: Path, certs: TestCerts) -> None:
    tls = MosquittoTls(certs.ca, certs.server_cert, certs.server_key, require_certificate=True)
    broker = Mosquitto(tmp_path / "broker", tls=tls)
    broker.start()
    try:
        source = MemorySource()
        source.add("dev")
        ok = TlsOptions(ca=certs.ca, cert=certs.client_cert, key=certs.client_key)
        pub = Publisher(options(broker.port, tls=ok), source, AGENT)
        async with running(pub):
            await until(lambda: not source.rows)

        other = make_test_certs(tmp_path / "other")  # a CA the broker's certificate is not from
        bad = TlsOptions(ca=other.ca, cert=certs.client_cert, key=certs.client_key)
        pub = Publisher(options(broker.port, tls=bad), source, AGENT)
        async with running(pub):
            await until(lambda: pub.stats.last_error is not None)
        assert "TLS handshake" in (pub.stats.last_error or "")
        assert "certificate" in (pub.stats.last_error or "")

        plain = Publisher(options(broker.port), source, AGENT)  # no TLS to a TLS port
        async with running(plain):
            await until(lambda: plain.stats.last_error is not None)
        assert "expect TLS" in (plain.stats.last_error or "")
    finally:
        broker.stop()


# --------------------------------------------------------------------------- with the real buffer


async def test_real_buffer_end_to_end(mosquitto: Mosquitto, tmp_path: Path) -> None:
    from agent.buffer import Buffer

    async with Buffer(tmp_path / "buffer.db", agent_id=AGENT, commit_interval=0.02) as buf:
        for i in range(12):
            buf.put(f"motor-{i % 2}", [Reading(ts=1764270000000 + i, values={"rpm": i})])
        await buf.flush()
        with Subscriber(mosquitto.port, "edge/+/+") as sub:
            pub = Publisher(options(mosquitto.port, max_inflight=4), buf, AGENT)
            async with running(pub):
                msgs = await sub.wait_for_async(lambda m: len(data(m)) >= 12)
                buf.put("motor-0", [Reading(ts=1764270000099, values={"rpm": 99})])
                msgs = await sub.wait_for_async(lambda m: len(data(m)) >= 13)
                await pub.stop(drain_timeout=10)
        await buf.flush()
        stats = await buf.stats()
    got = [json.loads(m.payload) for m in data(msgs)]
    assert [g["seq"] for g in got] == list(range(1, 14))
    assert [g["device"] for g in got[:12]] == [f"motor-{i % 2}" for i in range(12)]
    assert got[12]["readings"][0]["values"] == {"rpm": 99}
    assert stats.pending_batches == 0
    assert pub.stats.messages_published == 13


async def test_qos0_acks_once_written(mosquitto: Mosquitto) -> None:
    source = MemorySource()
    for _ in range(10):
        source.add("dev")
    with Subscriber(mosquitto.port, "edge/+/dev") as sub:
        pub = Publisher(options(mosquitto.port, qos=0), source, AGENT)
        async with running(pub):
            msgs = await sub.wait_for_async(lambda m: len(m) >= 10)
            await until(lambda: not source.rows)
    assert seqs_of(msgs) == list(range(1, 11))
    assert pub.stats.messages_published == 10
