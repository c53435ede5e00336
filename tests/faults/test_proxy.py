"""The fault proxy itself: each mode does what it says, against a plain echo server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from tests.faults.proxy import FaultProxy, Mode, Shape


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(4096):
            writer.write(data)
            await writer.drain()
    writer.close()


@contextlib.asynccontextmanager
async def _proxied() -> AsyncIterator[FaultProxy]:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    proxy = FaultProxy(server.sockets[0].getsockname()[1])
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()
        server.close()


async def _roundtrip(port: int, data: bytes, limit_s: float = 5.0) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(limit_s):
            return await reader.readexactly(len(data))
    finally:
        writer.close()


async def test_pass_split_and_latency_deliver_every_byte_in_order() -> None:
    data = bytes(range(256)) * 8
    async with _proxied() as proxy:
        assert await _roundtrip(proxy.port, data) == data
        await proxy.set(Mode.PASS, Shape(latency_ms=50, split=True))
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        assert await _roundtrip(proxy.port, data) == data
        assert loop.time() - t0 >= 0.1  # latency both ways: a lower bound only
        await proxy.set(Mode.PASS, Shape(bandwidth=20_000))
        assert await _roundtrip(proxy.port, data) == data


async def test_refuse_then_pass_on_the_same_port() -> None:
    async with _proxied() as proxy:
        port = proxy.port
        await proxy.set(Mode.REFUSE)
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", port)
        await proxy.set(Mode.PASS)
        assert proxy.port == port
        assert await _roundtrip(port, b"again") == b"again"


async def test_reset_gives_the_client_a_connection_reset() -> None:
    async with _proxied() as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"x")
        assert await reader.readexactly(1) == b"x"
        await proxy.set(Mode.RESET)
        with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
            async with asyncio.timeout(5):
                await reader.readexactly(1)
        writer.close()
        assert proxy.stats.resets == 1


async def test_blackhole_freezes_open_links_and_swallows_new_ones() -> None:
    async with _proxied() as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        await proxy.set(Mode.BLACKHOLE)
        writer.write(b"lost")
        await writer.drain()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5):
                await reader.readexactly(1)
        with pytest.raises(TimeoutError):  # accepted, never answered
            await _roundtrip(proxy.port, b"new", limit_s=0.5)
        assert proxy.stats.discarded_c2s >= len(b"lost")
        writer.close()


@pytest.mark.parametrize("mode", [Mode.DROP_C2S, Mode.DROP_S2C])
async def test_drop_one_direction(mode: Mode) -> None:
    async with _proxied() as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        await proxy.set(mode)
        writer.write(b"gone")
        await writer.drain()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5):
                await reader.readexactly(1)
        stats = proxy.stats
        if mode is Mode.DROP_C2S:
            assert stats.discarded_c2s == 4
        else:
            assert stats.discarded_s2c == 4
            assert stats.bytes_c2s == 4
        writer.close()
