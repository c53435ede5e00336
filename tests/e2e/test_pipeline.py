"""End to end: simulators on real sockets, the agent as a real process, a real Mosquitto.

These prove the core guarantees of the README on the whole pipeline: values
arrive on the right tags, a broker outage loses nothing, SIGKILL loses nothing
committed, SIGTERM flushes and exits 0.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from simulators.counter import CounterModel
from simulators.run import SimDevice
from tests.support.agentproc import ROOT, AgentProcess, counter_device, site_dict
from tests.support.mosquitto import Mosquitto, Received, Subscriber
from tests.support.simthread import SimThread

AGENT = "e2e-box"
HEAVY_PROBE = """
import sys
from agent.cli.main import main
try:
    main(sys.argv[1:])
except SystemExit:
    print("HEAVY", sorted(m for m in ("rich", "typer", "pydantic") if m in sys.modules))
"""


def _messages(received: list[Received]) -> list[dict[str, Any]]:
    return [json.loads(m.payload) for m in received if not m.topic.endswith("/status")]


def _seqs(received: list[Received]) -> list[int]:
    return [m["seq"] for m in _messages(received)]


def _contiguous_upto(last: int) -> Any:
    def check(received: list[Received]) -> bool:
        return set(range(1, last + 1)) <= set(_seqs(received))

    return check


def _expected_values(sims: SimThread, name: str) -> dict[str, Any]:
    def compute(s: Any) -> dict[str, Any]:
        running = s[name]
        return {t.name: CounterModel.value(t, running.model.tick) for t in running.model.tags}

    return sims.call(compute)


def test_published_values_equal_what_the_simulator_serves(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    specs = [SimDevice("c1", "counter"), SimDevice("c2", "counter", seed=5)]
    with (
        SimThread(specs, step_interval=None) as sims,
        Subscriber(mosquitto.port, f"edge/{AGENT}/#") as sub,
    ):
        devices = [counter_device("c1", sims.ports["c1"]), counter_device("c2", sims.ports["c2"])]
        with AgentProcess(tmp_path, site_dict(AGENT, mosquitto.port, devices)):
            first = _expected_values(sims, "c1")
            sub.wait_for(lambda r: {m["device"] for m in _messages(r)} >= {"c1", "c2"})
            sims.call(lambda s: s.step(0.1))
            second = _expected_values(sims, "c1")
            assert first != second
            got = sub.wait_for(
                lambda r: any(
                    m["device"] == "c1" and m["readings"][0]["values"] == second
                    for m in _messages(r)
                )
            )
    c1 = [m for m in _messages(got) if m["device"] == "c1"]
    assert c1[0]["readings"][0]["values"] == first
    assert all(m["agent"] == AGENT and m["v"] == 1 for m in c1)
    for message in c1:
        values = message["readings"][0]["values"]
        assert values in (first, second), "a value the simulator never served"
        assert all(int(v) % 1000 == int(k[1:]) for k, v in values.items()), "value on wrong tag"
    topics = {m.topic for m in got}
    assert f"edge/{AGENT}/c1" in topics
    assert f"edge/{AGENT}/c2" in topics


def test_broker_outage_loses_nothing_and_keeps_order(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "broker", persistence=True)
    broker.start()
    try:
        with (
            SimThread([SimDevice("c1", "counter"), SimDevice("c2", "counter")]) as sims,
            Subscriber(broker.port, f"edge/{AGENT}/#", session="checker") as sub,
        ):
            devices = [counter_device(n, sims.ports[n], "100ms") for n in ("c1", "c2")]
            with AgentProcess(tmp_path / "agent", site_dict(AGENT, broker.port, devices)) as agent:
                sub.wait_for(lambda r: len(_seqs(r)) >= 10)
                broker.stop()
                time.sleep(4)
                pending = agent.status()["buffer"]["pending_batches"]
                assert pending > 0, "the buffer must absorb the outage"
                broker.start()
                time.sleep(3)
                last = agent.status()["buffer"]["last_seq"]
                got = sub.wait_for(_contiguous_upto(last), timeout=60)
                assert agent.stop() == 0
    finally:
        broker.stop()
    messages = _messages(got)
    seqs = [m["seq"] for m in messages]
    assert set(range(1, last + 1)) <= set(seqs), "a seq went missing"
    for device in ("c1", "c2"):
        per_device = [m["seq"] for m in messages if m["device"] == device]
        firsts = list(dict.fromkeys(per_device))  # first arrival of each seq
        assert firsts == sorted(firsts), f"{device}: order broken"
        ts = [m["readings"][0]["ts"] for m in messages if m["device"] == device]
        first_ts = list(dict.fromkeys(ts))
        assert first_ts == sorted(first_ts)


def test_sigkill_loses_nothing_committed(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "broker")
    with SimThread([SimDevice("c1", "counter")]) as sims:
        devices = [counter_device("c1", sims.ports["c1"], "100ms")]
        site = site_dict(AGENT, broker.port, devices)  # broker not started: all is buffered
        agent = AgentProcess(tmp_path / "agent", site).start()
        try:
            time.sleep(3)
            before_kill = agent.status()["buffer"]["last_seq"]
            agent.kill()
        finally:
            agent.__exit__(None, None, None)
        assert before_kill > 5
        offline = agent.command("status", "-c", str(agent.site_file), "--json")
        assert offline.returncode == 1, offline.stderr
        on_disk = json.loads(offline.stdout)["agents"][0]["buffer"]
        assert on_disk["last_seq"] >= before_kill
        assert on_disk["pending_batches"] == on_disk["last_seq"]
        broker.start()
        try:
            with Subscriber(broker.port, f"edge/{AGENT}/#") as sub, agent:
                got = sub.wait_for(_contiguous_upto(on_disk["last_seq"] + 5), timeout=60)
        finally:
            broker.stop()
    seqs = _seqs(got)
    assert set(range(1, on_disk["last_seq"] + 6)) <= set(seqs)
    assert len(seqs) == len(set(seqs)), "no duplicates expected without a broker fault"


def test_sigterm_flushes_and_exits_zero(tmp_path: Path, mosquitto: Mosquitto) -> None:
    with (
        SimThread([SimDevice("c1", "counter")]) as sims,
        Subscriber(mosquitto.port, f"edge/{AGENT}/#") as sub,
    ):
        site = site_dict(AGENT, mosquitto.port, [counter_device("c1", sims.ports["c1"], "100ms")])
        agent = AgentProcess(tmp_path, site).start()
        try:
            sub.wait_for(lambda r: len(_seqs(r)) >= 5)
            assert agent.stop() == 0
        finally:
            agent.__exit__(None, None, None)
        offline = json.loads(agent.command("status", "-c", str(agent.site_file), "--json").stdout)
        last = offline["agents"][0]["buffer"]["last_seq"]
        assert offline["agents"][0]["buffer"]["pending_batches"] == 0
        got = sub.wait_for(_contiguous_upto(last))
        status = [m for m in got if m.topic.endswith("/status")]
        assert json.loads(status[-1].payload)["state"] == "offline"


def test_status_of_a_running_agent(tmp_path: Path, mosquitto: Mosquitto) -> None:
    with SimThread([SimDevice("c1", "counter")]) as sims:
        devices = [
            counter_device("c1", sims.ports["c1"]),
            counter_device("dead", sims.ports["c1"] + 0),
        ]
        devices[1]["connection"]["modbus_tcp"]["port"] = 1  # nothing listens on port 1
        with AgentProcess(tmp_path, site_dict(AGENT, mosquitto.port, devices)) as agent:
            deadline = time.monotonic() + 20
            doc = agent.status()
            while doc["devices"]["c1"]["polls_ok"] < 3 and time.monotonic() < deadline:
                time.sleep(0.2)
                doc = agent.status()
            shown = agent.command("status", "--json")
            table = agent.command("status")
            probe = subprocess.run(
                [sys.executable, "-c", HEAVY_PROBE, "status"],
                env=agent.env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
    assert doc["agent"]["id"] == AGENT
    assert doc["devices"]["c1"]["state"] == "connected"
    assert doc["devices"]["dead"]["state"] in ("backoff", "connecting")
    assert doc["devices"]["dead"]["last_error"]
    assert doc["broker"]["connected"] is True
    assert {"pending_batches", "pending_bytes", "oldest_pending_age_s", "dropped_batches"} <= set(
        doc["buffer"]
    )
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["agent"]["id"] == AGENT
    assert table.returncode == 0, table.stderr
    assert "c1" in table.stdout
    assert "dead" in table.stdout
    # where each device is reached, in the document and in the table
    endpoint = f"modbus_tcp 127.0.0.1:{sims.ports['c1']} unit 1"
    assert doc["devices"]["c1"]["endpoint"] == endpoint
    assert doc["devices"]["dead"]["endpoint"] == "modbus_tcp 127.0.0.1:1 unit 1"
    assert endpoint in table.stdout
    # status must answer fast (bench S6): the table needs neither rich nor pydantic
    assert probe.stdout.endswith("HEAVY []\n"), probe.stdout + probe.stderr
    assert "127.0.0.1:1 unit 1" in table.stdout
