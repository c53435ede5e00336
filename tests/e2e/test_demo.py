"""The demo, as a user runs it: every machine of the sample factory reaches the broker."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from tests.support.agentproc import ROOT
from tests.support.mosquitto import Mosquitto, Subscriber

DEVICES = {
    "press-motor-1",
    "saw-motor-2",
    "main-meter",
    "spindle-motor-3",
    "packaging-line",
    "torque-tool",
    "office-meter",
}


def _demo(tmp_path: Path, port: int, seconds: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "agent",
            "demo",
            "--duration",
            str(seconds),
            "--broker",
            f"127.0.0.1:{port}",
            "--data-dir",
            str(tmp_path / "demo"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={
            "RUNTIME_DIRECTORY": str(tmp_path / "run"),
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp_path),
            "COLUMNS": "160",
        },
    )


def test_demo_publishes_every_machine_of_the_sample_factory(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    with Subscriber(mosquitto.port, "edge/#") as sub:
        done = _demo(tmp_path, mosquitto.port, 10)
        assert done.returncode == 0, done.stdout + done.stderr
        messages = [json.loads(m.payload) for m in sub.messages if not m.topic.endswith("status")]
    readings = [m for m in messages if m.get("kind") != "events"]
    seen = {m["device"] for m in readings if any(r["values"] for r in m["readings"])}
    assert seen == DEVICES, f"missing: {DEVICES - seen}\n{done.stdout[-3000:]}"
    # the machines of the sample factory: a state for each that has one, a running figure
    events = [e | {"source": m["source"]} for m in messages if m.get("kind") == "events"
              for e in m["events"]]  # fmt: skip
    states = {e["source"] for e in events if e["type"] == "state"}
    assert states == {"press-1", "packer"}, states
    assert {e["source"] for e in events if e["type"] == "shift"} >= {"packer", "assembly"}
    seqs = sorted({m["seq"] for m in messages})
    assert seqs == list(range(1, len(seqs) + 1)), "contiguous seq from the demo's fresh buffer"
    assert "demo stopped" in done.stdout
    assert "pieces (good / reject)" in done.stdout, "the live table shows the machines"


def test_demo_files_are_private_and_it_warns_of_nothing(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    old = os.umask(0o022)  # the usual umask: new files readable by every user
    try:
        done = _demo(tmp_path, mosquitto.port, 3)
    finally:
        os.umask(old)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "readable by" not in done.stderr + done.stdout
    demo = tmp_path / "demo"
    assert stat.S_IMODE(demo.stat().st_mode) == 0o700
    assert stat.S_IMODE((demo / "demo-site.yaml").stat().st_mode) == 0o600
