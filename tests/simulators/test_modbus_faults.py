"""Each fault mode, observed on the wire by real clients over TCP."""

from __future__ import annotations

import asyncio
import struct

import pytest
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusIOException

from simulators import Fault, FaultMode, SimDevice, run_simulators

from .conftest import TIMEOUT_S, exchange, read_request

REQUEST = read_request(tid=0x4242, unit=1, function=3, address=0, count=2)


async def _healthy(port: int) -> bytes:
    reply = await exchange(port, REQUEST)
    assert reply[:2] == b"\x42\x42"
    assert reply[7] == 3  # function code echoed, not an exception
    return reply


async def test_exception_fault_answers_the_code_then_recovers() -> None:
    async with run_simulators([SimDevice("c", "counter")], step_interval=None) as sims:
        port = sims.ports["c"]
        client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=TIMEOUT_S, retries=0)
        await client.connect()
        try:
            for code in (1, 2, 3, 4, 6, 0x0B):
                sims["c"].faults.set(Fault(FaultMode.EXCEPTION, exception_code=code))
                rr = await client.read_holding_registers(0, count=2, device_id=1)
                assert rr.isError()
                assert rr.exception_code == code
            sims["c"].faults.clear()
            rr = await client.read_holding_registers(0, count=2, device_id=1)
            assert rr.registers == [1000, 1001]
        finally:
            client.close()


async def test_silent_fault_times_the_client_out() -> None:
    async with run_simulators([SimDevice("c", "counter")], step_interval=None) as sims:
        sims["c"].faults.set("silent")
        client = AsyncModbusTcpClient("127.0.0.1", port=sims.ports["c"], timeout=0.5, retries=0)
        await client.connect()
        try:
            with pytest.raises(ModbusIOException):
                await client.read_holding_registers(0, count=2, device_id=1)
        finally:
            client.close()
        # The raw view: the connection stays open and nothing arrives.
        with pytest.raises(TimeoutError):
            await exchange(sims.ports["c"], REQUEST, wait_s=0.5)
        sims["c"].faults.clear()
        await _healthy(sims.ports["c"])


async def test_drop_fault_closes_open_and_new_connections() -> None:
    async with run_simulators([SimDevice("c", "counter")], step_interval=None) as sims:
        port = sims.ports["c"]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(REQUEST)
            async with asyncio.timeout(TIMEOUT_S):
                assert len(await reader.read(512)) == 13
                sims["c"].faults.set(FaultMode.DROP)
                assert await reader.read(512) == b""  # the open connection is closed
        finally:
            writer.close()
        assert await exchange(port, REQUEST) == b""  # a new one is closed at its request
        sims["c"].faults.clear()
        await _healthy(port)


async def test_garbage_fault_sends_bytes_that_are_not_a_reply() -> None:
    async with run_simulators([SimDevice("c", "counter")], step_interval=None) as sims:
        healthy = await _healthy(sims.ports["c"])
        sims["c"].faults.set("garbage")
        for _ in range(5):
            reply = await exchange(sims.ports["c"], REQUEST)
            assert reply
            assert reply != healthy
            assert reply[:4] != b"\x42\x42\x00\x00"  # not even an MBAP header for our request


async def test_slow_fault_delays_then_answers_the_same_request() -> None:
    async with run_simulators([SimDevice("c", "counter")], step_interval=None) as sims:
        sims["c"].faults.set("slow:1.5")
        reader, writer = await asyncio.open_connection("127.0.0.1", sims.ports["c"])
        try:
            writer.write(REQUEST)
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.3):
                    await reader.read(512)
            async with asyncio.timeout(TIMEOUT_S):
                reply = await reader.readexactly(13)
        finally:
            writer.close()
    tid, _proto, _length, unit, function, count = struct.unpack(">HHHBBB", reply[:9])
    assert (tid, unit, function, count) == (0x4242, 1, 3, 4)
    assert struct.unpack(">HH", reply[9:]) == (1000, 1001)


async def test_faults_are_per_device() -> None:
    specs = [SimDevice("bad", "counter"), SimDevice("good", "counter")]
    async with run_simulators(specs, step_interval=None) as sims:
        sims["bad"].faults.set("silent")
        await _healthy(sims.ports["good"])
        with pytest.raises(TimeoutError):
            await exchange(sims.ports["bad"], REQUEST, wait_s=0.5)


def test_fault_parse() -> None:
    assert Fault.parse("slow:2.5") == Fault(FaultMode.SLOW, delay_s=2.5)
    assert Fault.parse("exception:0x0B") == Fault(FaultMode.EXCEPTION, exception_code=11)
    assert Fault.parse("exception:06") == Fault(FaultMode.EXCEPTION, exception_code=6)
    assert Fault.parse("none") == Fault()
    with pytest.raises(ValueError, match="not a Modbus"):
        Fault.parse("exception:9")
    with pytest.raises(ValueError, match="bogus"):
        Fault.parse("bogus")
