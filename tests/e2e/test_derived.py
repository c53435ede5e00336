"""End to end: derived tags (compute:) computed from a simulator's registers, published.

The agent runs as a real process against a Modbus TCP simulator and a real
Mosquitto. The derived values must match the tags read in the same message,
and when the device answers with an exception, the derived tags must carry
the input's error, never a number.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from simulators.faults import Fault, FaultMode
from simulators.run import SimDevice
from tests.support.agentproc import AgentProcess, counter_device, site_dict
from tests.support.mosquitto import Mosquitto, Received, Subscriber
from tests.support.simthread import SimThread

AGENT = "e2e-derive"
COMPUTE = {
    "t0_plus_t1": {"expr": "t0 + t1", "unit": "pcs"},
    "t0_kilo": {"expr": "round(t0 / 1000, 3)"},
    "t1_odd": {"expr": "bit(t1, 0)"},
    "sum_doubled": {"expr": "t0_plus_t1 * 2"},
}


def _readings(received: list[Received]) -> list[dict[str, Any]]:
    out = []
    for message in received:
        if message.topic == f"edge/{AGENT}/c1":
            out.extend(json.loads(message.payload)["readings"])
    return out


def _with_values(received: list[Received]) -> list[dict[str, Any]]:
    return [r for r in _readings(received) if "t0_plus_t1" in r.get("values", {})]


def _with_errors(received: list[Received]) -> list[dict[str, Any]]:
    return [r for r in _readings(received) if "t0_plus_t1" in r.get("errors", {})]


def test_derived_values_are_published_and_input_errors_propagate(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    with (
        SimThread([SimDevice("c1", "counter")], step_interval=0.1) as sims,
        Subscriber(mosquitto.port, f"edge/{AGENT}/#") as sub,
    ):
        device = {**counter_device("c1", sims.ports["c1"], "200ms"), "compute": COMPUTE}
        with AgentProcess(tmp_path, site_dict(AGENT, mosquitto.port, [device])) as agent:
            got = sub.wait_for(lambda r: len(_with_values(r)) >= 3, timeout=30)
            for reading in _with_values(got):
                values = reading["values"]
                t0, t1 = values["t0"], values["t1"]
                assert values["t0_plus_t1"] == float(t0 + t1)
                assert values["t0_kilo"] == round(t0 / 1000, 3)
                assert values["t1_odd"] is bool(t1 & 1)
                assert values["sum_doubled"] == 2.0 * (t0 + t1)
            sims.call(lambda s: s["c1"].faults.set(Fault(FaultMode.EXCEPTION, exception_code=2)))
            got = sub.wait_for(lambda r: len(_with_errors(r)) >= 1, timeout=30)
            bad = _with_errors(got)[0]
            reason = bad["errors"]["t0"]
            assert bad["errors"]["t0_plus_t1"] == f"input t0: {reason}"
            assert bad["errors"]["t1_odd"] == f"input t1: {bad['errors']['t1']}"
            assert bad["errors"]["sum_doubled"] == f"input t0_plus_t1: input t0: {reason}"
            assert not set(COMPUTE) & set(bad.get("values", {})), "a number despite an error"
            sims.call(lambda s: s["c1"].faults.clear())
            before = len(_with_values(got))
            sub.wait_for(lambda r: len(_with_values(r)) > before, timeout=30)
            assert agent.stop() == 0
