"""The serial driver against the simulated scale and torque tool over real ptys.

Also a raw TCP "serial device server" (socket:// URL) for a reply cut short.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from drivers.base import DeviceUnavailable, DriverError, Reading
from drivers.serial import SPEC
from drivers.serial.driver import NO_LINE_YET, UNPARSEABLE, SerialDriver
from simulators.serial_devices import (
    GARBAGE_LINE,
    Faults,
    MtSicsScale,
    ScaleSim,
    TorqueTool,
    TorqueToolSim,
)

ROOT = Path(__file__).resolve().parents[3]
SCALE_REGEX = r"S (?P<status>[SDI+-])(?: +(?P<weight>-?\d+(?:\.\d+)?) +(?P<unit>\S+))? *"
TORQUE_REGEX = (
    r"ID=(?P<id>\d+) T=(?P<torque>-?\d+(?:\.\d+)?)Nm A=(?P<angle>-?\d+(?:\.\d+)?)deg "
    r"(?P<result>OK|NOK)"
)
WAIT = 10.0  # generous bound for anything that should take milliseconds


def scale_driver(port: str, timeout: str = "1s") -> SerialDriver:
    options = SPEC.parse(
        {
            "connection": {"serial": {"port": port, "timeout": timeout}},
            "protocol": {"mode": "request", "request": "SI\r\n", "parser": {"regex": SCALE_REGEX}},
            "tags": {
                "weight": {"unit": "g"},
                "stable": {"field": "status", "type": "bool", "true_values": ["S"]},
                "display_unit": {"field": "unit", "type": "string", "group": "slow"},
            },
        }
    )
    driver = SPEC.create("scale-1", options)
    assert isinstance(driver, SerialDriver)
    return driver


def torque_driver(port: str, max_line: int = 512, timeout: str = "1s") -> SerialDriver:
    options = SPEC.parse(
        {
            "connection": {"serial": {"port": port, "timeout": timeout}},
            "protocol": {
                "mode": "listen",
                "max_line": max_line,
                "parser": {
                    "regex": TORQUE_REGEX,
                    "fail_when": {"group": "result", "equals": "NOK"},
                },
            },
            "tags": {
                "tightening_id": {"field": "id", "type": "int"},
                "torque_nm": {"field": "torque", "unit": "Nm"},
                "angle_deg": {"field": "angle"},
            },
        }
    )
    driver = SPEC.create("tool-1", options)
    assert isinstance(driver, SerialDriver)
    return driver


async def take(stream: AsyncIterator[Reading], count: int) -> list[Reading]:
    out: list[Reading] = []
    async with asyncio.timeout(WAIT):
        while len(out) < count:
            out.append(await anext(stream))
    return out


# --------------------------------------------------------------------------- request mode


async def test_request_mode_reads_the_scale() -> None:
    scale = MtSicsScale(seed=1, load_g=12.345, settle_polls=1)
    async with ScaleSim(scale=scale) as sim, scale_driver(sim.path) as driver:
        assert driver.streams is False
        first = await driver.read("default")
        assert first.values == {"weight": 12.345, "stable": True}
        assert first.errors == {}
        slow = await driver.read("slow")
        assert slow.values == {"display_unit": "g"}
        scale.set_load(500.0)
        moving = await driver.read("default")
        assert moving.values["stable"] is False
        settled = await driver.read("default")
        assert settled.values == {"weight": 500.0, "stable": True}
        assert sim.commands == ["SI"] * 4
        assert driver.stats.lines == 4
        assert driver.garbage_lines == 0


async def test_request_mode_garbage_is_counted_and_reported_then_recovers() -> None:
    scale = MtSicsScale(load_g=2.5)
    async with (
        ScaleSim(scale=scale, faults=Faults(garbage_rate=1.0)) as sim,
        scale_driver(sim.path) as driver,
    ):
        bad = await driver.read("default")
        assert bad.values == {}
        assert bad.errors == {"weight": UNPARSEABLE, "stable": UNPARSEABLE}
        assert driver.stats.garbage_lines == 1
        assert driver.stats.last_garbage == "not valid ascii: \\xfe\\x00~#noise#~\\xff"
        sim.faults.garbage_rate = 0.0
        good = await driver.read("default")
        assert good.values == {"weight": 2.5, "stable": True}
        assert driver.stats.garbage_lines == 1


async def test_request_mode_unknown_reply_is_unparseable() -> None:
    # Overload: the regex matches, but the reply carries no weight.
    scale = MtSicsScale(load_g=99999.0, capacity_g=100.0)
    async with ScaleSim(scale=scale) as sim, scale_driver(sim.path) as driver:
        reading = await driver.read("default")
        assert reading.values == {"stable": False}
        assert reading.errors == {"weight": "field 'weight' absent from line"}


async def test_silent_device_times_out() -> None:
    async with (
        ScaleSim(faults=Faults(silent=True)) as sim,
        scale_driver(sim.path, timeout="300ms") as driver,
    ):
        with pytest.raises(DeviceUnavailable) as info:
            await driver.read("default")
        assert str(info.value) == (f"timeout: no reply on serial port {sim.path} within 0.3 s")
        assert sim.commands == ["SI"]


async def test_slow_device_within_timeout_is_fine() -> None:
    scale = MtSicsScale(load_g=7.0)
    async with (
        ScaleSim(scale=scale, faults=Faults(delay=0.1)) as sim,
        scale_driver(sim.path) as driver,
    ):
        reading = await driver.read("default")
        assert reading.values == {"weight": 7.0, "stable": True}


async def test_late_reply_is_never_taken_for_the_next_poll() -> None:
    scale = MtSicsScale(load_g=1.0)
    async with (
        ScaleSim(scale=scale, faults=Faults(delay=0.6)) as sim,
        scale_driver(sim.path, timeout="200ms") as driver,
    ):
        with pytest.raises(DeviceUnavailable, match="timeout"):
            await driver.read("default")
        # Let the late "1.000 g" reply land in the port's input buffer: the simulator
        # sends it from a timer on this same loop, due before this sleep ends.
        await asyncio.sleep(0.8)
        assert sim.lines_sent == 1
        sim.faults.delay = 0.0
        scale.settle_polls = 0
        scale.set_load(2.0)
        reading = await driver.read("default")
        assert reading.values == {"weight": 2.0, "stable": True}


async def test_missing_port_is_unavailable(tmp_path: Path) -> None:
    port = str(tmp_path / "ttyUSB-none")
    driver = scale_driver(port)
    with pytest.raises(DeviceUnavailable) as info:
        await driver.connect()
    assert str(info.value).startswith(f"serial port {port} cannot be opened: ")
    with pytest.raises(DeviceUnavailable, match="not connected"):
        await driver.read("default")
    await driver.close()


async def test_request_mode_port_vanishes() -> None:
    async with ScaleSim(scale=MtSicsScale(load_g=3.0)) as sim, scale_driver(sim.path) as driver:
        assert (await driver.read("default")).values["weight"] == 3.0
        sim.unplug()
        with pytest.raises(DeviceUnavailable, match=f"serial port {sim.path}"):
            await driver.read("default")


async def test_reconnect_after_restart() -> None:
    async with ScaleSim(scale=MtSicsScale(load_g=4.0)) as sim:
        driver = scale_driver(sim.path)
        async with driver:
            assert (await driver.read("default")).values["weight"] == 4.0
            await sim.restart(down=0.05)
            with pytest.raises(DeviceUnavailable):
                await driver.read("default")
        async with driver:
            assert (await driver.read("default")).values["weight"] == 4.0


# --------------------------------------------------------------------------- socket:// URL


@contextlib.asynccontextmanager
async def line_server(reply: bytes) -> AsyncIterator[int]:
    """A serial device server in raw TCP mode that answers every request with ``reply``."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while await reader.readline():
                writer.write(reply)
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


async def test_socket_url_reads() -> None:
    async with (
        line_server(b"S S      1.250 g\r\n") as port,
        scale_driver(f"socket://127.0.0.1:{port}") as driver,
    ):
        reading = await driver.read("default")
        assert reading.values == {"weight": 1.25, "stable": True}


async def test_reply_cut_short_is_garbage() -> None:
    async with (
        line_server(b"S S      1.2") as port,
        scale_driver(f"socket://127.0.0.1:{port}", timeout="300ms") as driver,
    ):
        reading = await driver.read("default")
        assert reading.errors == {"weight": UNPARSEABLE, "stable": UNPARSEABLE}
        assert driver.stats.garbage_lines == 1
        assert driver.stats.last_garbage == "no terminator before timeout: S S      1.2"


# --------------------------------------------------------------------------- listen mode


async def test_listen_mode_streams_torque_results() -> None:
    tool = TorqueTool(seed=3, nok_rate=0.5)
    async with (
        TorqueToolSim(tool=tool, auto=False) as sim,
        torque_driver(sim.path, timeout="200ms") as driver,
    ):
        assert driver.streams is True
        before = await driver.read("default")
        assert before.errors == dict.fromkeys(
            ["tightening_id", "torque_nm", "angle_deg", "result_ok"], NO_LINE_YET
        )
        stream = driver.stream()
        results = [sim.tighten() for _ in range(8)]
        readings = await take(stream, 8)
        assert [r.values for r in readings] == [
            {
                "tightening_id": t.id,
                "torque_nm": t.torque_nm,
                "angle_deg": t.angle_deg,
                "result_ok": t.ok,
            }
            for t in results
        ]
        assert any(not t.ok for t in results)
        assert all(r.errors == {} for r in readings)
        assert driver.stats.failed_lines == sum(not t.ok for t in results)
        latest = await driver.read("default")
        assert latest == readings[-1]
        await stream.aclose()


async def test_garbage_lines_are_counted_and_later_lines_still_flow() -> None:
    async with (
        TorqueToolSim(seed=4, auto=False) as sim,
        torque_driver(sim.path, max_line=64) as driver,
    ):
        stream = driver.stream()
        sim.inject(GARBAGE_LINE)
        sim.inject(b"ID=1 T=x" + b"y" * 100 + b"\r\n")
        sim.inject(b"ID=000001 T=12.00Nm A=180.0deg MAYBE\r\n")
        good = sim.tighten()
        (reading,) = await take(stream, 1)
        assert reading.values["tightening_id"] == good.id
        assert driver.stats.garbage_lines == 3
        assert driver.garbage_lines == 3
        assert driver.stats.last_garbage == "no match: ID=000001 T=12.00Nm A=180.0deg MAYBE"
        sim.faults.garbage_rate = 1.0
        more = [sim.tighten() for _ in range(3)]
        readings = await take(stream, 3)
        assert [r.values["tightening_id"] for r in readings] == [t.id for t in more]
        assert driver.stats.garbage_lines == 6
        await stream.aclose()


async def test_listen_mode_port_vanishes_then_comes_back() -> None:
    async with TorqueToolSim(seed=5, auto=False) as sim:
        driver = torque_driver(sim.path)
        async with driver:
            stream = driver.stream()
            sim.tighten()
            await take(stream, 1)
            await sim.restart(down=0.05)
            with pytest.raises(DeviceUnavailable) as info:
                await take(stream, 1)
            assert str(info.value).startswith(f"serial port {sim.path} lost: ")
            with pytest.raises(DeviceUnavailable, match="lost"):
                await driver.read("default")
        async with driver:
            stream = driver.stream()
            result = sim.tighten()
            (reading,) = await take(stream, 1)
            assert reading.values["tightening_id"] == result.id
            await stream.aclose()


async def test_close_ends_the_stream() -> None:
    async with TorqueToolSim(seed=6, auto=False) as sim:
        driver = torque_driver(sim.path)
        await driver.connect()
        readings: list[Reading] = []
        first = asyncio.Event()

        async def consume() -> None:
            async for reading in driver.stream():
                readings.append(reading)
                first.set()

        task = asyncio.create_task(consume())
        sim.tighten()
        async with asyncio.timeout(WAIT):
            await first.wait()
        await driver.close()
        async with asyncio.timeout(WAIT):
            await task
        assert len(readings) == 1


async def test_automatic_tool_prints_on_its_own() -> None:
    async with (
        TorqueToolSim(seed=7, interval=(0.05, 0.1)) as sim,
        torque_driver(sim.path) as driver,
    ):
        readings = await take(driver.stream(), 3)
        ids = [r.values["tightening_id"] for r in readings]
        assert ids == sorted(ids)
        assert len(set(ids)) == 3


async def test_stream_needs_listen_mode() -> None:
    driver = scale_driver("loop://")
    with pytest.raises(DriverError, match="listen"):
        await anext(driver.stream())


def test_create_refuses_foreign_options() -> None:
    options: Any = object()
    with pytest.raises(TypeError):
        SPEC.create("x", options)


async def test_listen_read_right_after_connect_waits_for_a_first_line() -> None:
    async with (
        TorqueToolSim(seed=8, auto=False) as sim,
        torque_driver(sim.path, timeout="5s") as driver,
    ):
        pending = asyncio.create_task(driver.read("default"))
        await asyncio.sleep(0.05)
        result = sim.tighten()
        reading = await pending
        assert reading.values["tightening_id"] == result.id
        assert reading.errors == {}
