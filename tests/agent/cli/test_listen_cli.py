"""``edge-agent listen`` as a real process against a real Mosquitto."""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from agent.message import encode_message
from agent.north.sparkplug.encode import EdgeSession, TagSpec
from drivers.base import Reading
from tests.support.agentproc import ROOT
from tests.support.mosquitto import HOST, Mosquitto, free_port

TS = 1_764_270_000_123


def _start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "agent", "listen", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", "listen", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _wait_listening(proc: subprocess.Popen[str]) -> str:
    """The stderr line saying the subscriptions are in place (then nothing sent is missed)."""
    assert proc.stderr is not None
    return _line(proc, proc.stderr, "listening on ")


def _line(proc: subprocess.Popen[str], stream: IO[str], prefix: str, timeout: float = 30) -> str:
    """The first line of ``stream`` starting with ``prefix`` ("" at the end of the stream)."""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(stream, selectors.EVENT_READ)
        while (left := deadline - time.monotonic()) > 0:
            if sel.select(left):
                line = stream.readline()
                if line.startswith(prefix) or not line:
                    return line
    proc.kill()
    raise TimeoutError(f"edge-agent listen printed no line starting with {prefix!r}")


def _publish(port: int, messages: list[tuple[str, bytes]]) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-publisher")
    client.connect(HOST, port)
    client.loop_start()
    try:
        for topic, payload in messages:
            client.publish(topic, payload, qos=1).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


def _finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, err


def _sparkplug() -> list[tuple[str, bytes]]:
    s = EdgeSession("plant", "box")
    s.will(TS)
    out = [s.nbirth(TS), s.dbirth("motor-01", [TagSpec("speed_rpm", "Int32")], TS)]
    out.append(s.ddata("motor-01", [Reading(TS, {"speed_rpm": 1480})], TS, 41))
    out.append(s.ddata("motor-01", [Reading(TS + 1, {"speed_rpm": 1490})], TS, 43))  # 42 lost
    return [(o.topic, o.payload) for o in out]


def test_sparkplug_names_and_the_gap_in_text(mosquitto: Mosquitto) -> None:
    proc = _start("--broker", f"{HOST}:{mosquitto.port}", "--dialect", "sparkplug-b",
                  "--count", "4", "--timeout", "30")  # fmt: skip
    ready = _wait_listening(proc)
    assert ready == f"listening on {HOST}:{mosquitto.port}: spBv1.0/# (sparkplug-b)\n"
    _publish(mosquitto.port, _sparkplug())
    code, out, err = _finish(proc)
    assert code == 0, err
    lines = [line.split("  ", 1)[1] for line in out.splitlines() if not line.startswith(("-", " "))]
    assert lines[2:] == [
        "spBv1.0/plant/DDATA/box/motor-01  DDATA plant/box/motor-01 seq=2 edge/seq=41 "
        "speed_rpm=1480",
        "spBv1.0/plant/DDATA/box/motor-01  DDATA plant/box/motor-01 seq=3 edge/seq=43 "
        "speed_rpm=1490",
        "WARNING  plant/box/motor-01: gap: seq 42 missing (1 batch)",
    ]
    summary = [line for line in out.splitlines() if line.startswith(("-", " "))]
    assert summary[0].startswith("-- 4 messages in ")
    assert summary[0].endswith(" s (count reached)")
    assert summary[1:] == [
        "   plant/box/motor-01: seq 41..43, 1 gap (1 missing), 0 duplicates",
        "   plant/box (Sparkplug seq): 4 messages, 0 gaps, 0 duplicates",
    ]


def test_json_is_one_object_per_line_and_count_stops_it(mosquitto: Mosquitto) -> None:
    proc = _start("--broker", f"{HOST}:{mosquitto.port}", "edge/box/#", "--json",
                  "--count", "2", "--timeout", "30")  # fmt: skip
    assert _wait_listening(proc).startswith("listening on ")
    messages = [
        ("edge/box/motor-01", encode_message("box", "motor-01", seq, [Reading(TS, {"v": seq})]))
        for seq in (7, 8, 9)
    ]
    _publish(mosquitto.port, messages)
    code, out, err = _finish(proc)
    assert code == 0, err
    objects = [json.loads(line) for line in out.splitlines()]
    assert [o["type"] for o in objects] == ["message", "message", "summary"]
    assert [o["body"]["seq"] for o in objects[:2]] == [7, 8]  # the third is not waited for
    assert objects[0]["body"]["readings"] == [{"ts": TS, "values": {"v": 7}}]
    assert objects[2]["messages"] == 2
    assert objects[2]["stopped"] == "count"


def test_timeout_ends_a_quiet_listen_with_exit_0(mosquitto: Mosquitto) -> None:
    done = _run("--broker", f"{HOST}:{mosquitto.port}", "--timeout", "0.5")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("-- 0 messages in ")
    assert "(timeout)" in done.stdout


def test_an_unreachable_broker_exits_1_with_one_sentence() -> None:
    port = free_port()
    done = _run("--broker", f"{HOST}:{port}", "--timeout", "5")
    assert done.returncode == 1
    assert done.stderr == (
        f"edge-agent: cannot connect to broker {HOST}:{port}: connection refused "
        "(is it running, is the port right?)\n"
    )
    assert done.stdout == ""


def test_bad_input_exits_2() -> None:
    cases = {
        ("--broker", "nohost"): "--broker 'nohost': expected HOST:PORT",
        ("--broker", "h:1", "--count", "0"): "--count takes a number of messages of at least 1",
        ("--broker", "h:1", "--dialect", "opcua"): "--dialect 'opcua': expected one of",
        ("--broker", "h:1", "a/#/b"): "not a topic filter: 'a/#/b'",
        ("--broker", "h:1", "--password-env", "EDGE_TEST_NO_SUCH_VAR"): (
            "--password-env EDGE_TEST_NO_SUCH_VAR: that environment variable is not set"
        ),
    }
    assert "EDGE_TEST_NO_SUCH_VAR" not in os.environ
    for args, expected in cases.items():
        done = _run(*args)
        assert done.returncode == 2, (args, done.stderr)
        assert done.stderr.startswith(f"edge-agent: {expected}"), (args, done.stderr)


def test_the_password_comes_from_the_environment(tmp_path: Path) -> None:
    with Mosquitto(tmp_path / "broker", users={"box": "s3cret-pw"}) as broker:
        base = ("--broker", f"{HOST}:{broker.port}", "--username", "box", "--timeout", "0.3")
        good = _run(*base, "--password-env", "LISTEN_PW", env={"LISTEN_PW": "s3cret-pw"})
        bad = _run(*base, "--password-env", "LISTEN_PW", env={"LISTEN_PW": "wrong"})
    assert good.returncode == 0, good.stderr
    assert bad.returncode == 1
    assert "not authorised (check --username and --password-env)" in bad.stderr
    assert "s3cret-pw" not in good.stderr + good.stdout + bad.stderr + bad.stdout


def test_ctrl_c_ends_with_the_summary_and_exit_0(mosquitto: Mosquitto) -> None:
    proc = _start("--broker", f"{HOST}:{mosquitto.port}")  # no --count, no --timeout
    assert _wait_listening(proc).startswith("listening on ")
    _publish(mosquitto.port, [("edge/box/m", encode_message("box", "m", 1, [Reading(TS, {})]))])
    assert proc.stdout is not None
    assert _line(proc, proc.stdout, "").endswith("  edge/box/m  box/m seq=1 1 reading\n")
    proc.send_signal(signal.SIGINT)
    code, out, err = _finish(proc)
    assert code == 0, err
    assert out.splitlines()[0].startswith("-- 1 message in ")
    assert out.splitlines()[0].endswith("(interrupted)")
