"""Real pymodbus clients read the simulators over TCP; values are decoded with struct here."""

from __future__ import annotations

import math
import struct

import pytest
from pymodbus.client import AsyncModbusTcpClient

from simulators import SimDevice, run_simulators
from simulators.counter import k_max

from .conftest import TIMEOUT_S, words_to


def _client(port: int) -> AsyncModbusTcpClient:
    return AsyncModbusTcpClient("127.0.0.1", port=port, timeout=TIMEOUT_S, retries=0)


async def test_vfd_registers_decode_to_the_values_set() -> None:
    async with run_simulators([SimDevice("m", "vfd")], step_interval=None) as sims:
        sims["m"].device.update(
            {"running_freq_hz": 47.25, "dc_bus_v": 538.7, "output_power_kw": -2.3,
             "run_state": 1, "fault_code": 0, "motor_speed_rpm": 1415}
        )  # fmt: skip
        client = _client(sims.ports["m"])
        await client.connect()
        try:
            block = await client.read_holding_registers(0x7000, count=8, device_id=1)
            state = await client.read_holding_registers(0x3000, count=1, device_id=1)
            speed = await client.read_holding_registers(0x1007, count=1, device_id=1)
        finally:
            client.close()
    assert not block.isError()
    assert block.registers[0] == 4725
    assert block.registers[2] == 5387
    assert words_to(">h", [block.registers[5]]) == -23
    assert state.registers == [1]
    assert speed.registers == [1415]


async def test_meter_floats_decode_with_our_own_struct() -> None:
    async with run_simulators([SimDevice("e", "meter", seed=4)], step_interval=None) as sims:
        sims.step(1.0)
        image = sims["e"].model.step(0.0)
        sims["e"].device.update(image)
        client = _client(sims.ports["e"])
        await client.connect()
        try:
            rr = await client.read_input_registers(0x0000, count=0x12, device_id=1)
            energy = await client.read_input_registers(0x0048, count=2, device_id=1)
        finally:
            client.close()
    regs = rr.registers
    for i, name in enumerate(["l1_voltage_v", "l2_voltage_v", "l3_voltage_v",
                              "l1_current_a", "l2_current_a", "l3_current_a"]):  # fmt: skip
        expected = struct.unpack(">f", struct.pack(">f", float(image[name])))[0]
        assert words_to(">f", regs[2 * i : 2 * i + 2]) == expected
    assert 200.0 < words_to(">f", regs[0:2]) < 260.0
    assert math.isclose(
        words_to(">f", energy.registers), float(image["import_energy_kwh"]), rel_tol=1e-6
    )


async def test_counter_device_over_the_wire_keeps_its_invariant() -> None:
    async with run_simulators([SimDevice("c", "counter")], step_interval=None) as sims:
        client = _client(sims.ports["c"])
        await client.connect()
        try:
            for tick in range(2, 6):
                sims.step(0.1)
                rr = await client.read_holding_registers(0, count=16, device_id=1)
                regs = rr.registers
                values = [*regs[:10], words_to(">I", regs[10:12]),
                          words_to(">I", [regs[13], regs[12]]),  # t11 is low word first
                          words_to(">f", regs[14:16])]  # fmt: skip
                for index, value in enumerate(values):
                    assert int(value) % 1000 == index
                    assert int(value) // 1000 == tick % (k_max("uint16", index) + 1)
        finally:
            client.close()


async def test_unmapped_address_and_unknown_unit_get_exceptions() -> None:
    async with run_simulators([SimDevice("m", "vfd")], step_interval=None) as sims:
        client = _client(sims.ports["m"])
        await client.connect()
        try:
            unmapped = await client.read_holding_registers(0x5000, count=1, device_id=1)
            wrong_table = await client.read_input_registers(0x7000, count=1, device_id=1)
            other_unit = await client.read_holding_registers(0x7000, count=1, device_id=9)
        finally:
            client.close()
    assert unmapped.isError()
    assert unmapped.exception_code == 2
    assert wrong_table.exception_code == 2
    assert other_unit.exception_code == 0x0B


async def test_two_vfds_and_a_meter_on_their_own_ports() -> None:
    specs = [SimDevice("motor-1", "vfd", seed=1), SimDevice("motor-2", "vfd", seed=2),
             SimDevice("meter-1", "meter")]  # fmt: skip
    async with run_simulators(specs, step_interval=0.05) as sims:
        ports = sims.ports
        assert len(set(ports.values())) == 3
        assert all(p > 0 for p in ports.values())
        for name in ("motor-1", "motor-2"):
            client = _client(ports[name])
            await client.connect()
            try:
                rr = await client.read_holding_registers(0x7002, count=1, device_id=1)
            finally:
                client.close()
            assert 480.0 < rr.registers[0] * 0.1 < 560.0  # DC bus is live even when stopped
        assert len(sims.describe()) == 3


async def test_units_sharing_a_port_answer_separately() -> None:
    specs = [SimDevice("a", "vfd", unit_id=1, gateway="gw"),
             SimDevice("b", "counter", unit_id=2, gateway="gw")]  # fmt: skip
    async with run_simulators(specs, step_interval=None) as sims:
        assert sims.ports["a"] == sims.ports["b"]
        client = _client(sims.ports["a"])
        await client.connect()
        try:
            vfd = await client.read_holding_registers(0x3000, count=1, device_id=1)
            counter = await client.read_holding_registers(3, count=1, device_id=2)
        finally:
            client.close()
    assert vfd.registers == [3]
    assert counter.registers == [1003]


def test_shared_port_needs_distinct_unit_ids() -> None:
    from simulators.run import _make_endpoints

    with pytest.raises(ValueError, match="unit id"):
        _make_endpoints([SimDevice("a", "vfd", port=15999), SimDevice("b", "meter", port=15999)])
