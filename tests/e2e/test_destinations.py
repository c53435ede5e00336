"""Two destinations from one site file: the factory broker (edge-json) and a Sparkplug B host.

The real agent process, two real Mosquitto brokers, counter simulators over
Modbus TCP. One broker is stopped for a while: the other keeps receiving, and
once the stopped one is back it receives every batch it missed, in order.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from agent.north.sparkplug import sparkplug_b_pb2 as pb
from agent.north.sparkplug.encode import EDGE_SEQ
from simulators.run import SimDevice
from tests.faults.checker import Checker
from tests.faults.harness import offline_buffer, wait_status
from tests.support.agentproc import AgentProcess, counter_device, site_dict
from tests.support.mosquitto import Mosquitto
from tests.support.simthread import SimThread

AGENT = "two-way-box"


class SparkplugHost:
    """A host application on the Sparkplug broker: the buffer seq of every DDATA, per device."""

    def __init__(self, port: int) -> None:
        self.lock = threading.Lock()
        self.seqs: dict[str, list[int]] = {}
        self.types: list[str] = []
        self.aliases: dict[int, str] = {}
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id="host", clean_session=False
        )
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe("spBv1.0/plant/#", qos=1)
        self.client.loop_start()

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        parts = msg.topic.split("/")
        kind = parts[2]
        payload = pb.Payload()
        payload.ParseFromString(bytes(msg.payload))
        with self.lock:
            self.types.append(kind)
            if kind in ("NBIRTH", "DBIRTH"):
                for m in payload.metrics:
                    self.aliases[m.alias] = m.name
            if kind == "DDATA":
                device = parts[4]
                for m in payload.metrics:
                    name = m.name or self.aliases.get(m.alias, "")
                    if name == EDGE_SEQ:
                        self.seqs.setdefault(device, []).append(m.long_value)

    def all_seqs(self) -> set[int]:
        with self.lock:
            return {s for seqs in self.seqs.values() for s in seqs}

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def wait_for(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_a_destination_that_is_down_holds_back_only_itself(tmp_path: Path) -> None:
    with (
        Mosquitto(tmp_path / "factory", persistence=True) as factory,
        Mosquitto(tmp_path / "county", persistence=True) as county,
        SimThread([SimDevice("c1", "counter"), SimDevice("c2", "counter")]) as sims,
    ):
        devices = [counter_device(n, sims.ports[n], "100ms") for n in ("c1", "c2")]
        site = site_dict(AGENT, factory.port, devices)
        site["north"] = [
            {
                "id": "county",
                "dialect": "sparkplug-b",
                "host": "127.0.0.1",
                "port": county.port,
                "keepalive": "5s",
                "reconnect_max": "2s",
                "sparkplug": {"group_id": "plant"},
            }
        ]
        host = SparkplugHost(county.port)
        try:
            with Checker(factory.port, AGENT, session="checker") as checker:
                agent = AgentProcess(tmp_path / "agent", site).start()
                try:
                    doc = wait_status(
                        agent,
                        lambda d: all(x["connected"] for x in d.get("destinations", {}).values()),
                        30,
                    )
                    assert list(doc["destinations"]) == ["mqtt", "county"]
                    assert doc["destinations"]["county"]["dialect"] == "sparkplug-b"
                    text = agent.command("status", "-c", str(agent.site_file)).stdout
                    assert "destination mqtt (edge-json)" in text, text
                    assert "destination county (sparkplug-b)" in text, text
                    assert wait_for(lambda: len(host.all_seqs()) >= 10, 30), host.types
                    county.stop()
                    wait_status(agent, lambda d: not d["destinations"]["county"]["connected"], 15)
                    # the factory stays live while the county is away
                    before = checker.count()
                    assert checker.wait_for_count(before + 30, timeout=15)
                    doc = agent.status()
                    assert doc["destinations"]["county"]["pending_batches"] > 0
                    assert doc["destinations"]["county"]["last_error"]
                    assert doc["destinations"]["mqtt"]["pending_batches"] < 20
                    county.start()
                    wait_status(agent, lambda d: d["destinations"]["county"]["connected"], 30)
                    time.sleep(1)
                    assert agent.stop() == 0, agent.log()[-3000:]
                finally:
                    agent.__exit__(None, None, None)
                on_disk = offline_buffer(agent)
                last = on_disk["last_seq"]
                checker.wait_for_seqs(last, 30, 0)
                report = checker.report(last, 0)
                assert report.problems() == []
            # everything reached the county too, after its outage, in order per device
            assert wait_for(lambda: host.all_seqs() >= set(range(1, last + 1)), 30), sorted(
                set(range(1, last + 1)) - host.all_seqs()
            )[:20]
            with host.lock:
                for device, seqs in host.seqs.items():
                    firsts = list(dict.fromkeys(seqs))  # a resend may repeat the tail
                    assert firsts == sorted(firsts), device
            assert "NBIRTH" in host.types
            assert "DBIRTH" in host.types
        finally:
            host.close()
