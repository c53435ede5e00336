"""Scripted timelines drive real simulators; independent clients read what they serve.

The Modbus devices are read with pymodbus' client and the packaging line with
asyncua's, never through the agent. Most tests move a clock of their own, so
each read happens at a known instant of the script; one test follows the
wall clock from an absolute start, as two runs (or a run and a restart) do.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from fractions import Fraction
from pathlib import Path

import pytest
from asyncua import ua
from asyncua.client.client import Client
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusIOException

from simulators import SimDevice, run_simulators
from simulators.packaging_line import node_id, run_packaging_line
from simulators.timeline import (
    Step,
    Timeline,
    TimelineError,
    load_timelines,
    parse_duration,
    parse_rate,
    wrap,
)

from .conftest import TIMEOUT_S, exchange, read_request

START = 1_767_225_600.0  # 2026-01-01T00:00:00Z, any absolute instant will do


class Clock:
    """A clock the test moves: ``clock.at(65)`` is 65 s after :data:`START`."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def at(self, offset: float) -> None:
        self.now = START + offset


def steps(*raw: dict[str, object]) -> list[Step]:
    return [Step.parse(r, f"steps[{i}]") for i, r in enumerate(raw)]


# ------------------------------------------------------------------ the script itself


def test_counts_are_floor_of_rate_times_running_seconds() -> None:
    timeline = Timeline(
        steps(
            {"at": "0s", "run": True},
            {"at": "10s", "run": False},
            {"at": "20s", "run": True, "rate": "3/s"},
            {"at": "30s", "fault": 2},
            {"at": "40s", "fault": 0},
            {"at": "50s", "counter": 65530},
            {"at": "60s", "counter_reset": True},
        ),
        start=START,
        rate=parse_rate("2/s", "rate"),
    )
    expected = {
        -5.0: 0,
        0.0: 0,
        4.9: 9,  # floor(2 x 4.9)
        10.0: 20,
        15.0: 20,  # stopped: no pieces
        21.0: 23,  # 20 + 3 x 1
        29.9: 49,  # 20 + floor(3 x 9.9)
        35.0: 50,  # tripped at 30: 20 + 30
        41.5: 54,  # runs again from 40 at 3/s
        50.0: 65530,
        51.9: 65535,
        52.0: 65536,  # the register shows 0 (see wrap)
        60.0: 0,
        60.4: 1,
    }
    for offset, pieces in expected.items():
        assert timeline.state_at(START + offset).pieces == pieces, offset
    assert wrap(timeline.state_at(START + 52.0).pieces, "uint16") == 0
    assert wrap(timeline.state_at(START + 53.0).pieces, "uint16") == 3
    assert timeline.state_at(START + 35).fault == 2
    assert not timeline.state_at(START + 35).running


def test_the_state_at_an_instant_does_not_depend_on_how_it_was_reached() -> None:
    script = steps({"at": 0, "run": True}, {"at": 7, "run": False}, {"at": 9, "run": True})
    stepped = Timeline(script, start=START, rate=Fraction(7, 10))
    for tick in range(2000):  # 0.01 s ticks up to 20 s
        stepped.advance(START + tick / 100)
    fresh = Timeline(script, start=START, rate=Fraction(7, 10))
    when = START + 19.99
    assert stepped.state_at(when) == fresh.state_at(when)
    assert fresh.state_at(when).pieces == math.floor(Fraction(7, 10) * Fraction("17.99"))
    assert [a.index for a in stepped.log] == [0, 1, 2]
    assert [a.planned for a in stepped.log] == [START, START + 7, START + 9]


def test_wrap_follows_the_register_type() -> None:
    assert wrap(65536, "uint16") == 0
    assert wrap(65535, "uint16") == 65535
    assert wrap(2**31, "int32") == -(2**31)
    assert wrap(2**32 + 5, "uint32") == 5
    assert wrap(40000, "int16") == 40000 - 65536


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"run": True}, "needs 'at'"),
        ({"at": "5x"}, "not a duration"),
        ({"at": 1, "run": "yes"}, "run: expected true or false"),
        ({"at": 1, "fault": -1}, "fault: expected a whole number"),
        ({"at": 1, "rate": "fast"}, "not a rate"),
        ({"at": 1, "colour": "red"}, "unknown key"),
        ({"at": 1, "counter": 5, "counter_reset": True}, "counter and counter_reset"),
    ],
)
def test_bad_steps_are_refused_with_their_place(raw: dict[str, object], message: str) -> None:
    with pytest.raises(TimelineError, match=message) as caught:
        Step.parse(raw, "devices.m.steps[3]")
    assert "devices.m.steps[3]" in str(caught.value)


def test_timeline_file_json_and_start_override(tmp_path: Path) -> None:
    path = tmp_path / "shift.json"
    path.write_text(
        json.dumps(
            {
                "start": START,
                "devices": {
                    "m": {"rate": "120/min", "steps": [{"at": "1m", "run": True}]},
                    "n": {"start": START + 5, "steps": []},
                },
            }
        )
    )
    timelines = load_timelines(path)
    assert timelines["m"].start == START
    assert timelines["n"].start == START + 5
    assert timelines["m"].rate == 2
    assert timelines["m"].state_at(START + 61).pieces == 2
    assert parse_duration("500ms", "at") == Fraction(1, 2)
    moved = load_timelines(path, start=START + 100)
    assert {t.start for t in moved.values()} == {START + 100}
    path.write_text("devices: {m: {steps: [{at: 1s, run: maybe}]}}")
    with pytest.raises(TimelineError, match=r"shift.json: devices.m.steps\[0\].run"):
        load_timelines(path)


# ------------------------------------------------------------------ Modbus TCP


@contextlib.asynccontextmanager
async def client_for(port: int, wait_s: float = TIMEOUT_S) -> AsyncIterator[AsyncModbusTcpClient]:
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=wait_s, retries=0)
    await client.connect()
    try:
        yield client
    finally:
        client.close()


async def read(client: AsyncModbusTcpClient, address: int, count: int = 1) -> list[int]:
    rr = await client.read_holding_registers(address, count=count, device_id=1)
    assert not rr.isError(), rr
    return list(rr.registers)


async def test_counter_device_counts_wraps_resets_and_goes_silent() -> None:
    clock = Clock()
    timeline = Timeline(
        steps(
            {"at": "0s", "run": True},
            {"at": "10s", "run": False},
            {"at": "20s", "run": True},
            {"at": "30s", "counter": 65530},
            {"at": "40s", "counter_reset": True},
            {"at": "50s", "offline": True},
            {"at": "60s", "offline": False},
        ),
        start=START,
        rate=Fraction(2),
        clock=clock,
    )
    spec = SimDevice("c", "counter", timeline=timeline)
    async with run_simulators([spec], step_interval=None) as sims:
        async with client_for(sims.ports["c"]) as client:
            # t0 (address 0) is the piece counter; read at known instants of the script.
            for offset, count in [
                (5.25, 10),
                (15.0, 20),
                (25.1, 30),
                (32.6, 65535),
                (33.1, 0),  # 65536 wrapped
                (34.0, 2),
                (41.5, 3),
            ]:
                clock.at(offset)
                assert await read(client, 0) == [count], offset
            # The other tags keep identifying themselves.
            assert (await read(client, 1))[0] % 1000 == 1

        clock.at(55)
        sims.step(0.0)  # the offline step is applied by the next step (or read)
        async with client_for(sims.ports["c"], wait_s=0.5) as silent:
            with pytest.raises(ModbusIOException):
                await silent.read_holding_registers(0, count=1, device_id=1)
        with pytest.raises(TimeoutError):  # connection kept, nothing comes back
            await exchange(sims.ports["c"], read_request(7, 1, 3, 0, 1), wait_s=0.5)

        clock.at(61)
        sims.step(0.0)
        async with client_for(sims.ports["c"]) as client:
            # The machine went on making pieces while it did not answer: 2/s since 40 s.
            assert await read(client, 0) == [42]
        log = sims["c"].timeline.log  # type: ignore[union-attr]
        assert [a.index for a in log] == list(range(7))
        assert log[5].planned == START + 50
        assert log[5].applied == START + 55


# (profile, run-state register, expected words at 5 s running / 15 s tripped / 25 s running
#  again / 35 s stopped, fault register, expected fault words)
DRIVES = [
    ("inovance-md500", 0x3000, [1, 3, 1, 3], 0x8000, [0, 2, 0, 0]),
    ("invt-gd20", 0x2100, [1, 4, 1, 3], 0x2102, [0, 2, 0, 0]),
    ("delta-c2000", 0x2101, [0x0503, 0x0500, 0x0503, 0x0500], 0x2100, [0, 2, 0, 0]),
    ("schneider-atv320", 3201, [0x0227, 0x0008, 0x0227, 0x0223], 8606, [0, 0x2310, 0, 0]),
]
FREQ = {"inovance-md500": (0x7000, 100), "invt-gd20": (0x3000, 100)}
FREQ |= {"delta-c2000": (0x2103, 100), "schneider-atv320": (3202, 10)}


@pytest.mark.parametrize(("profile", "run_at", "runs", "fault_at", "faults"), DRIVES)
async def test_drive_shows_the_script_in_its_own_words(
    profile: str, run_at: int, runs: list[int], fault_at: int, faults: list[int]
) -> None:
    clock = Clock()
    timeline = Timeline(
        steps(
            {"at": 0, "run": True, "freq": 40},
            {"at": 10, "fault": 2},
            {"at": 20, "fault": 0},
            {"at": 30, "run": False},
        ),
        start=START,
        clock=clock,
    )
    spec = SimDevice("d", "vfd", profile=profile, timeline=timeline)
    freq_at, per_hz = FREQ[profile]
    async with run_simulators([spec], step_interval=None) as sims:
        async with client_for(sims.ports["d"]) as client:
            for index, offset in enumerate((5, 15, 25, 35)):
                clock.at(offset)
                assert await read(client, run_at) == [runs[index]], (profile, offset)
                assert await read(client, fault_at) == [faults[index]], (profile, offset)
                running = index in (0, 2)
                assert await read(client, freq_at) == [40 * per_hz if running else 0]
            if profile == "delta-c2000":  # its counter register (2109H) counts the pieces
                assert await read(client, 0x2109) == [20]


async def test_a_restart_with_the_same_start_follows_the_same_wall_clock_script() -> None:
    start = time.time() - 100.0  # as if the script began 100 s ago
    script = steps({"at": 0, "run": True}, {"at": 50, "counter": 1000})

    async def one_run() -> tuple[float, int, float]:
        timeline = Timeline(script, start=start, rate=Fraction(10))
        spec = SimDevice("c", "counter", timeline=timeline)
        async with run_simulators([spec]) as sims, client_for(sims.ports["c"]) as client:
            before = time.time()
            (value,) = await read(client, 0)
            after = time.time()
            assert [a.planned for a in timeline.log] == [start, start + 50]
            return before, value, after

    for _ in range(2):  # a first run, then a restart: both where the wall clock says
        before, value, after = await one_run()
        low = 1000 + math.floor(10 * (before - start - 50))
        high = 1000 + math.floor(10 * (after - start - 50))
        assert low <= value <= high


async def test_a_step_is_applied_at_its_wall_clock_instant() -> None:
    start = time.time() + 0.3
    timeline = Timeline(steps({"at": 0, "run": True}, {"at": "0.5s", "fault": 4}), start=start)
    spec = SimDevice("d", "vfd", timeline=timeline)
    async with run_simulators([spec], step_interval=0.05) as sims:
        async with client_for(sims.ports["d"]) as client:
            seen: list[tuple[float, int]] = []
            deadline = time.time() + 5.0
            while time.time() < deadline:
                (code,) = await read(client, 0x8000)
                seen.append((time.time(), code))
                if code == 4:
                    break
                await asyncio.sleep(0.02)
    assert seen[-1][1] == 4, "the fault never showed"
    assert all(code == 0 for when, code in seen if when < start + 0.5)
    assert seen[-1][0] >= start + 0.5
    assert [a.index for a in timeline.log] == [0, 1]


async def test_a_counter_tag_that_the_profile_lacks_is_refused() -> None:
    timeline = Timeline(steps({"at": 0, "run": True}), counter_tag="pieces")
    with pytest.raises(TimelineError, match="'pieces' is not a tag of inovance-md500"):
        async with run_simulators([SimDevice("d", "vfd", timeline=timeline)]):
            pass


async def test_an_extra_tag_can_carry_the_counter_of_any_drive() -> None:
    clock = Clock()
    timeline = Timeline(
        steps({"at": 0, "run": True}), start=START, clock=clock, counter_tag="pieces"
    )
    extra = {"pieces": {"address": 0x7100, "type": "uint32"}}
    spec = SimDevice("d", "vfd", extra_tags=extra, timeline=timeline)
    async with run_simulators([spec], step_interval=None) as sims:
        async with client_for(sims.ports["d"]) as client:
            clock.at(70_000)  # past 65535: a uint32 does not wrap there
            assert await read(client, 0x7100, 2) == [70_000 >> 16, 70_000 & 0xFFFF]


# ------------------------------------------------------------------ OPC UA (PackML)


async def read_line(client: Client, *names: str) -> list[object]:
    return [await client.get_node(node_id(name)).read_value() for name in names]


async def test_packaging_line_follows_the_script_over_opc_ua() -> None:
    clock = Clock()
    timeline = Timeline(
        steps(
            {"at": 0, "run": True},
            {"at": 10, "state": 5},  # Suspended: starved, no packs
            {"at": 20, "run": True},
            {"at": 30, "fault": 310},
            {"at": 40, "fault": 0, "run": False, "mode": 2},
            {"at": 50, "run": True, "mode": 1, "counter": 2**31 - 3},
            {"at": 60, "offline": True},
            {"at": 70, "offline": False},
            {"at": 80, "counter_reset": True},
        ),
        start=START,
        rate=Fraction(2),
        reject_rate=Fraction(1, 4),
        clock=clock,
    )
    names = ["StateCurrent", "ModeCurrent", "ProdProcessedCount", "ProdDefectiveCount"]
    names += ["AlarmActive", "AlarmCode"]
    async with run_packaging_line(tick=None, timeline=timeline) as handle:
        async with Client(handle.endpoint, timeout=10) as client:
            expected = {
                5.0: [6, 1, 10, 1, False, 0],
                15.0: [5, 1, 20, 2, False, 0],
                25.0: [6, 1, 30, 3, False, 0],
                35.0: [9, 1, 40, 5, True, 310],
                45.0: [2, 2, 40, 5, False, 0],
                51.0: [6, 1, 2**31 - 1, 5, False, 0],
                52.0: [6, 1, -(2**31) + 1, 5, False, 0],  # Int32 AccCount wrapped
            }
            for offset, values in expected.items():
                clock.at(offset)
                await handle.tick(0.0)
                assert await read_line(client, *names) == values, offset
            variant = await client.get_node(node_id("ProdProcessedCount")).read_data_value()
            assert variant.Value is not None
            assert variant.Value.VariantType == ua.VariantType.Int32

            clock.at(65)
            await handle.tick(0.0)
            with pytest.raises(TimeoutError):  # frozen link: the session stays, no answer
                async with asyncio.timeout(1.0):
                    await client.get_node(node_id("StateCurrent")).read_value()
            clock.at(85)
            await handle.tick(0.0)
        async with Client(handle.endpoint, timeout=10) as client:
            assert await read_line(client, "StateCurrent", "ProdProcessedCount") == [6, 10]
    assert [a.index for a in timeline.log] == list(range(9))


async def test_packaging_line_refuses_a_state_packml_does_not_have() -> None:
    timeline = Timeline(steps({"at": 0, "state": 42}))
    with pytest.raises(TimelineError, match="42 is not a PackML state"):
        async with run_packaging_line(tick=None, timeline=timeline):
            pass


async def test_modbus_devices_refuse_packml_steps() -> None:
    timeline = Timeline(steps({"at": 0, "state": 5}))
    with pytest.raises(TimelineError, match="only the packaging line"):
        async with run_simulators([SimDevice("c", "counter", timeline=timeline)]):
            pass


# ------------------------------------------------------------------ the command line


async def test_cli_follows_a_timeline_file_and_prints_each_applied_step(tmp_path: Path) -> None:
    start = time.time() - 30.0
    path = tmp_path / "shift.yaml"
    path.write_text(
        "devices:\n"
        "  motor-1:\n"
        "    steps:\n"
        "      - {at: 0s, run: true, freq: 45}\n"
        "      - {at: 20s, fault: 11}\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "simulators", "--vfd", "1", "--meter", "0", "--base-port", "0",
        "--timeline", str(path), "--start", str(start),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(TIMEOUT_S * 3):
            lines = [(await proc.stdout.readline()).decode() for _ in range(3)]
        match = re.match(r"motor-1: .* on modbus tcp 127\.0\.0\.1:(\d+)", lines[0])
        assert match, lines
        assert lines[1].startswith("timeline motor-1: step 0 +0s run=true freq=45.0 applied")
        assert lines[2].startswith("timeline motor-1: step 1 +20s fault=11 applied")
        async with client_for(int(match.group(1))) as client:
            assert await read(client, 0x8000) == [11]  # tripped 10 s ago by the script
            assert await read(client, 0x3000) == [3]
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(TIMEOUT_S):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_cli_refuses_a_timeline_for_a_device_it_does_not_run(tmp_path: Path) -> None:
    path = tmp_path / "shift.yaml"
    path.write_text("devices: {press-9: {steps: [{at: 0s, run: true}]}}\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "simulators", "--vfd", "1", "--meter", "0", "--base-port", "0",
        "--timeline", str(path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(TIMEOUT_S * 3):
        _, err = await proc.communicate()
    assert proc.returncode == 2
    assert "no simulated device ['press-9']" in err.decode()
