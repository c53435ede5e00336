"""The serial simulators on their own: device logic tables, and the pty seen through a raw fd."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from simulators.serial_devices import (
    GARBAGE_LINE,
    Faults,
    MtSicsScale,
    ScaleSim,
    Tightening,
    TorqueTool,
    TorqueToolSim,
    serve,
)

# Written independently of the profile, from the documented line format.
TORQUE_LINE = re.compile(rb"ID=(\d{6}) T=(-?\d+\.\d\d)Nm A=(\d+\.\d)deg (OK|NOK)\r\n")


# --------------------------------------------------------------------------- torque tool


def test_tightening_line_format() -> None:
    assert Tightening(42, 12.07, 183.4, True).line() == b"ID=000042 T=12.07Nm A=183.4deg OK\r\n"
    assert Tightening(43, 9.5, 150.0, False).line() == b"ID=000043 T=9.50Nm A=150.0deg NOK\r\n"


def test_torque_tool_results() -> None:
    tool = TorqueTool(seed=11)
    results = [tool.tighten() for _ in range(2000)]
    assert [r.id for r in results] == list(range(1, 2001))
    noks = [r for r in results if not r.ok]
    assert 0.02 * 2000 < len(noks) < 0.09 * 2000
    for r in results:
        inside = tool.low_nm <= r.torque_nm <= tool.high_nm
        assert inside == r.ok, r
        match = TORQUE_LINE.fullmatch(r.line())
        assert match is not None
        assert float(match.group(2)) == r.torque_nm
        assert (match.group(4) == b"OK") == r.ok


def test_torque_tool_is_reproducible() -> None:
    one, two = TorqueTool(seed=5), TorqueTool(seed=5)
    assert [one.tighten() for _ in range(20)] == [two.tighten() for _ in range(20)]


# --------------------------------------------------------------------------- MT-SICS scale

SICS: list[tuple[str, str, list[str]]] = [
    ("SI stable, 10-character field", "SI", ["S S     12.345 g"]),
    ("S stable", "S", ["S S     12.345 g"]),
    ("blank line ignored", "  ", []),
    ("unknown command", "XYZ", ["ES"]),
    ("serial number", "I4", ['I4 A "B123456789"']),
    ("reset", "@", ['I4 A "B123456789"']),
    ("tare query", "TA", ["TA A      0.000 g"]),
    ("tare clear", "TAC", ["TAC A"]),
    ("zero", "Z", ["Z A"]),
]


@pytest.mark.parametrize(("command", "reply"), [s[1:] for s in SICS], ids=[s[0] for s in SICS])
def test_mt_sics_replies(command: str, reply: list[str]) -> None:
    assert MtSicsScale(load_g=12.345).handle(command) == reply


def test_mt_sics_dynamic_then_stable() -> None:
    scale = MtSicsScale(seed=2, settle_polls=2)
    scale.set_load(100.0)
    first = scale.handle("SI")[0]
    assert first.startswith("S D ")
    assert scale.handle("S") == ["S I"]  # still moving: the stable command is refused
    assert scale.handle("SI") == ["S S    100.000 g"]


def test_mt_sics_zero_tare_and_negative() -> None:
    scale = MtSicsScale(load_g=50.0)
    assert scale.handle("Z") == ["Z A"]
    assert scale.handle("SI") == ["S S      0.000 g"]
    scale.settle_polls = 0
    scale.set_load(80.0)
    assert scale.handle("T") == ["T S     30.000 g"]
    assert scale.handle("SI") == ["S S      0.000 g"]
    scale.set_load(70.0)
    assert scale.handle("SI") == ["S S    -10.000 g"]
    assert scale.handle("TAC") == ["TAC A"]
    assert scale.handle("SI") == ["S S     20.000 g"]


def test_mt_sics_change_rate_moves_the_load() -> None:
    scale = MtSicsScale(seed=4, load_g=1.0, change_rate=1.0, settle_polls=0)
    first, second = scale.handle("SI"), scale.handle("SI")
    assert first != second
    assert second == [f"S S {scale.net_g:>10.3f} g"]


def test_mt_sics_overload() -> None:
    assert MtSicsScale(load_g=7000.0, capacity_g=6200.0).handle("SI") == ["S +"]


# --------------------------------------------------------------------------- over the pty


def is_link(path: str) -> bool:
    return os.path.islink(path)


@contextlib.contextmanager
def opened(path: str) -> Iterator[int]:
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        yield fd
    finally:
        os.close(fd)


async def read_lines(fd: int, count: int, within: float = 5.0) -> list[bytes]:
    """Read ``count`` CR LF lines from ``fd`` (raises TimeoutError when they do not come)."""
    loop = asyncio.get_running_loop()
    buf = bytearray()
    got = asyncio.Event()

    def readable() -> None:
        with contextlib.suppress(BlockingIOError):
            buf.extend(os.read(fd, 4096))
        if buf.count(b"\r\n") >= count:
            got.set()

    loop.add_reader(fd, readable)
    try:
        async with asyncio.timeout(within):
            await got.wait()
    finally:
        loop.remove_reader(fd)
    return [line + b"\r\n" for line in bytes(buf).split(b"\r\n")[:count]]


async def test_scale_answers_over_the_pty() -> None:
    async with ScaleSim(scale=MtSicsScale(load_g=1.5)) as sim:
        assert is_link(sim.path)
        with opened(sim.path) as fd:
            os.write(fd, b"SI\r\nI4\r\n")
            assert await read_lines(fd, 2) == [b"S S      1.500 g\r\n", b'I4 A "B123456789"\r\n']
        assert sim.commands == ["SI", "I4"]
    assert not is_link(sim.path)


async def test_scale_faults_silent_slow_garbage() -> None:
    async with ScaleSim(scale=MtSicsScale(load_g=1.0)) as sim:
        with opened(sim.path) as fd:
            sim.faults.silent = True
            os.write(fd, b"SI\r\n")
            with pytest.raises(TimeoutError):
                await read_lines(fd, 1, within=0.3)
            sim.faults = Faults(delay=0.2)
            os.write(fd, b"SI\r\n")
            with pytest.raises(TimeoutError):
                await read_lines(fd, 1, within=0.05)
            assert await read_lines(fd, 1) == [b"S S      1.000 g\r\n"]
            sim.faults = Faults(garbage_rate=1.0)
            os.write(fd, b"SI\r\n")
            assert await read_lines(fd, 2) == [GARBAGE_LINE, b"S S      1.000 g\r\n"]


async def test_restart_recreates_the_port_behind_the_same_path() -> None:
    async with ScaleSim() as sim:
        with opened(sim.path) as old:
            await sim.restart(down=0.01)
            # The old port is hung up: end of file or EIO, never "no data yet".
            try:
                data = os.read(old, 16)
            except BlockingIOError:
                pytest.fail("the old port is still alive")
            except OSError:
                data = b""
            assert data == b""
        assert sim.plugged
        with opened(sim.path) as fd:
            os.write(fd, b"SI\r\n")
            assert await read_lines(fd, 1) == [b"S S      0.000 g\r\n"]


async def test_unplug_removes_the_path() -> None:
    async with ScaleSim() as sim:
        sim.unplug()
        assert not sim.plugged
        assert not is_link(sim.path)
        sim.inject(b"lost\r\n")
        assert sim.lines_lost == 1


async def test_torque_tool_prints_by_itself() -> None:
    async with TorqueToolSim(seed=9, interval=(0.02, 0.05)) as sim:
        with opened(sim.path) as fd:
            lines = await read_lines(fd, 3)
        matches = [TORQUE_LINE.fullmatch(line) for line in lines]
        assert [int(m.group(1)) if m else None for m in matches] == [1, 2, 3]


async def test_torque_tool_on_demand_with_link(tmp_path: Path) -> None:
    link = tmp_path / "ttyTOOL"
    async with TorqueToolSim(link=link, auto=False) as sim:
        assert sim.path == str(link)
        with opened(sim.path) as fd:
            result = sim.tighten()
            assert await read_lines(fd, 1) == [result.line()]
            sim.faults.silent = True
            sim.tighten()
            with pytest.raises(TimeoutError):
                await read_lines(fd, 1, within=0.2)
        assert sim.lines_sent == 1


async def test_serve_runs_until_cancelled(tmp_path: Path) -> None:
    link = tmp_path / "scale"
    task = asyncio.create_task(serve("mt-sics-scale", link, seed=1))
    for _ in range(500):  # the task creates the pty on its first step
        await asyncio.sleep(0.01)
        if is_link(str(link)):
            break
    with opened(str(link)) as fd:
        os.write(fd, b"SI\r\n")
        assert await read_lines(fd, 1) == [b"S S    250.000 g\r\n"]
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert not is_link(str(link))
    with pytest.raises(ValueError, match="unknown serial simulator"):
        await serve("toaster", link)
