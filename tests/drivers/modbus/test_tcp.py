"""Contract tests of the Modbus driver against a real pymodbus TCP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import pytest
from pymodbus.constants import ExcCodes
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from drivers.base import DeviceUnavailable
from drivers.modbus import SPEC
from drivers.modbus.driver import ModbusDriver, TransportRegistry
from tests.drivers.modbus.servers import device, port_of, start_tcp, stop, words

LIMIT = 20  # seconds: an upper bound so a broken test fails instead of hanging


def options(port: int, tags: dict[str, Any], **protocol: Any) -> Any:
    return SPEC.parse(
        {
            "connection": {"modbus_tcp": {"host": "127.0.0.1", "port": port, "timeout": "1s"}},
            "protocol": protocol,
            "tags": tags,
        }
    )


def motor(unit: int = 1) -> SimDevice:
    return device(
        unit,
        holding={
            0x7000: struct.pack(">H", 4998)  # running frequency, 0.01 Hz
            + struct.pack(">h", -125)  # 0x7001 temperature, 0.1 °C
            + struct.pack(">f", 12.5)  # 0x7002-3 current, ABCD
            + struct.pack(">i", -70000)[2:]
            + struct.pack(">i", -70000)[:2]  # 0x7004-5 CDAB
            + struct.pack(">H", 0b1000_0000_0000_1001)  # 0x7006 status bits 0, 3, 15
            + b"MD500-4T"  # 0x7007-0x700a model string
            + struct.pack(">Q", 2**40 + 7)  # 0x700b-e hours
            + struct.pack("<d", -1.25),  # 0x700f-0x7012 DCBA double
        },
        inputs={0x10: struct.pack(">I", 123456789) + struct.pack(">H", 65535)},
        coils=[True, False, True, True] + [False] * 12,
        discretes=[False, True] + [False] * 14,
    )


MOTOR_TAGS = {
    "freq_hz": {"address": 0x7000, "scale": 0.01, "group": "fast"},
    "temp_c": {"address": 0x7001, "type": "int16", "scale": 0.1},
    "current_a": {"address": 0x7002, "type": "float32", "group": "fast"},
    "counter": {"address": 0x7004, "type": "int32", "byte_order": "CDAB"},
    "running": {"address": 0x7006, "type": "bool", "bit": 0, "group": "fast"},
    "fault": {"address": 0x7006, "type": "bool", "bit": 1},
    "remote": {"address": 0x7006, "type": "bool", "bit": 3},
    "alarm": {"address": 0x7006, "type": "bool", "bit": 15},
    "model": {"address": 0x7007, "type": "string", "length": 4},
    "hours": {"address": 0x700B, "type": "uint64"},
    "energy": {"address": 0x700F, "type": "float64", "byte_order": "DCBA"},
    "total": {"address": 0x10, "function": "input", "type": "uint32"},
    "input_max": {"address": 0x12, "function": "input"},
    "pump": {"address": 0, "function": "coil"},
    "valve": {"address": 1, "function": "coil"},
    "fan": {"address": 3, "function": "coil"},
    "door": {"address": 1, "function": "discrete"},
    "estop": {"address": 0, "function": "discrete"},
}

MOTOR_VALUES = {
    "freq_hz": pytest.approx(49.98),
    "temp_c": pytest.approx(-12.5),
    "current_a": 12.5,
    "counter": -70000,
    "running": True,
    "fault": False,
    "remote": True,
    "alarm": True,
    "model": "MD500-4T",
    "hours": 2**40 + 7,
    "energy": -1.25,
    "total": 123456789,
    "input_max": 65535,
    "pump": True,
    "valve": False,
    "fan": True,
    "door": True,
    "estop": False,
}


async def read_all(driver: ModbusDriver) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for group in sorted(driver.plans):
        reading = await driver.read(group)
        assert reading.errors == {}
        values.update(reading.values)
    return values


async def test_reads_every_function_and_type() -> None:
    server, port = await start_tcp([motor()])
    try:
        driver = ModbusDriver("motor-01", options(port, MOTOR_TAGS))
        async with asyncio.timeout(LIMIT), driver:
            assert await read_all(driver) == MOTOR_VALUES
            fast = await driver.read("fast")
            assert set(fast.values) == {"freq_hz", "current_a", "running"}
            assert (await driver.read("no-such-group")).values == {}
    finally:
        await stop(server)


async def test_exception_response_marks_only_that_requests_tags() -> None:
    server, port = await start_tcp([motor()])
    tags = {
        "freq_hz": {"address": 0x7000},
        "missing": {"address": 0x9000},  # not mapped on the device
        "total": {"address": 0x10, "function": "input", "type": "uint32"},
    }
    try:
        driver = ModbusDriver("motor-01", options(port, tags))
        async with asyncio.timeout(LIMIT), driver:
            reading = await driver.read("default")
            assert reading.values == {"freq_hz": 4998, "total": 123456789}
            assert reading.errors == {"missing": "exception 02 illegal data address"}
            # The connection stays up: the next poll reads again.
            assert (await driver.read("default")).values["freq_hz"] == 4998
    finally:
        await stop(server)


async def test_gateway_exception_for_one_unit_leaves_the_other_alone() -> None:
    async def unreachable(*_args: Any) -> ExcCodes:
        return ExcCodes.GATEWAY_NO_RESPONSE

    dead = SimDevice(
        2, simdata=[SimData(0x7000, values=[1], datatype=DataType.REGISTERS)], action=unreachable
    )
    server, port = await start_tcp([motor(1), dead])
    registry = TransportRegistry()
    tags = {"freq_hz": {"address": 0x7000}}
    try:
        one = ModbusDriver("unit-1", options(port, tags, unit_id=1), transports=registry)
        two = ModbusDriver("unit-2", options(port, tags, unit_id=2), transports=registry)
        async with asyncio.timeout(LIMIT), one, two:
            assert (await two.read("default")).errors == {
                "freq_hz": "exception 0B gateway target failed to respond"
            }
            assert (await one.read("default")).values == {"freq_hz": 4998}
    finally:
        await stop(server)


async def test_two_units_behind_one_server_share_one_connection() -> None:
    other = device(2, holding={0x7000: struct.pack(">H", 1234)})
    server, port = await start_tcp([motor(1), other])
    registry = TransportRegistry()
    tags = {"freq_hz": {"address": 0x7000}}
    try:
        one = ModbusDriver("unit-1", options(port, tags, unit_id=1), transports=registry)
        two = ModbusDriver("unit-2", options(port, tags, unit_id=2), transports=registry)
        async with asyncio.timeout(LIMIT), one, two:
            results = await asyncio.gather(*(d.read("default") for d in (one, two, one, two)))
            assert [r.values["freq_hz"] for r in results] == [4998, 1234, 4998, 1234]
            assert len(registry) == 1
            assert len(server.active_connections) == 1
        assert len(registry) == 0  # the last user closed it
    finally:
        await stop(server)


async def test_default_registry_is_shared_per_event_loop() -> None:
    server, port = await start_tcp([motor(1), device(2)])
    try:
        one = SPEC.create("unit-1", options(port, {"f": {"address": 0x7000}}, unit_id=1))
        two = SPEC.create("unit-2", options(port, {"f": {"address": 0}}, unit_id=2))
        async with asyncio.timeout(LIMIT), one, two:
            await one.read("default")
            await two.read("default")
            assert len(server.active_connections) == 1
    finally:
        await stop(server)


async def test_server_stopped_then_restarted() -> None:
    server, port = await start_tcp([motor()])
    driver = ModbusDriver("motor-01", options(port, {"freq_hz": {"address": 0x7000}}))
    async with asyncio.timeout(LIMIT), driver:
        assert (await driver.read("default")).values == {"freq_hz": 4998}
        await stop(server)
        with pytest.raises(DeviceUnavailable):
            await driver.read("default")
        with pytest.raises(DeviceUnavailable):
            await driver.read("default")  # still down: refused, not hanging
        server, _ = await start_tcp([motor()], port=port)
        try:
            # What the scheduler does after a failure: close, connect again, poll.
            await driver.close()
            await driver.connect()
            assert (await driver.read("default")).values == {"freq_hz": 4998}
        finally:
            await stop(server)


async def test_connect_to_nothing_is_device_unavailable() -> None:
    server, port = await start_tcp([motor()])
    await stop(server)
    driver = ModbusDriver("motor-01", options(port, {"freq_hz": {"address": 0x7000}}))
    async with asyncio.timeout(LIMIT):
        with pytest.raises(DeviceUnavailable, match="cannot connect"):
            await driver.connect()
        await driver.close()


async def test_late_reply_is_never_taken_for_the_next_request() -> None:
    slow_once = asyncio.Event()

    async def slow_first_read(function_code: int, start: int, address: int, *_rest: Any) -> None:
        if address == 0x7000 and not slow_once.is_set():
            slow_once.set()
            await asyncio.sleep(1.5)  # past the driver's 0.3 s timeout

    values = words(struct.pack(">HH", 1111, 2222))
    dev = SimDevice(
        1,
        simdata=[SimData(0x7000, values=values, datatype=DataType.REGISTERS)],
        action=slow_first_read,
    )
    server, port = await start_tcp([dev])
    opts = SPEC.parse(
        {
            "connection": {"modbus_tcp": {"host": "127.0.0.1", "port": port, "timeout": "300ms"}},
            "tags": {
                "a": {"address": 0x7000, "group": "a"},
                "b": {"address": 0x7001, "group": "b"},
            },
        }
    )
    driver = ModbusDriver("dev", opts)
    try:
        async with asyncio.timeout(LIMIT), driver:
            with pytest.raises(DeviceUnavailable, match="no reply"):
                await driver.read("a")
            for _ in range(5):  # spans the moment the late reply is sent
                assert (await driver.read("b")).values == {"b": 2222}
                await asyncio.sleep(0.3)
            assert (await driver.read("a")).values == {"a": 1111}
    finally:
        await stop(server)


async def test_reply_of_the_wrong_length_marks_its_tags_bad() -> None:
    def short_reply(sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if sending and getattr(pdu, "registers", None) and len(pdu.registers) == 2:
            pdu.registers = pdu.registers[:1]
        return pdu

    server = ModbusTcpServer([motor()], address=("127.0.0.1", 0), trace_pdu=short_reply)
    await server.serve_forever(background=True)
    port = port_of(server)
    tags = {
        "current_a": {"address": 0x7002, "type": "float32"},
        "other": {"address": 0x10, "function": "input"},
    }
    try:
        driver = ModbusDriver("motor-01", options(port, tags))
        async with asyncio.timeout(LIMIT), driver:
            reading = await driver.read("default")
            assert reading.errors == {"current_a": "reply has 1 registers, expected 2"}
            assert reading.values == {"other": 0x075B}  # first word of 123456789
    finally:
        await stop(server)


async def test_inspect_shows_raw_words_and_every_byte_order() -> None:
    server, port = await start_tcp([motor()])
    try:
        driver = ModbusDriver("motor-01", options(port, MOTOR_TAGS))
        async with asyncio.timeout(LIMIT), driver:
            current, freq, pump = await driver.inspect(["current_a", "freq_hz", "pump"])
    finally:
        await stop(server)
    assert current.raw == tuple(words(struct.pack(">f", 12.5)))
    assert current.value == 12.5
    assert current.all_orders["ABCD"] == 12.5
    assert struct.pack(">f", current.all_orders["CDAB"]) == (
        struct.pack(">f", 12.5)[2:] + struct.pack(">f", 12.5)[:2]
    )
    assert set(current.all_orders) == {"ABCD", "BADC", "CDAB", "DCBA"}
    assert freq.raw == (4998,)
    assert freq.value == pytest.approx(49.98)
    assert freq.all_orders == {}
    assert (pump.raw[0], pump.value, pump.error) == (True, True, None)


async def test_inspect_reports_exception_and_refuses_unknown_tags() -> None:
    server, port = await start_tcp([motor()])
    try:
        driver = ModbusDriver("motor-01", options(port, {"missing": {"address": 0x9000}}))
        async with asyncio.timeout(LIMIT), driver:
            (missing,) = await driver.inspect(["missing"])
            assert missing.error == "exception 02 illegal data address"
            assert missing.value is None
            with pytest.raises(Exception, match="no such tag"):
                await driver.inspect(["nope"])
    finally:
        await stop(server)


async def test_inter_request_delay_still_reads_everything() -> None:
    server, port = await start_tcp([motor()])
    try:
        driver = ModbusDriver(
            "motor-01", options(port, MOTOR_TAGS, inter_request_delay="20ms", max_gap=0)
        )
        async with asyncio.timeout(LIMIT), driver:
            assert await read_all(driver) == MOTOR_VALUES
    finally:
        await stop(server)


async def test_read_before_connect_is_device_unavailable() -> None:
    driver = ModbusDriver("motor-01", options(1502, {"f": {"address": 0}}))
    with pytest.raises(DeviceUnavailable, match="not connected"):
        await driver.read("default")
