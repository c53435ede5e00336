"""Read-only toward equipment: no Modbus write function code ever reaches a device.

The simulators count every request per function code on the wire (in front of
the Modbus server). The agent polls one simulated device per shipped Modbus
profile, ``edge-agent read --raw`` reads each (every tag, then the raw
register view), and only the read codes 1, 2, 3 and 4 may have arrived. A
tag marked ``writable: true`` in the site file changes nothing: there is no
write path.
"""

from __future__ import annotations

import subprocess
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pymodbus.client import AsyncModbusTcpClient

from simulators.modbus_server import TcpEndpoint
from simulators.profile_library import merged
from simulators.run import RunningSimulators, SimDevice, run_simulators
from tests.security.support import start_agent, wait_until
from tests.support.agentproc import ROOT, AgentProcess, site_dict
from tests.support.simthread import SimThread

AGENT = "readonly-box"
READ_CODES = {1, 2, 3, 4}  # coils, discrete inputs, holding registers, input registers
PROFILES = ROOT / "config" / "profiles"


def modbus_profiles() -> list[Path]:
    """Every shipped profile that speaks Modbus (``extends`` followed)."""
    return [
        path
        for path in sorted(PROFILES.glob("*.yaml"))
        if (merged(path).get("protocol") or {}).get("kind") == "modbus"
    ]


def _device(path: Path, port: int, writable: bool) -> dict[str, Any]:
    groups = dict.fromkeys([*(merged(path).get("poll_groups") or {}), "default"], "300ms")
    device: dict[str, Any] = {
        "id": path.stem,
        "profile": path.stem,
        "connection": {"modbus_tcp": {"host": "127.0.0.1", "port": port, "timeout": "1s"}},
        "poll_groups": groups,
    }
    if writable:
        device["tags"] = {name: {"writable": True} for name in merged(path)["tags"]}
    return device


def _codes_seen(sims: SimThread) -> dict[str, Counter[int]]:
    def collect(running: RunningSimulators) -> dict[str, Counter[int]]:
        seen = {}
        for name, device in running.devices.items():
            assert isinstance(device.endpoint, TcpEndpoint)
            seen[name] = Counter(device.endpoint.function_codes_seen)
        return seen

    return sims.call(collect)


def _read_everything(
    agent: AgentProcess, devices: list[str]
) -> list[subprocess.CompletedProcess[str]]:
    # --raw reads every tag the normal way first, then the raw register view
    site = str(agent.site_file)
    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(lambda d: agent.command("read", "-c", site, d, "--raw"), devices))


def _run_and_read(tmp_path: Path, profiles: list[Path], writable: bool) -> dict[str, Counter[int]]:
    """Poll every profile's device with the agent, read each once; the codes each one got."""
    specs = [SimDevice(p.stem, "counter", profile=p) for p in profiles]
    with SimThread(specs) as sims:
        devices = [_device(p, sims.ports[p.stem], writable) for p in profiles]
        agent = start_agent(tmp_path / "agent", site_dict(AGENT, 1, devices))  # no broker needed
        try:
            wait_until(
                lambda: all(d["polls_ok"] >= 2 for d in agent.status()["devices"].values()),
                40,
                "every device polled twice",
            )
            reads = _read_everything(agent, [p.stem for p in profiles])
            agent.kill()  # no broker: a clean stop would wait its drain time for nothing
        finally:
            agent.__exit__(None, None, None)
        seen = _codes_seen(sims)
    for run in reads:
        assert run.returncode == 0, f"{run.args}: {run.stdout}{run.stderr}"
    return seen


def test_agent_and_read_send_only_read_codes_to_every_shipped_modbus_profile(
    tmp_path: Path,
) -> None:
    profiles = modbus_profiles()
    assert len(profiles) >= 8, "the shipped Modbus profiles were not found"
    seen = _run_and_read(tmp_path, profiles, writable=False)
    for name, codes in seen.items():
        assert sum(codes.values()) > 0, f"{name}: no request at all"
        assert set(codes) <= READ_CODES, f"{name}: function codes {dict(codes)} reached it"


def test_a_writable_tag_still_causes_no_write(tmp_path: Path) -> None:
    profiles = [PROFILES / "generic-counter.yaml", PROFILES / "inovance-md500.yaml"]
    seen = _run_and_read(tmp_path, profiles, writable=True)
    for name, codes in seen.items():
        assert sum(codes.values()) > 0, f"{name}: no request at all"
        assert set(codes) <= READ_CODES, f"{name}: function codes {dict(codes)} reached it"


async def test_the_recorder_sees_a_write() -> None:
    # the check above could not fail if a write went unrecorded
    async with run_simulators([SimDevice("c1", "counter")], step_interval=None) as sims:
        client = AsyncModbusTcpClient("127.0.0.1", port=sims.ports["c1"], timeout=2, retries=0)
        assert await client.connect()
        try:
            await client.read_holding_registers(0, count=1, device_id=sims["c1"].unit_id)
            await client.write_register(0, 7, device_id=sims["c1"].unit_id)
        finally:
            client.close()
        endpoint = sims["c1"].endpoint
        assert isinstance(endpoint, TcpEndpoint)
        assert endpoint.function_codes_seen == Counter({3: 1, 6: 1})
