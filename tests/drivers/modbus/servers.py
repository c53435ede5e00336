"""In-process pymodbus servers for the driver's contract tests.

Register contents are written by the tests with ``struct.pack``, never with the
driver's decoder, so a symmetric byte-order bug cannot hide.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from tests.support.tools import require


def words(data: bytes) -> list[int]:
    """Big-endian 16-bit registers holding ``data`` as it travels on the wire."""
    return list(struct.unpack(f">{len(data) // 2}H", data))


def device(
    unit: int,
    *,
    holding: dict[int, bytes] | None = None,
    inputs: dict[int, bytes] | None = None,
    coils: Sequence[bool] = (False,) * 16,
    discretes: Sequence[bool] = (False,) * 16,
) -> SimDevice:
    """A unit with separate coil/discrete/holding/input blocks; unlisted registers are unmapped."""
    holding = holding or {0: b"\x00\x00"}
    inputs = inputs or {0: b"\x00\x00"}
    return SimDevice(
        unit,
        simdata=(
            [SimData(0, values=list(coils), datatype=DataType.BITS)],
            [SimData(0, values=list(discretes), datatype=DataType.BITS)],
            [SimData(a, values=words(b), datatype=DataType.REGISTERS) for a, b in holding.items()],
            [SimData(a, values=words(b), datatype=DataType.REGISTERS) for a, b in inputs.items()],
        ),
    )


async def start_tcp(devices: list[SimDevice], port: int = 0) -> tuple[ModbusTcpServer, int]:
    """A Modbus TCP server on 127.0.0.1 (port 0: a free one); returns it and its port."""
    server = ModbusTcpServer(devices, address=("127.0.0.1", port))
    await server.serve_forever(background=True)
    return server, port_of(server)


def port_of(server: ModbusTcpServer) -> int:
    """The TCP port a listening server was given."""
    listener: Any = server.transport
    port: int = listener.sockets[0].getsockname()[1]
    return port


async def stop(server: ModbusTcpServer | ModbusSerialServer) -> None:
    """Stop a server and close its client connections."""
    await server.shutdown()  # type: ignore[no-untyped-call]


def drop_replies_of(unit: int) -> Callable[[bool, bytes], bytes]:
    """A server packet trace that swallows every RTU reply of ``unit``: a silent unit."""

    def trace(sending: bool, packet: bytes) -> bytes:
        if sending and packet[:1] == bytes([unit]):
            return b""
        return packet

    return trace


async def start_rtu(
    devices: list[SimDevice], port: str, *, silent_unit: int | None = None, baud: int = 19200
) -> ModbusSerialServer:
    """A Modbus RTU server on serial ``port``."""
    server = ModbusSerialServer(
        devices,
        framer=FramerType.RTU,
        port=port,
        baudrate=baud,
        trace_packet=drop_replies_of(silent_unit) if silent_unit is not None else None,
    )
    await server.serve_forever(background=True)
    return server


@contextlib.asynccontextmanager
async def pty_pair(folder: Path) -> AsyncIterator[tuple[str, str]]:
    """Two connected pseudo-terminals made by socat: a serial line without hardware."""
    socat = require("socat")
    a, b = folder / "ttyA", folder / "ttyB"
    proc = await asyncio.create_subprocess_exec(
        socat,
        f"pty,raw,echo=0,link={a}",
        f"pty,raw,echo=0,link={b}",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        for _ in range(100):  # up to 10 s for socat to create both links
            if a.exists() and b.exists():
                break
            await asyncio.sleep(0.1)
        else:
            raise RuntimeError("socat did not create the pty pair")
        yield str(a), str(b)
    finally:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await asyncio.wait_for(proc.wait(), 10)
