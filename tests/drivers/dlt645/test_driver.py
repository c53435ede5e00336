"""The DL/T 645 driver against the simulated meters, over a real pty and a real TCP socket.

The simulator has its own frame code; its values identify themselves
(phase n voltage 230.n V, current n.234 A, power -0.n234 kW, energy = the
last four address digits + 0.25 kWh), so exact decoding is checked.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from drivers.base import DeviceUnavailable, Inspectable, ReportsCounters
from drivers.dlt645 import SPEC
from drivers.dlt645.driver import Dlt645Driver
from simulators.dlt645_meter import Meter, MeterLine, PtyMeters, TcpMeters

WAIT = 10.0

TAGS: dict[str, Any] = {
    "energy_kwh": {"di": "00000000", "format": "XXXXXX.XX", "unit": "kWh"},
    "voltage_a": {"di": "02010100", "format": "XXX.X", "unit": "V"},
    "voltage_c": {"di": "02010300", "format": "XXX.X", "unit": "V"},
    "current_b": {"di": "02020200", "format": "XXX.XXX", "signed": True, "unit": "A"},
    "power_w": {"di": "02030000", "format": "XX.XXXX", "signed": True, "scale": 1000},
    "pf": {"di": "02060000", "format": "X.XXX", "signed": True},
    "frequency": {"di": "02800002", "format": "XX.XX", "unit": "Hz"},
}


def meter(port: str, address: str, tags: dict[str, Any] | None = None, **line: Any) -> Dlt645Driver:
    options = SPEC.parse(
        {
            "connection": {"dlt645": {"port": port, "timeout": "300ms", **line}},
            "protocol": {"address": address},
            "tags": tags or TAGS,
        }
    )
    driver = SPEC.create(f"meter-{address}", options)
    assert isinstance(driver, Dlt645Driver)
    return driver


EXPECTED = {
    "energy_kwh": 161.25,
    "voltage_a": 230.1,
    "voltage_c": 230.3,
    "current_b": 2.234,
    "power_w": -670.2,
    "pf": 0.987,
    "frequency": 50.01,
}


async def test_reads_every_value_exactly_over_a_pty() -> None:
    line = MeterLine([Meter("000000000161")])
    async with PtyMeters(line) as sim, meter(sim.path, "000000000161") as driver:
        async with asyncio.timeout(WAIT):
            reading = await driver.read("default")
    assert reading.errors == {}
    assert reading.values == pytest.approx(EXPECTED)
    assert isinstance(driver, ReportsCounters)
    assert driver.counters()["exchanges"] == len(TAGS)


async def test_unknown_identifier_is_that_tag_error_only() -> None:
    tags = {**TAGS, "mystery": {"di": "0280FF99", "format": "XXXX"}}
    async with PtyMeters(MeterLine([Meter("000000000161")])) as sim:
        async with meter(sim.path, "000000000161", tags) as driver, asyncio.timeout(WAIT):
            reading = await driver.read("default")
    assert reading.errors == {"mystery": "refused 02 no such data"}
    assert reading.values["voltage_a"] == 230.1
    assert driver.stats.refusals == 1


async def test_wildcard_address_reads_the_only_meter_and_learns_its_address() -> None:
    async with PtyMeters(MeterLine([Meter("202401020304")])) as sim:
        async with meter(sim.path, "AAAAAAAAAAAA") as driver, asyncio.timeout(WAIT):
            reading = await driver.read("default")
    assert reading.values["energy_kwh"] == 304.25
    assert driver.stats.address_seen == "202401020304"


async def test_two_meters_on_one_tcp_serial_server_share_one_connection() -> None:
    line = MeterLine([Meter("000000000161"), Meter("000000000162")])
    async with TcpMeters(line) as sim:
        first, second = meter(sim.url, "000000000161"), meter(sim.url, "000000000162")
        async with first, second, asyncio.timeout(WAIT):
            a, b = await asyncio.gather(first.read("default"), second.read("default"))
            assert first._line is second._line  # one port, one owner
    assert a.values["energy_kwh"] == 161.25
    assert b.values["energy_kwh"] == 162.25
    assert a.errors == b.errors == {}
    assert line.frames_seen == 2 * len(TAGS)


async def test_a_silent_meter_does_not_stop_the_other() -> None:
    silent = Meter("000000000162", silent=True)
    line = MeterLine([Meter("000000000161"), silent])
    async with PtyMeters(line) as sim:
        good, quiet = meter(sim.path, "000000000161"), meter(sim.path, "000000000162")
        async with good, quiet:
            started = time.monotonic()
            results = await asyncio.wait_for(
                asyncio.gather(good.read("default"), quiet.read("default"), return_exceptions=True),
                WAIT,
            )
            elapsed = time.monotonic() - started
    ok, failed = results
    assert not isinstance(ok, BaseException)
    assert ok.values == pytest.approx(EXPECTED)
    assert isinstance(failed, DeviceUnavailable)
    assert "did not answer" in str(failed)
    # The silent meter cost the line one timeout, not one per tag.
    assert silent.requests == 1
    assert quiet.stats.timeouts == 1
    assert elapsed < 5.0  # loose: 7 exchanges plus one 0.3 s timeout


async def test_line_settings_must_agree_on_one_port() -> None:
    async with PtyMeters(MeterLine([Meter("000000000161")])) as sim:
        first = meter(sim.path, "000000000161")
        other = meter(sim.path, "000000000162", baud=9600)
        async with first:
            with pytest.raises(Exception, match="other line settings"):
                await other.connect()


async def test_a_missing_port_is_device_unavailable() -> None:
    driver = meter("/nonexistent/ttyDLT", "000000000161")
    with pytest.raises(DeviceUnavailable, match="cannot be opened"):
        await driver.connect()
    await driver.close()


async def test_inspect_shows_the_frames() -> None:
    async with PtyMeters(MeterLine([Meter("000000000161")])) as sim:
        async with meter(sim.path, "000000000161") as driver, asyncio.timeout(WAIT):
            assert isinstance(driver, Inspectable)
            (raw,) = await driver.inspect(["voltage_a"])
    assert raw.request == "fe fe fe fe 68 61 01 00 00 00 00 68 11 04 33 34 34 35 17 16"
    assert raw.reply == "91 00 01 01 02 01 23"
    assert raw.value == 230.1
