"""End to end against the shipped simulators: a profile served over TCP, read by the driver."""

from __future__ import annotations

import asyncio
from typing import Any

from drivers.base import now_ms
from drivers.modbus import SPEC
from drivers.modbus.driver import ModbusDriver, TransportRegistry
from simulators import Fault, FaultMode, SimDevice, run_simulators

LIMIT = 20  # seconds: an upper bound so a broken test fails instead of hanging
SLOW_S = 0.5  # the slow unit's extra reply time; well under the driver's timeout

STATUS = {"status_word": {"address": 0x7010, "type": "uint16"}}
STATUS_TAGS: dict[str, Any] = {
    "status_word": {"address": 0x7010},
    "ready": {"address": 0x7010, "type": "bool", "bit": 0},
    "running": {"address": 0x7010, "type": "bool", "bit": 1},
    "fault": {"address": 0x7010, "type": "bool", "bit": 3},
}


def options(port: int, tags: dict[str, Any], *, unit: int = 1, timeout: str = "1s") -> Any:
    return SPEC.parse(
        {
            "connection": {"modbus_tcp": {"host": "127.0.0.1", "port": port, "timeout": timeout}},
            "protocol": {"unit_id": unit},
            "tags": tags,
        }
    )


async def test_a_whole_register_and_its_bits_come_from_one_read() -> None:
    spec = SimDevice("c", "counter", extra_tags=STATUS)
    async with run_simulators([spec], step_interval=None) as sims:
        sims["c"].device.update({"status_word": 0b0011})  # ready and running, no fault
        driver = ModbusDriver("c", options(sims.ports["c"], STATUS_TAGS))
        (planned,) = driver.plans["default"]
        assert (planned.request.address, planned.request.count) == (0x7010, 1)
        async with asyncio.timeout(LIMIT), driver:
            reading = await driver.read("default")
    assert reading.errors == {}
    assert reading.values == {"status_word": 3, "ready": True, "running": True, "fault": False}


async def test_ts_is_the_reply_time_not_the_start_of_a_wait_behind_a_slow_unit() -> None:
    # Two units behind one gateway: unit 2 waits for the slow unit 1's reply on
    # the shared connection, so its request can only be sent SLOW_S after both
    # polls started. Its ts must say when it was read, not when its poll began.
    specs = [
        SimDevice("slow", "counter", unit_id=1, gateway="gw"),
        SimDevice("quick", "counter", unit_id=2, gateway="gw"),
    ]
    async with run_simulators(specs, step_interval=None) as sims:
        sims["slow"].faults.set(Fault(FaultMode.SLOW, delay_s=SLOW_S))
        port = sims.ports["slow"]
        registry = TransportRegistry()
        tags = {"t3": {"address": 3}}
        slow = ModbusDriver("slow", options(port, tags, unit=1, timeout="5s"), transports=registry)
        quick = ModbusDriver("quick", options(port, tags, unit=2), transports=registry)
        async with asyncio.timeout(LIMIT), slow, quick:
            started = now_ms()
            slow_task = asyncio.create_task(slow.read("default"))
            await asyncio.sleep(0)  # the slow unit's request takes the line first
            reading = await quick.read("default")
            finished = now_ms()
            slow_reading = await slow_task
    assert slow_reading.values == {"t3": 1003}
    assert reading.values == {"t3": 1003}
    # Loose bounds, no timing target: after the slow reply freed the line, and
    # not after the read returned.
    assert started + SLOW_S * 1000 <= reading.ts <= finished
    assert started + SLOW_S * 1000 <= slow_reading.ts


async def test_a_not_available_raw_value_is_a_tag_error_never_a_number() -> None:
    async with run_simulators([SimDevice("c", "counter")], step_interval=None) as sims:
        sims["c"].device.update({"t3": 0xFFFF, "t4": 0xFFFE})
        opts = SPEC.parse(
            {
                "connection": {"modbus_tcp": {"host": "127.0.0.1", "port": sims.ports["c"]}},
                "protocol": {"invalid": {"uint16": [0xFFFF]}},
                "tags": {"t3": {"address": 3}, "t4": {"address": 4, "scale": 0.5}},
            }
        )
        driver = ModbusDriver("c", opts)
        async with asyncio.timeout(LIMIT), driver:
            reading = await driver.read("default")
    assert reading.errors == {"t3": "not available (0xFFFF)"}
    assert reading.values == {"t4": 32767.0}
