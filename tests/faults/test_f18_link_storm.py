"""F18: connections the broker accepts and then closes at once, or takes over.

A broker that closes every connection right after its CONNACK (an ACL kick, a
size limit...) must not be hammered: reconnects grow with the backoff, the log
holds one warning (not one per attempt), and the status names the pattern. A
second client connecting with the agent's client id makes the broker close
the agent's connection again and again: the status says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.north.link import MqttOptions, Publisher
from tests.faults.harness import Rig, wait_status
from tests.support.mosquitto import Mosquitto, Subscriber

STORM_S = 10.0
MAX_CONNECTS = 25  # reconnect_min 0.1 s doubling to 1 s: about 14 in 10 s; today thousands


class _EmptySource:
    last_seq = 0
    max_message_bytes: int | None = None

    async def wait_committed(self, after_seq: int, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        await asyncio.sleep(timeout or 0)
        return False

    async def fetch(self, after_seq: int, limit: int) -> list[object]:
        return []

    async def first_pending_seq(self) -> int | None:
        return None

    def ack(self, seqs: object) -> None:
        raise AssertionError("nothing was sent")

    def resplit(
        self,
        seq: int,
        device: str,
        payload: bytes,
        limit: int,
        *,
        created_ms: int | None = None,
    ) -> int:
        raise AssertionError("nothing was sent")

    def unsynced_acks(self) -> int:
        return 0

    async def flush(self) -> None:
        await asyncio.sleep(0)


@contextlib.asynccontextmanager
async def closing_broker() -> AsyncIterator[tuple[int, list[float]]]:
    """A broker that accepts CONNECT and closes the socket on the first PUBLISH (an ACL kick)."""
    connects: list[float] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connects.append(time.monotonic())
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                first = (await reader.readexactly(1))[0]
                await reader.readexactly(await _remaining_length(reader))
                if first >> 4 == 1:  # CONNECT
                    writer.write(b"\x20\x02\x00\x00")
                    await writer.drain()
                elif first >> 4 == 3:  # PUBLISH (the birth message): kicked
                    break
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], connects
    finally:
        server.close()
        await server.wait_closed()


async def _remaining_length(reader: asyncio.StreamReader) -> int:
    value, shift = 0, 0
    for _ in range(4):
        byte = (await reader.readexactly(1))[0]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value
        shift += 7
    raise ConnectionError("malformed remaining length")


async def test_f18_closed_after_connack_backs_off_and_logs_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, "agent.north.link")
    async with closing_broker() as (port, connects):
        opts = MqttOptions(host="127.0.0.1", port=port, client_id="f18-storm", keepalive=5,
                           reconnect_min=0.1, reconnect_max=1.0, connect_timeout=2)  # fmt: skip
        pub = Publisher(opts, _EmptySource(), "f18-box")  # type: ignore[arg-type]
        task = asyncio.create_task(pub.run())
        await asyncio.sleep(STORM_S)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    loud = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert len(connects) >= 3, connects  # it does retry
    assert len(connects) <= MAX_CONNECTS, f"{len(connects)} connects in {STORM_S} s"
    assert len(loud) <= 3, [r.getMessage() for r in loud]
    assert pub.stats.early_disconnects >= 3
    assert "after accepting it" in (pub.stats.last_error or ""), pub.stats.last_error


REFUSING_S = 15.0
# the backoff alone: about 6 attempts in 15 s, plus one port try per sleep above 2 s after a
# kick; a watch that woke whenever the port answered: 25 and more
MAX_REFUSED_CONNECTS = 12


@contextlib.asynccontextmanager
async def refusing_listener(kind: str) -> AsyncIterator[tuple[int, list[float]]]:
    """A port that answers TCP but never lets an MQTT session start.

    ``close``: the socket is closed as soon as it is accepted (a proxy with no
    broker behind it); ``refuse``: CONNACK code 5, not authorised; ``kick``:
    CONNACK accepted, then the socket closed (an ACL kick, a takeover).
    """
    connects: list[float] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connects.append(time.monotonic())
        if kind != "close":
            with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
                await reader.readexactly(1)
                await reader.readexactly(await _remaining_length(reader))
                writer.write(b"\x20\x02\x00\x05" if kind == "refuse" else b"\x20\x02\x00\x00")
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], connects
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("kind", ["close", "refuse", "kick"])
async def test_f18_port_that_answers_but_refuses_keeps_the_backoff(kind: str) -> None:
    """The shipped backoff (0.5 s to 30 s): the port answers, so no watch shortens a sleep."""
    async with refusing_listener(kind) as (port, connects):
        opts = MqttOptions(host="127.0.0.1", port=port, client_id="f18-refused", keepalive=5,
                           connect_timeout=2)  # fmt: skip
        pub = Publisher(opts, _EmptySource(), "f18-box")  # type: ignore[arg-type]
        task = asyncio.create_task(pub.run())
        await asyncio.sleep(REFUSING_S)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert len(connects) >= 3, connects  # it does retry
    assert len(connects) <= MAX_REFUSED_CONNECTS, f"{len(connects)} connects in {REFUSING_S} s"
    assert not pub.stats.connected


def test_f18_client_id_takeover_is_named(tmp_path: Path, broker: Mosquitto) -> None:
    with Rig(tmp_path, broker, devices=1, interval="200ms") as rig:
        assert rig.checker.wait_for_count(3)
        # a second box with the same client id, reconnecting by itself (paho's default)
        with Subscriber(broker.port, "f18/none", session="edge-agent-fault-box").start():
            doc = wait_status(
                rig.agent,
                lambda d: "another client" in (d["broker"]["last_error"] or ""),
                30,
            )
        assert doc["broker"]["early_disconnects"] >= 2
        assert "edge-agent-fault-box" in (doc["broker"]["last_error"] or "")
