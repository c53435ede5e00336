"""F12: the OPC UA server is restarted, then freezes (a half-open link).

The whole agent runs as a process, subscribed (``mode: subscribe``) to the
packaging-line simulator; the checker watches MQTT. Pass: after each fault
the device leaves ``connected`` (detected), comes back with a new client
(reconnects counted), and data changes flow again (subscriptions restored).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from agent.message import decode_message
from agent.status.document import StatusDocument
from simulators.packaging_line import LineHandle, run_packaging_line
from tests.faults.harness import AGENT, offline_buffer, wait_status
from tests.faults.loopthread import LoopThread
from tests.support.agentproc import AgentProcess, site_dict
from tests.support.mosquitto import Mosquitto, Subscriber

FREEZE_S = 5.0


def _line_device(endpoint: str) -> dict[str, Any]:
    return {
        "id": "line", "profile": "packml-line",
        "connection": {"opcua": {"endpoint": endpoint, "timeout": "2s", "mode": "subscribe",
                                 "publishing_interval": "200ms"}},
    }  # fmt: skip


def _changes_since(sub: Subscriber, since: float) -> int:
    n = 0
    for m in sub.messages:
        if m.at >= since and m.topic == f"edge/{AGENT}/line":
            n += sum(1 for r in decode_message(m.payload)["readings"] if r["values"])
    return n


def _down(doc: StatusDocument) -> bool:
    return bool(doc["devices"]["line"]["state"] != "connected")


def _up_again(reconnects: int) -> Any:
    def check(doc: StatusDocument) -> bool:
        line = doc["devices"]["line"]
        return bool(line["state"] == "connected" and line["reconnects"] > reconnects)

    return check


def test_f12_restart_and_freeze_are_survived(tmp_path: Path, mosquitto: Mosquitto) -> None:
    loop = LoopThread("packaging-line")
    try:
        line: LineHandle = loop.enter(run_packaging_line(tick=0.2))
        site = site_dict(AGENT, mosquitto.port, [_line_device(line.endpoint)])
        with (
            Subscriber(mosquitto.port, f"edge/{AGENT}/#") as sub,
            AgentProcess(tmp_path / "agent", site) as agent,
        ):
            sub.wait_for(lambda r: _changes_since(sub, 0) >= 3, 30)
            # 1. restart: the port closes, the server comes back empty of sessions
            before = wait_status(agent, lambda d: d["devices"]["line"]["state"] == "connected")
            loop.run(line.restart(down_for=2.0))
            wait_status(agent, _up_again(before["devices"]["line"]["reconnects"]), 60)
            since = time.monotonic()
            sub.wait_for(lambda r: _changes_since(sub, since) >= 3, 30)
            # 2. freeze: the link stays open and says nothing
            before = agent.status()
            loop.call(line.set_fault, "freeze")
            wait_status(agent, _down, 30)
            time.sleep(FREEZE_S)
            loop.call(line.set_fault, None)
            wait_status(agent, _up_again(before["devices"]["line"]["reconnects"]), 60)
            since = time.monotonic()
            sub.wait_for(lambda r: _changes_since(sub, since) >= 3, 30)
            assert agent.stop() == 0
        assert offline_buffer(agent)["pending_batches"] == 0
    finally:
        loop.close()
