"""End to end on the OPC UA path: what the server says that JSON cannot or must not carry.

The packaging-line simulator runs in-process on a free port, the agent as a
real process in poll mode, a real Mosquitto in between. A Double node holding
NaN or infinity must reach the broker as a tag error (never ``null`` in
``values``), and a DateTime.MinValue source timestamp must not become the
reading's ``ts`` (the server timestamp does, not the agent's later time).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from agent.message import decode_message
from drivers.base import not_finite, now_ms
from simulators.packaging_line import LineHandle, run_packaging_line
from tests.faults.loopthread import LoopThread
from tests.support.agentproc import AgentProcess, site_dict
from tests.support.mosquitto import Mosquitto, Received, Subscriber

AGENT = "opcua-box"


def _line_device(endpoint: str) -> dict[str, Any]:
    return {
        "id": "line", "profile": "packml-line",
        "connection": {"opcua": {"endpoint": endpoint, "timeout": "2s"}},
        "poll_groups": {"fast": "200ms", "slow": "200ms", "stamp": "200ms"},
        # alone in its group, so the reading's ts is this node's timestamp
        "tags": {"alarm_code": {"group": "stamp"}},
    }  # fmt: skip


def _readings(received: list[Received]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for m in received:
        if m.topic == f"edge/{AGENT}/line":
            out.extend(decode_message(m.payload)["readings"])
    return out


def _with(tag: str, where: str) -> Any:
    def check(received: list[Received]) -> bool:
        return any(tag in r.get(where, {}) for r in _readings(received))

    return check


def test_nan_and_infinity_are_tag_errors_and_minvalue_is_not_a_ts(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    loop = LoopThread("packaging-line")
    try:
        line: LineHandle = loop.enter(run_packaging_line(tick=None))
        loop.run(line.write("CurSpeed", float("nan")))
        loop.run(line.write("MachSpeed", float("inf")))
        # asyncua's server stamps ServerTimestamp itself, at the write: between these two
        before = now_ms()
        loop.run(line.write_stamped("AlarmCode", 77, datetime(1601, 1, 1), None))
        after = now_ms()
        site = site_dict(AGENT, mosquitto.port, [_line_device(line.endpoint)])
        with (
            Subscriber(mosquitto.port, f"edge/{AGENT}/#") as sub,
            AgentProcess(tmp_path / "agent", site) as agent,
        ):
            sub.wait_for(_with("cur_speed", "errors"), 30)
            sub.wait_for(_with("mach_speed", "errors"), 30)
            sub.wait_for(_with("alarm_code", "values"), 30)
            assert agent.stop() == 0
        readings = _readings(sub.messages)
        assert not any("cur_speed" in r["values"] or "mach_speed" in r["values"] for r in readings)
        errors = {k: v for r in readings for k, v in r.get("errors", {}).items()}
        assert errors["cur_speed"] == not_finite(float("nan")) == "not a number (nan)"
        assert errors["mach_speed"] == not_finite(float("inf")) == "not a number (inf)"
        stamps = {r["ts"] for r in readings if "alarm_code" in r["values"]}
        assert stamps, "alarm_code was never reported"
        assert all(before <= ts <= after for ts in stamps), (before, stamps, after)
    finally:
        loop.close()
