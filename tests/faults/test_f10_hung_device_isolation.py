"""F10b: a Modbus device that stops answering mid-request never delays another device.

Through the real runtime: the agent process (``edge-agent run``) polls two
counter simulators (their own thread and sockets) and publishes to a real
broker. Once both flow, the ``stuck`` simulator goes ``silent``: it takes each
request and never answers, so every read of ``stuck`` waits out its whole
reply timeout (3 s) inside the driver. Meanwhile the ``healthy`` device's
readings, as they arrive at the broker, must keep their poll period: no gap
between two consecutive reading timestamps above 3 x its 200 ms interval.

Why this fails with polling one device after another: every read of ``stuck``
would then hold the single poll loop for the 3 s timeout, so each healthy
poll would wait behind it and the healthy timestamps would show gaps of at
least 3 s (15 intervals), far above the 600 ms bound. (Checked by hand by
making ``DevicePoller._poll`` take one lock shared by all devices around each
read: the test then fails with gaps of about 3 s.) The test also checks that
the stuck device really was stuck (its reads failed with a timeout while the
fault lasted), so it cannot pass because the fault never took hold.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path

from agent.message import decode_message
from simulators.faults import Fault, FaultMode
from simulators.run import RunningSimulators, SimDevice
from tests.faults.harness import wait_status
from tests.support.agentproc import AgentProcess, counter_device, site_dict
from tests.support.mosquitto import Mosquitto, Subscriber
from tests.support.simthread import SimThread

AGENT = "isolation-box"
INTERVAL_S = 0.2
STUCK_TIMEOUT = "3s"
FAULT_S = 8.0
"""Long enough for two whole timeouts of the stuck device, and ~40 healthy polls."""


def _site(broker_port: int, ports: dict[str, int]) -> dict[str, object]:
    stuck = counter_device("stuck", ports["stuck"], f"{int(INTERVAL_S * 1000)}ms")
    stuck["connection"]["modbus_tcp"]["timeout"] = STUCK_TIMEOUT
    healthy = counter_device("healthy", ports["healthy"], f"{int(INTERVAL_S * 1000)}ms")
    return site_dict(AGENT, broker_port, [stuck, healthy])


def _healthy_ts(sub: Subscriber, since_ms: int, until_ms: int) -> list[int]:
    """Reading timestamps (agent clock, ms) of the healthy device inside the window."""
    stamps: list[int] = []
    for payload in sub.payloads(f"edge/{AGENT}/healthy"):
        message = decode_message(payload)
        stamps.extend(r["ts"] for r in message["readings"] if r["values"])
    return sorted(t for t in stamps if since_ms <= t <= until_ms)


def _silence(sims: SimThread, on: bool) -> None:
    def switch(running: RunningSimulators) -> None:
        faults = running["stuck"].faults
        faults.set(Fault(FaultMode.SILENT)) if on else faults.clear()

    sims.call(switch)


def test_f10_a_silent_device_leaves_the_other_devices_poll_period_alone(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    devices = [SimDevice("stuck", "counter"), SimDevice("healthy", "counter", seed=3)]
    with (
        SimThread(devices) as sims,
        Subscriber(mosquitto.port, f"edge/{AGENT}/#") as sub,
        AgentProcess(tmp_path / "agent", _site(mosquitto.port, sims.ports)) as agent,
    ):
        wait_status(agent, lambda d: all(v["polls_ok"] > 3 for v in d["devices"].values()))
        failed_before = agent.status()["devices"]["stuck"]["polls_failed"]
        _silence(sims, True)
        since_ms = int(time.time() * 1000)
        time.sleep(FAULT_S)
        until_ms = int(time.time() * 1000)
        during = agent.status()["devices"]
        _silence(sims, False)
        sub.wait_for(lambda _: bool(_healthy_ts(sub, until_ms, 2**62)), 10)
    stamps = _healthy_ts(sub, since_ms, until_ms)
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert during["stuck"]["polls_failed"] > failed_before, "the stuck device was not stuck"
    assert "no reply within 3s" in str(during["stuck"]["last_error"]), during["stuck"]
    age = during["stuck"]["last_ok_age_s"]
    assert age is not None
    assert age >= FAULT_S - 1, "the stuck device kept answering"
    assert max(gaps) <= 3 * INTERVAL_S * 1000, f"healthy gaps (ms): {sorted(gaps)[-5:]}"
    assert len(stamps) >= FAULT_S / INTERVAL_S / 2, f"{len(stamps)} healthy readings"
