"""``python -m simulators`` runs in the foreground, says where it listens, stops on SIGTERM."""

from __future__ import annotations

import asyncio
import re
import signal
import sys

from pymodbus.client import AsyncModbusTcpClient

from simulators.run import standard_specs

from .conftest import TIMEOUT_S


def test_standard_specs_names_and_ports() -> None:
    specs = standard_specs(vfd=2, meter=1, base_port=5020, rtu_port="/tmp/tty-x")
    assert [(s.name, s.kind, s.port) for s in specs[:3]] == [
        ("motor-1", "vfd", 5020), ("motor-2", "vfd", 5021), ("meter-1", "meter", 5022),
    ]  # fmt: skip
    assert specs[3].serial_port == "/tmp/tty-x"
    assert all(s.port == 0 for s in standard_specs(base_port=0))


async def test_cli_serves_until_sigterm() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "simulators", "--vfd", "1", "--meter", "1", "--base-port", "0",
        "--fault", "meter-1=exception:4",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(TIMEOUT_S * 3):
            lines = [(await proc.stdout.readline()).decode() for _ in range(2)]
        ports = {}
        for line in lines:
            match = re.match(r"(\S+): .* on modbus tcp 127\.0\.0\.1:(\d+)", line)
            assert match, line
            ports[match.group(1)] = int(match.group(2))
        client = AsyncModbusTcpClient("127.0.0.1", port=ports["motor-1"], timeout=TIMEOUT_S)
        await client.connect()
        try:
            rr = await client.read_holding_registers(0x3000, count=1, device_id=1)
            assert rr.registers[0] in (1, 3)
        finally:
            client.close()
        client = AsyncModbusTcpClient("127.0.0.1", port=ports["meter-1"], timeout=TIMEOUT_S)
        await client.connect()
        try:
            rr = await client.read_input_registers(0, count=2, device_id=1)
            assert rr.exception_code == 4
        finally:
            client.close()
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(TIMEOUT_S):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
