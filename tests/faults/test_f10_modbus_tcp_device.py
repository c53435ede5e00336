"""F10: a misbehaving Modbus TCP device, next to a healthy one.

Each fault is switched on for the faulty device while the real scheduler
(``agent.runtime.poller.DevicePoller``) and the real driver poll both devices.
Pass, per fault: the faulty device's tags turn bad within one poll (or, for
split frames, keep reading right), never a value on the wrong tag, the healthy
device's poll count keeps growing while the fault lasts, and the faulty device
reads again once the fault is gone.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from agent.runtime.poller import DevicePoller
from simulators.faults import Fault, FaultMode
from simulators.modbus_server import TcpEndpoint
from simulators.run import RunningSimulators, SimDevice, run_simulators
from tests.faults.pollrig import ListSink, complete, fault_round, load_devices
from tests.support.agentproc import counter_device

TIMEOUT = "500ms"
ERROR_FAULTS = [
    Fault(FaultMode.SILENT),
    Fault(FaultMode.SLOW, delay_s=1.0),  # a late reply: after our timeout
    *(Fault(FaultMode.EXCEPTION, exception_code=c) for c in (0x01, 0x02, 0x03, 0x04, 0x06, 0x0B)),
    Fault(FaultMode.DROP),
    Fault(FaultMode.GARBAGE),
    Fault(FaultMode.WRONG_TID),
    Fault(FaultMode.WRONG_UNIT),
    Fault(FaultMode.RESET),
]


def _device(name: str, port: int) -> dict[str, object]:
    entry = counter_device(name, port, "100ms")
    entry["connection"]["modbus_tcp"]["timeout"] = TIMEOUT
    return entry


@pytest.fixture
def names() -> list[SimDevice]:
    return [SimDevice("bad", "counter"), SimDevice("good", "counter", seed=3)]


async def test_f10_device_faults_stay_with_their_device(
    tmp_path: Path, names: list[SimDevice]
) -> None:
    sink = ListSink()
    async with run_simulators(names, step_interval=0.1) as sims:
        configs = load_devices(tmp_path, [_device(n, sims.ports[n]) for n in ("bad", "good")])
        pollers = {c.id: DevicePoller(c, sink, backoff_max=1.0) for c in configs}
        tasks = [asyncio.create_task(p.run(), name=n) for n, p in pollers.items()]
        try:
            for fault in ERROR_FAULTS:
                await fault_round(sims, sink, "bad", pollers["good"], fault)
            await _split_and_idle(sims, sink)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    assert sink.wrong_tags() == []
    assert pollers["bad"].stats.polls_failed > 0


async def _split_and_idle(sims: RunningSimulators, sink: ListSink) -> None:
    """Split frames are not a fault to report; an idle disconnect is healed by reconnecting."""
    since = time.monotonic()
    sims["bad"].faults.set(Fault(FaultMode.SPLIT))
    await asyncio.sleep(1.5)
    sims["bad"].faults.clear()
    split = [r for r in sink.of("bad", since) if r.values or r.errors]
    assert len(split) >= 3
    assert all(complete(r) for r in split), split[:3]
    endpoint = sims["bad"].endpoint
    assert isinstance(endpoint, TcpEndpoint)
    assert endpoint.proxy is not None
    proxy = endpoint.proxy
    for _ in range(3):
        proxy.drop_clients()  # the device closes idle connections
        await asyncio.sleep(0.5)
    await sink.wait("bad", time.monotonic(), complete, 30)
