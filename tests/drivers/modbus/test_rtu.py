"""Modbus RTU over a real serial line without hardware: a socat pty pair."""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path
from typing import Any

import pytest

from drivers.base import ConfigError, DeviceUnavailable
from drivers.modbus import SPEC
from drivers.modbus.driver import ModbusDriver, TransportRegistry
from tests.drivers.modbus.servers import device, pty_pair, start_rtu, stop

LIMIT = 30  # seconds: an upper bound so a broken test fails instead of hanging
TAGS = {
    "freq_hz": {"address": 0x7000, "scale": 0.01},
    "power_kw": {"address": 0x7001, "type": "float32", "byte_order": "CDAB"},
    "pump": {"address": 2, "function": "coil"},
}


def rtu_options(port: str, unit: int, tags: dict[str, Any] = TAGS, **line: Any) -> Any:
    serial = {"port": port, "baud": 19200, "timeout": "300ms", **line}
    return SPEC.parse(
        {"connection": {"modbus_rtu": serial}, "protocol": {"unit_id": unit}, "tags": tags}
    )


def unit(unit_id: int, freq: int, power: float) -> Any:
    power_cdab = struct.pack(">f", power)[2:] + struct.pack(">f", power)[:2]
    return device(
        unit_id,
        holding={0x7000: struct.pack(">H", freq) + power_cdab},
        coils=[False, False, True] + [False] * 13,
    )


async def test_reads_over_a_serial_line(tmp_path: Path) -> None:
    async with asyncio.timeout(LIMIT), pty_pair(tmp_path) as (server_end, agent_end):
        server = await start_rtu([unit(1, 4998, 7.5)], server_end)
        try:
            async with ModbusDriver("vfd", rtu_options(agent_end, 1)) as driver:
                reading = await driver.read("default")
        finally:
            await stop(server)
    assert reading.errors == {}
    assert reading.values == {"freq_hz": pytest.approx(49.98), "power_kw": 7.5, "pump": True}


async def test_silent_unit_does_not_stop_the_others(tmp_path: Path) -> None:
    registry = TransportRegistry()
    async with asyncio.timeout(LIMIT), pty_pair(tmp_path) as (server_end, agent_end):
        # Unit 2 exists on paper only: its replies never reach the line.
        devices = [unit(1, 1000, 1.5), unit(2, 2000, 2.5), unit(3, 3000, 3.5)]
        server = await start_rtu(devices, server_end, silent_unit=2)
        drivers = [
            ModbusDriver(f"unit-{n}", rtu_options(agent_end, n), transports=registry)
            for n in (1, 2, 3)
        ]
        try:
            for driver in drivers:
                await driver.connect()
            assert len(registry) == 1
            for _ in range(3):
                one = await drivers[0].read("default")
                with pytest.raises(DeviceUnavailable, match="unit 2: no"):
                    await drivers[1].read("default")
                three = await drivers[2].read("default")
                assert one.values == {"freq_hz": pytest.approx(10.0), "power_kw": 1.5, "pump": True}
                assert three.values == {
                    "freq_hz": pytest.approx(30.0),
                    "power_kw": 3.5,
                    "pump": True,
                }
                assert one.errors == three.errors == {}
        finally:
            for driver in drivers:
                await driver.close()
            await stop(server)
    assert len(registry) == 0


async def test_units_on_one_port_must_agree_on_line_settings(tmp_path: Path) -> None:
    registry = TransportRegistry()
    async with asyncio.timeout(LIMIT), pty_pair(tmp_path) as (_server_end, agent_end):
        first = ModbusDriver("a", rtu_options(agent_end, 1), transports=registry)
        second = ModbusDriver("b", rtu_options(agent_end, 2, baud=9600), transports=registry)
        await first.connect()
        try:
            with pytest.raises(ConfigError, match="other line settings"):
                await second.connect()
        finally:
            await second.close()
            await first.close()


async def test_missing_serial_port_is_device_unavailable(tmp_path: Path) -> None:
    driver = ModbusDriver("vfd", rtu_options(str(tmp_path / "ttyNone"), 1))
    async with asyncio.timeout(LIMIT):
        with pytest.raises(DeviceUnavailable, match="cannot connect"):
            await driver.connect()
        await driver.close()
