"""Shared helpers for the simulator tests: the tests' own decoding (struct), raw frames."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Sequence

TIMEOUT_S = 10.0  # generous: the machine may be loaded


def words_to(fmt: str, words: Sequence[int]) -> float | int:
    """Decode big-endian words (high word first) with struct format ``fmt`` (e.g. ">f")."""
    return struct.unpack(fmt, struct.pack(f">{len(words)}H", *words))[0]  # type: ignore[no-any-return]


def read_request(tid: int, unit: int, function: int, address: int, count: int) -> bytes:
    """A Modbus TCP read request, framed by hand."""
    return struct.pack(">HHHBBHH", tid, 0, 6, unit, function, address, count)


async def exchange(port: int, frame: bytes, wait_s: float = TIMEOUT_S) -> bytes:
    """Send one frame on a fresh connection and return what comes back (b"" = closed)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(frame)
        await writer.drain()
        async with asyncio.timeout(wait_s):
            return await reader.read(512)
    finally:
        writer.close()
