"""End to end: an agent process with metrics on, a simulator and a real Mosquitto.

The summary arrives on its own topic at QoS 0, not retained, while the data
stream keeps its contiguous ``seq``; the loopback endpoint and ``edge-agent
metrics`` serve the Prometheus text of the same process.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

from simulators.run import SimDevice
from tests.support.agentproc import AgentProcess, counter_device, site_dict
from tests.support.mosquitto import Mosquitto, Received, Subscriber, free_port
from tests.support.simthread import SimThread

AGENT = "metrics-box"
TOPIC = f"edge/{AGENT}/metrics"


def _summaries(received: list[Received]) -> list[dict[str, Any]]:
    return [json.loads(m.payload) for m in received if m.topic == TOPIC]


def _data_seqs(received: list[Received]) -> list[int]:
    return [json.loads(m.payload)["seq"] for m in received if m.topic == f"edge/{AGENT}/c1"]


def test_metrics_reach_the_broker_and_the_loopback_endpoint(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    port = free_port()
    with (
        SimThread([SimDevice("c1", "counter")]) as sims,
        Subscriber(mosquitto.port, f"edge/{AGENT}/#") as sub,
    ):
        site = site_dict(AGENT, mosquitto.port, [counter_device("c1", sims.ports["c1"], "100ms")])
        site["metrics"] = {"listen": f"127.0.0.1:{port}", "publish_interval": "1s"}
        with AgentProcess(tmp_path, site) as agent:
            got = sub.wait_for(lambda r: len(_summaries(r)) >= 3, timeout=60)
            url = f"http://127.0.0.1:{port}/metrics"
            with urllib.request.urlopen(url, timeout=10) as answer:
                scraped = answer.read().decode()
            printed = agent.command("metrics")
            status = agent.status()
            assert agent.stop() == 0
    summaries = _summaries(got)
    first, last = summaries[0], summaries[-1]
    assert last["kind"] == "metrics"
    assert last["agent"] == AGENT
    assert last["publish"]["connected"] is True
    assert last["devices"]["c1"]["state"] == "connected"
    assert last["devices"]["c1"]["polls_ok"] > first["devices"]["c1"]["polls_ok"]
    assert sum(last["devices"]["c1"]["poll_hist"]) >= last["devices"]["c1"]["polls_ok"]
    assert last["buffer"]["last_seq"] >= last["publish"]["messages"] > 0
    metrics_messages = [m for m in got if m.topic == TOPIC]
    assert not any(m.retain for m in metrics_messages), "metrics must not be retained"
    seqs = _data_seqs(got)
    assert seqs == list(range(1, len(seqs) + 1)), "the data stream must stay contiguous"
    assert 'edge_agent_device_polls_total{device="c1",result="ok"}' in scraped
    assert f'edge_agent_info{{version="{status["agent"]["version"]}",agent="{AGENT}"}} 1' in scraped
    assert printed.returncode == 0, printed.stderr
    assert "# TYPE edge_agent_device_poll_duration_seconds histogram" in printed.stdout
    assert status["metrics"] == {
        "listen": f"127.0.0.1:{port}",
        "publish_interval_s": 1.0,
        "topic": TOPIC,
    }
