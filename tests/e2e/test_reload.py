"""SIGHUP: a valid new site applies live, an invalid one is refused, nothing buffered is lost."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import yaml

from simulators.run import SimDevice
from tests.support.agentproc import AgentProcess, counter_device, site_dict
from tests.support.mosquitto import Mosquitto, Received, Subscriber
from tests.support.simthread import SimThread

AGENT = "reload-box"


def _devices_seen(received: list[Received]) -> set[str]:
    return {json.loads(m.payload)["device"] for m in received if not m.topic.endswith("status")}


def _wait_log(agent: AgentProcess, text: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while text not in agent.log():
        assert time.monotonic() < deadline, f"{text!r} not logged:\n{agent.log()}"
        time.sleep(0.1)


def _hup(agent: AgentProcess, site: dict[str, Any] | str) -> None:
    text = site if isinstance(site, str) else yaml.safe_dump(site, sort_keys=False)
    agent.site_file.write_text(text, encoding="utf-8")
    assert agent.proc is not None
    agent.proc.send_signal(signal.SIGHUP)


def test_reload_applies_devices_refuses_bad_files_and_loses_nothing(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    with (
        SimThread([SimDevice("c1", "counter"), SimDevice("c2", "counter")]) as sims,
        Subscriber(mosquitto.port, f"edge/{AGENT}/#") as sub,
    ):
        one = counter_device("c1", sims.ports["c1"], "100ms")
        two = counter_device("c2", sims.ports["c2"], "100ms")
        site = site_dict(AGENT, mosquitto.port, [one])
        with AgentProcess(tmp_path, site) as agent:
            sub.wait_for(lambda r: "c1" in _devices_seen(r))

            _hup(agent, {**site, "devices": [one, two]})  # add a device
            _wait_log(agent, "reloaded")
            sub.wait_for(lambda r: "c2" in _devices_seen(r))

            _hup(agent, "agent: {id: reload-box, colour: red}\n")  # invalid: refused
            _wait_log(agent, "reload refused")
            assert "agent.colour: unknown key" in agent.log()
            before = agent.status()["devices"]["c2"]["polls_ok"]
            time.sleep(1)
            assert agent.status()["devices"]["c2"]["polls_ok"] > before, "still polling"

            bigger = {**site, "devices": [one, two], "buffer": {"max_size": "128MB"}}
            _hup(agent, bigger)  # the buffer cannot change live
            _wait_log(agent, "buffer settings needs a restart")

            _hup(agent, {**site, "devices": [two]})  # remove c1
            deadline = time.monotonic() + 20
            while "c1" in agent.status()["devices"]:
                assert time.monotonic() < deadline
                time.sleep(0.1)
            last = agent.status()["buffer"]["last_seq"]
            assert agent.stop() == 0
        got = sub.wait_for(
            lambda r: (
                {json.loads(m.payload)["seq"] for m in r if not m.topic.endswith("status")}
                >= set(range(1, last + 1))
            )
        )
    seqs = [json.loads(m.payload)["seq"] for m in got if not m.topic.endswith("status")]
    assert set(range(1, last + 1)) <= set(seqs), "a reload lost a batch"
