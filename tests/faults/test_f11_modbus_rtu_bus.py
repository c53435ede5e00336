"""F11: Modbus RTU on a shared bus (a socat pty pair), one unit misbehaving.

Units 1 and 2 share one serial line. Unit 1 gets line noise, a bad CRC, a
truncated frame, a reply from the wrong unit, garbage, an exception, silence.
Pass: unit 1 turns bad within one poll (line noise may be read through: the
framer finds the frame behind it), never a value on the wrong tag, unit 2 keeps
being polled throughout, unit 1 reads again once healed.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.runtime.poller import DevicePoller
from simulators.faults import Fault, FaultMode
from simulators.run import SimDevice, run_simulators
from tests.faults.pollrig import ListSink, fault_round, load_devices
from tests.support.tools import require

BAUD = 38400
FAULTS = [
    (Fault(FaultMode.BAD_CRC), True),
    (Fault(FaultMode.TRUNCATE), True),
    (Fault(FaultMode.WRONG_UNIT), True),
    (Fault(FaultMode.GARBAGE), True),
    (Fault(FaultMode.EXCEPTION, exception_code=0x04), True),
    (Fault(FaultMode.SILENT), True),
    (Fault(FaultMode.NOISE), False),
]


@pytest.fixture
def pty_pair(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Two linked pseudo-terminals from socat: (device side, agent side)."""
    dev, cli = tmp_path / "ttyDEV", tmp_path / "ttyCLI"
    proc = subprocess.Popen(
        [require("socat"), f"pty,raw,echo=0,link={dev}", f"pty,raw,echo=0,link={cli}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while not (dev.exists() and cli.exists()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert dev.exists(), "socat did not create the pty pair"
        yield str(dev), str(cli)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _unit(name: str, unit: int, port: str) -> dict[str, object]:
    return {
        "id": name, "profile": "generic-counter", "unit_id": unit,
        "connection": {"modbus_rtu": {"port": port, "baud": BAUD, "timeout": "300ms"}},
        "poll_groups": {"default": "200ms"},
    }  # fmt: skip


async def test_f11_faulty_unit_does_not_stop_the_bus(
    tmp_path: Path, pty_pair: tuple[str, str]
) -> None:
    dev, cli = pty_pair
    specs = [SimDevice(f"u{u}", "counter", unit_id=u, serial_port=dev, baudrate=BAUD)
             for u in (1, 2)]  # fmt: skip
    sink = ListSink()
    async with run_simulators(specs, step_interval=0.1) as sims:
        configs = load_devices(tmp_path, [_unit("u1", 1, cli), _unit("u2", 2, cli)])
        pollers = {c.id: DevicePoller(c, sink, backoff_max=1.0) for c in configs}
        tasks = [asyncio.create_task(p.run(), name=n) for n, p in pollers.items()]
        try:
            for fault, expect_error in FAULTS:
                await fault_round(sims, sink, "u1", pollers["u2"], fault,
                                  expect_error=expect_error, hold_s=1.0)  # fmt: skip
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    assert sink.wrong_tags() == []
    assert pollers["u1"].stats.polls_failed > 0
