"""The same simulators in Modbus RTU: on a socat pty pair, and RTU framing over TCP."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusIOException
from pymodbus.framer import FramerType

from simulators import SimDevice, run_simulators
from simulators.faults import crc16_modbus
from tests.support.tools import require

from .conftest import TIMEOUT_S


@pytest.fixture
async def pty_pair(tmp_path: Path) -> AsyncIterator[tuple[str, str]]:
    """Two linked pseudo-terminals from socat: (device side, client side)."""
    dev, cli = tmp_path / "ttyDEV", tmp_path / "ttyCLI"
    proc = subprocess.Popen(  # noqa: ASYNC220 - started once, before any I/O under test
        [require("socat"), f"pty,raw,echo=0,link={dev}", f"pty,raw,echo=0,link={cli}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):  # up to ~10 s for socat to create both links
            if dev.exists() and cli.exists():
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail("socat did not create the pty pair")
        yield str(dev), str(cli)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_crc_matches_the_reference_example() -> None:
    # devices.md: reading U0-00 from unit 1 is 01 03 70 00 00 01 9E CA
    crc = crc16_modbus(bytes.fromhex("010370000001"))
    assert crc.to_bytes(2, "little") == bytes.fromhex("9ECA")


async def test_vfd_on_a_pty_answers_rtu_and_honours_faults(pty_pair: tuple[str, str]) -> None:
    dev, cli = pty_pair
    spec = SimDevice("motor-rtu", "vfd", serial_port=dev, baudrate=19200)
    async with run_simulators([spec], step_interval=None) as sims:
        sims["motor-rtu"].device.update({"running_freq_hz": 42.5, "run_state": 1})
        client = AsyncModbusSerialClient(
            cli, framer=FramerType.RTU, baudrate=19200, timeout=1.0, retries=0
        )
        await client.connect()
        try:
            async with asyncio.timeout(TIMEOUT_S):
                rr = await client.read_holding_registers(0x7000, count=1, device_id=1)
                assert rr.registers == [4250]
                sims["motor-rtu"].faults.set("exception:6")
                rr = await client.read_holding_registers(0x7000, count=1, device_id=1)
                assert rr.exception_code == 6
                sims["motor-rtu"].faults.set("silent")
                with pytest.raises(ModbusIOException):
                    await client.read_holding_registers(0x7000, count=1, device_id=1)
                sims["motor-rtu"].faults.clear()
                await asyncio.sleep(0.2)  # let the line settle after the timed-out request
                rr = await client.read_holding_registers(0x3000, count=1, device_id=1)
                assert rr.registers == [1]
        finally:
            client.close()


async def test_rtu_over_tcp_bus_with_two_units_and_a_silent_stranger() -> None:
    url = "socket://127.0.0.1:0"
    specs = [SimDevice("m", "vfd", unit_id=1, serial_port=url),
             SimDevice("c", "counter", unit_id=2, serial_port=url)]  # fmt: skip
    async with run_simulators(specs, step_interval=None) as sims:
        port = sims.ports["m"]
        assert port > 0
        assert sims.ports["c"] == port
        client = AsyncModbusTcpClient(
            "127.0.0.1", port=port, framer=FramerType.RTU, timeout=1.0, retries=0
        )
        await client.connect()
        try:
            async with asyncio.timeout(TIMEOUT_S):
                rr = await client.read_holding_registers(5, count=1, device_id=2)
                assert rr.registers == [1005]
                rr = await client.read_holding_registers(0x8000, count=1, device_id=1)
                assert rr.registers == [0]
                with pytest.raises(ModbusIOException):  # nobody is unit 7: the bus stays quiet
                    await client.read_holding_registers(0, count=1, device_id=7)
                sims["c"].faults.set("garbage")
                with pytest.raises(ModbusIOException):
                    await client.read_holding_registers(5, count=1, device_id=2)
        finally:
            client.close()
