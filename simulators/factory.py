"""The sample garden-tools factory: every simulated machine of the demo site at once.

Two VFD-driven motors and an energy meter on Modbus TCP, a spindle motor on
Modbus RTU over a serial line (a socat pty pair, as if through a USB-RS485
adapter), a packaging line on OPC UA, and a torque tool printing results on a
serial line, and a DL/T 645 energy meter on an RS-485 line of its own (a pty).
``edge-agent demo`` starts it on free ports; ``edge-agent simulate
--factory`` starts it at the fixed addresses of
``config/examples/garden-tools.yaml``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import shutil
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from simulators.dlt645_meter import Meter, MeterLine, PtyMeters
from simulators.faults import FaultSwitch
from simulators.packaging_line import run_packaging_line
from simulators.run import SimDevice, run_simulators
from simulators.serial_devices import TorqueToolSim
from simulators.timeline import Timeline

SERIAL_DIR = Path("/tmp/edge-agent-sim")  # noqa: S108 - fixed, documented demo paths


@dataclass(frozen=True)
class FactoryPorts:
    """Where the simulated factory listens; 0 picks free ports."""

    press_motor: int = 0
    saw_motor: int = 0
    meter: int = 0
    packaging_line: int = 0
    serial_dir: Path = SERIAL_DIR


DLT645_ADDRESS = "000000000161"
"""The office meter's address in config/examples/garden-tools.yaml."""

FIXED = FactoryPorts(5020, 5021, 5022, 4840)
"""The addresses config/examples/garden-tools.yaml expects."""


@dataclass
class Factory:
    """What the agent connects to: device id -> address (port, endpoint or serial path)."""

    addresses: dict[str, str | int] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)
    faults: dict[str, FaultSwitch] = field(default_factory=dict)
    """The fault switch of each Modbus machine (TCP and RTU), by device id."""


@contextlib.asynccontextmanager
async def _pty_pair(device_end: Path, agent_end: Path) -> AsyncIterator[None]:
    socat = shutil.which("socat")
    if socat is None:
        raise RuntimeError("socat is needed for the RTU line: apt-get install socat")
    for path in (device_end, agent_end):
        path.unlink(missing_ok=True)
    proc = await asyncio.create_subprocess_exec(
        socat,
        f"pty,raw,echo=0,link={device_end}",
        f"pty,raw,echo=0,link={agent_end}",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        for _ in range(500):  # socat creates both links within milliseconds
            if await asyncio.to_thread(lambda: device_end.exists() and agent_end.exists()):
                break
            await asyncio.sleep(0.02)
        else:
            raise RuntimeError(f"socat did not create {device_end} and {agent_end}")
        yield
    finally:
        if proc.returncode is None:
            proc.terminate()
            await proc.wait()


@contextlib.asynccontextmanager
async def run_factory(
    ports: FactoryPorts = FactoryPorts(), timelines: Mapping[str, Timeline] | None = None
) -> AsyncIterator[Factory]:
    """Start the whole sample factory; yields where each machine can be reached.

    ``timelines`` scripts machines by device id (the Modbus motors, the meter's
    silence, ``packaging-line``): see :mod:`simulators.timeline`.
    """
    timelines = dict(timelines or {})
    scriptable = {"press-motor-1", "saw-motor-2", "main-meter", "spindle-motor-3"}
    unknown = sorted(set(timelines) - scriptable - {"packaging-line"})
    if unknown:
        raise ValueError(f"no scriptable machine {unknown} in the factory")
    folder = ports.serial_dir
    folder.mkdir(parents=True, exist_ok=True)
    rtu_device, rtu_agent = folder / "rtu-device", folder / "rtu"
    modbus = [
        SimDevice("press-motor-1", "vfd", port=ports.press_motor, seed=1),
        SimDevice("saw-motor-2", "vfd", port=ports.saw_motor, seed=2),
        SimDevice("main-meter", "meter", port=ports.meter, seed=3),
        SimDevice("spindle-motor-3", "vfd", serial_port=str(rtu_device), baudrate=19200, seed=4),
    ]
    modbus = [dataclasses.replace(s, timeline=timelines.get(s.name)) for s in modbus]
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(_pty_pair(rtu_device, rtu_agent))
        sims = await stack.enter_async_context(run_simulators(modbus))
        line = await stack.enter_async_context(
            run_packaging_line(
                ports.packaging_line, seed=5, timeline=timelines.get("packaging-line")
            )
        )
        torque = await stack.enter_async_context(TorqueToolSim(link=folder / "torque", seed=6))
        dlt645 = await stack.enter_async_context(
            PtyMeters(MeterLine([Meter(DLT645_ADDRESS)]), link=folder / "dlt645")
        )
        factory = Factory()
        for name in ("press-motor-1", "saw-motor-2", "main-meter"):
            factory.addresses[name] = sims.ports[name]
        factory.addresses["spindle-motor-3"] = str(rtu_agent)
        factory.faults = {name: running.faults for name, running in sims.devices.items()}
        factory.addresses["packaging-line"] = line.endpoint
        factory.addresses["torque-tool"] = torque.path
        factory.addresses["office-meter"] = dlt645.path
        factory.lines = [
            *sims.describe(),
            f"spindle-motor-3: agent side of the RTU line at {rtu_agent} (19200 baud)",
            f"packaging-line: PackML line on OPC UA at {line.endpoint}",
            f"torque-tool: tightening results on serial line {torque.path}",
            f"office-meter: DL/T 645 meter {DLT645_ADDRESS} on serial line {dlt645.path}",
        ]
        yield factory
