"""Secrets never show: in the log, ``status``, ``validate``, ``read``, ``config show``...

The agent runs with a broker password from ``${ENV}`` or from ``password_file``
against a broker that refuses it, and an OPC UA device whose password is
written in the site file. Everything any command prints is collected and
searched for each secret. The log runs at debug level, where most is said.
"""

from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from simulators.run import SimDevice
from tests.security.support import start_agent, wait_until
from tests.support.agentproc import AgentProcess, counter_device, site_dict
from tests.support.mosquitto import Mosquitto
from tests.support.simthread import SimThread

AGENT = "secret-box"
MQTT_SECRET = "Mq77-s3cr3t-never-shown"
OPCUA_SECRET = "Opc-UA-l1teral-pw-x9"
ENV_NAME = "EDGE_TEST_MQTT_SECRET"


def _site(tmp_path: Path, broker: Mosquitto, sim_port: int, source: str) -> dict[str, Any]:
    mqtt: dict[str, Any] = {"username": "box"}
    if source == "env":
        mqtt["password"] = f"${{{ENV_NAME}}}"
    else:
        secret_file = tmp_path / "mqtt-password"
        secret_file.write_text(MQTT_SECRET + "\n", encoding="utf-8")
        secret_file.chmod(0o600)
        mqtt["password_file"] = str(secret_file)
    opcua = {
        "id": "line",
        "connection": {
            "opcua": {
                "endpoint": "opc.tcp://127.0.0.1:1",  # nothing listens: errors get logged
                "username": "operator",
                "password": OPCUA_SECRET,
                "timeout": "1s",
            }
        },
        "tags": {"speed": {"node": "ns=2;s=Line1.Speed", "type": "float"}},
    }
    site = site_dict(AGENT, broker.port, [counter_device("c1", sim_port), opcua], mqtt=mqtt)
    site["agent"]["log_level"] = "debug"
    return site


def _outputs(agent: AgentProcess, broken_site: Path) -> dict[str, subprocess.CompletedProcess[str]]:
    """Every command a person would run on the box, while the agent runs."""
    site = str(agent.site_file)
    commands = {
        "status": ("status",),
        "status --json": ("status", "--json"),
        "status -c --json": ("status", "-c", site, "--json"),
        "validate": ("validate", "-c", site),
        "validate (invalid file)": ("validate", "-c", str(broken_site)),
        "read": ("read", "-c", site, "c1"),
        "read (unreachable device)": ("read", "-c", site, "line"),
        "doctor": ("doctor", "-c", site, "--timeout", "2"),
        "buffer stats": ("buffer", "stats", "-c", site),
        "config show": ("config", "show", "-c", site),
    }
    with ThreadPoolExecutor(4) as pool:
        done = {name: pool.submit(agent.command, *args) for name, args in commands.items()}
        return {name: future.result() for name, future in done.items()}


def _broken_copy(agent: AgentProcess) -> Path:
    """The site file made invalid so that the error quotes the whole mqtt section."""
    data = yaml.safe_load(agent.site_file.read_text(encoding="utf-8"))
    data["mqtt"]["password"] = f"${{{ENV_NAME}}}"
    data["mqtt"]["password_file"] = "elsewhere"
    broken = agent.workdir / "broken.yaml"
    broken.write_text(yaml.safe_dump(data), encoding="utf-8")
    return broken


@pytest.mark.parametrize("source", ["env", "file"])
def test_no_output_shows_a_secret(tmp_path: Path, source: str) -> None:
    broker = Mosquitto(tmp_path / "broker", users={"box": "the-right-password"})
    broker.start()
    try:
        with SimThread([SimDevice("c1", "counter")]) as sims:
            site = _site(tmp_path, broker, sims.ports["c1"], source)
            agent = start_agent(tmp_path / "agent", site, {ENV_NAME: MQTT_SECRET})
            try:
                doc = wait_until(
                    lambda: (
                        (d := agent.status())["broker"]["last_error"]
                        and d["devices"]["line"]["last_error"]
                        and d
                    ),
                    30,
                    "the broker and the OPC UA device fail",
                )
                outputs = _outputs(agent, _broken_copy(agent))
                if source == "env":  # the stop path logs too
                    assert agent.stop() == 0
                else:  # spare the drain time a clean stop waits for the refusing broker
                    agent.kill()
            finally:
                agent.__exit__(None, None, None)
    finally:
        broker.stop()
    # the secrets were really used and refused, and every command said something
    assert "password" in doc["broker"]["last_error"]
    assert json.loads(outputs["status --json"].stdout)["broker"]["last_error"]
    assert "give password or password_file" in outputs["validate (invalid file)"].stderr
    assert "valid" in outputs["validate"].stdout
    assert "c1" in outputs["read"].stdout
    assert "broker" in outputs["doctor"].stdout
    assert "password" in outputs["config show"].stdout
    texts = {"agent log": agent.log(), "status document": json.dumps(doc)}
    texts |= {f"{k} (stdout)": v.stdout for k, v in outputs.items()}
    texts |= {f"{k} (stderr)": v.stderr for k, v in outputs.items()}
    assert "not authorised" in texts["agent log"]
    for name, text in texts.items():
        for secret in (MQTT_SECRET, OPCUA_SECRET):
            assert secret not in text, f"{name} shows a secret:\n{text}"
