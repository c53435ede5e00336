"""The demo in Sparkplug B and edge-json at once, as a Sparkplug host application sees it.

``edge-agent demo --dialect sparkplug-b --also edge-json`` runs as a user runs
it, against a real Mosquitto. A subscriber records every Sparkplug message
while the test plays the host: once every machine has sent data it asks for
a rebirth (an NCMD built with the project's protobuf module), and the demo's
``--outage`` silences one Modbus machine for a few seconds. Then every
recorded payload goes through Eclipse Tahu's decoder and through the
spec-written host of ``tests/agent/north/sparkplug/host.py``, in order.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from agent.north.sparkplug import sparkplug_b_pb2 as pb
from agent.north.sparkplug.encode import EDGE_SEQ
from tests.agent.north.sparkplug.host import Host
from tests.e2e.test_demo import DEVICES
from tests.support.agentproc import ROOT
from tests.support.mosquitto import Mosquitto, Received, Subscriber
from tests.support.tahu import Decode

NODE = "demo-garden-tools-sample-box1"
GROUP = "demo"
MACHINES = {"press-1", "packer", "assembly"}
SILENCED = "saw-motor-2"
OUTAGE = f"{SILENCED}=8+4"  # silent 8 s after the start, for 4 s
CEILING_S = 60  # --duration: the demo stops by itself at the latest then


def _parts(message: Received) -> tuple[str, str | None]:
    """The message type and the device (None for a node message)."""
    parts = message.topic.split("/")
    return parts[2], parts[4] if len(parts) == 5 else None


EDGE_NODE_KINDS = {"NBIRTH", "NDATA", "NDEATH", "DBIRTH", "DDATA", "DDEATH"}


def _from_edge_node(messages: list[Received]) -> list[Received]:
    """What the demo's Edge Node published (not the host's own NCMD)."""
    return [m for m in messages if m.topic.startswith(f"spBv1.0/{GROUP}/")
            and _parts(m)[0] in EDGE_NODE_KINDS]  # fmt: skip


def _kinds(messages: list[Received], kind: str, device: str | None = None) -> list[int]:
    """Indexes of the messages of ``kind`` (for ``device``, if given)."""
    return [
        i
        for i, m in enumerate(messages)
        if _parts(m)[0] == kind and (device is None or _parts(m)[1] == device)
    ]


def _payload(data: bytes) -> pb.Payload:
    payload = pb.Payload()
    payload.ParseFromString(data)
    return payload


def _bd_seq(data: bytes) -> int:
    (value,) = [m.long_value for m in _payload(data).metrics if m.name == "bdSeq"]
    return value


def _came_back(messages: list[Received]) -> bool:
    """The silenced machine had its DDEATH, then a DBIRTH and data again."""
    deaths = _kinds(messages, "DDEATH", SILENCED)
    if not deaths:
        return False
    births = [i for i in _kinds(messages, "DBIRTH", SILENCED) if i > deaths[-1]]
    return bool(births) and any(i > births[0] for i in _kinds(messages, "DDATA", SILENCED))


def _rebirth_request() -> bytes:
    payload = pb.Payload(timestamp=1)
    payload.metrics.add(name="Node Control/Rebirth", datatype=pb.Boolean, boolean_value=True)
    return payload.SerializeToString()


def _send_ncmd(port: int) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="demo-test-host")
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        sent = client.publish(f"spBv1.0/{GROUP}/NCMD/{NODE}", _rebirth_request(), qos=1)
        sent.wait_for_publish(timeout=10)
        assert sent.is_published()
    finally:
        client.disconnect()
        client.loop_stop()


def _same_as_tahu(ours: pb.Payload, tahu: dict[str, Any], topic: str) -> None:
    """Seq, and each metric's name, alias, datatype and null flag, as Tahu read them.

    Doubles, booleans and strings are compared by value too (Tahu gives the
    integers in forms of its own; the unit tests compare those).
    """
    assert tahu.get("seq") == (str(ours.seq) if ours.HasField("seq") else None), topic
    assert len(tahu.get("metrics", [])) == len(ours.metrics), topic
    for mine, theirs in zip(ours.metrics, tahu.get("metrics", []), strict=True):
        where = (topic, theirs)
        assert theirs.get("name") == (mine.name or None), where
        assert theirs.get("alias") == (str(mine.alias) if mine.HasField("alias") else None), where
        if mine.datatype:
            assert theirs["type"] == pb.DataType.Name(mine.datatype), where
        assert (theirs.get("value") is None) == mine.is_null, where
        kind = mine.WhichOneof("value")
        if not mine.is_null and kind in ("double_value", "boolean_value", "string_value"):
            assert theirs["value"] == getattr(mine, kind), where


def _run_demo(tmp_path: Path, port: int, spark: Subscriber) -> tuple[int, str]:
    """Run the demo while playing the host; its exit code and output."""
    out = tmp_path / "demo.out"
    args = [
        sys.executable, "-m", "agent", "demo", "--broker", f"127.0.0.1:{port}",
        "--dialect", "sparkplug-b", "--also", "edge-json", "--outage", OUTAGE,
        "--duration", str(CEILING_S), "--data-dir", str(tmp_path / "demo"),
    ]  # fmt: skip
    env = {"RUNTIME_DIRECTORY": str(tmp_path / "run"), "PATH": "/usr/bin:/bin",
           "HOME": str(tmp_path), "COLUMNS": "160"}  # fmt: skip
    with out.open("w") as sink:
        demo = subprocess.Popen(args, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT, env=env)
        try:
            # every machine born and sending: the host asks for a rebirth
            spark.wait_for(
                lambda ms: {_parts(m)[1] for m in ms if _parts(m)[0] == "DDATA"} >= DEVICES,
                timeout=40,
            )
            _send_ncmd(port)
            spark.wait_for(lambda ms: len(_kinds(ms, "NBIRTH")) >= 2, timeout=15)
            spark.wait_for(_came_back, timeout=40)
            demo.send_signal(signal.SIGTERM)  # a clean stop: the NDEATH of this connection
            code = demo.wait(timeout=30)
        finally:
            if demo.poll() is None:
                demo.kill()
                demo.wait()
    return code, out.read_text(encoding="utf-8", errors="replace")


def test_a_sparkplug_demo_run_is_accepted_by_tahu_and_a_spec_written_host(
    tmp_path: Path, mosquitto: Mosquitto, tahu_decode: Decode
) -> None:
    with (
        Subscriber(mosquitto.port, "spBv1.0/#") as spark,
        Subscriber(mosquitto.port, "edge/#") as edge,
    ):
        code, output = _run_demo(tmp_path, mosquitto.port, spark)
        spark.wait_for(lambda ms: _parts(ms[-1])[0] == "NDEATH", timeout=10)
        messages = _from_edge_node(spark.messages)
        edge_json = [json.loads(m.payload) for m in edge.messages if "status" not in m.topic]
    assert code == 0, output[-3000:]
    # the start says how to watch each destination
    assert f"edge-agent listen --broker 127.0.0.1:{mosquitto.port} --dialect sparkplug-b" in output
    assert f"edge-agent listen --broker 127.0.0.1:{mosquitto.port}\n" in output

    # Tahu decodes every payload and reads what the project's schema reads
    decoded = tahu_decode([m.payload for m in messages])
    assert len(decoded) == len(messages)
    for message, tahu in zip(messages, decoded, strict=True):
        _same_as_tahu(_payload(message.payload), tahu, message.topic)

    # the host takes the whole sequence (it raises RebirthNeeded on any fault)
    host, key = Host(), (GROUP, NODE)
    nbirths = _kinds(messages, "NBIRTH")
    assert nbirths[0] == 0, "NBIRTH first"
    assert len(nbirths) == 2, "the connection's birth and the rebirth, no other"
    first_bd = _bd_seq(messages[0].payload)
    assert first_bd == 0, "the demo's fresh data dir: the first bdSeq"
    born_before_rebirth: set[str] = set()
    for index, message in enumerate(messages):
        if index == nbirths[1]:
            born_before_rebirth = set(host.nodes[key].devices)
        host.receive(message.topic, message.payload)
    assert host.nodes[key].online is False, "a clean stop ends with this session's NDEATH"

    # the rebirth: NBIRTH with the same bdSeq, seq 0, then a DBIRTH of every live device
    rebirth = messages[nbirths[1]]
    assert _bd_seq(rebirth.payload) == first_bd
    assert _payload(rebirth.payload).seq == 0
    after = messages[nbirths[1] + 1 :]
    first_data = next(i for i, m in enumerate(after) if _parts(m)[0] == "DDATA")
    reborn = {_parts(m)[1] for m in after[:first_data] if _parts(m)[0] == "DBIRTH"}
    assert born_before_rebirth >= DEVICES - {SILENCED}
    assert reborn == born_before_rebirth

    # the outage: DDEATH, no data while gone, DBIRTH when it answers again
    (death,) = _kinds(messages, "DDEATH", SILENCED)
    back = min(i for i in _kinds(messages, "DBIRTH", SILENCED) if i > death)
    assert not [i for i in _kinds(messages, "DDATA", SILENCED) if death < i < back]
    assert _kinds(messages, "DDEATH") == [death], "only the silenced machine died"

    # each destination's buffer seqs run without a gap
    seq_alias = {
        _parts(msg)[1]: m.alias
        for msg in messages
        if _parts(msg)[0] == "DBIRTH"
        for m in _payload(msg.payload).metrics
        if m.name == EDGE_SEQ
    }
    ours = {
        m.long_value
        for msg in messages
        if _parts(msg)[0] == "DDATA"
        for m in _payload(msg.payload).metrics
        if m.alias == seq_alias[_parts(msg)[1]]
    }
    theirs = {m["seq"] for m in edge_json}
    assert theirs == set(range(1, max(theirs) + 1)), "edge-json: contiguous seq"
    readings = [m for m in edge_json if m.get("kind") != "events"]
    assert {m["device"] for m in readings} == DEVICES
    # the machines' facts share the seq; the box's own (clock) go as NDATA, no edge/seq
    box = {m["seq"] for m in edge_json if m.get("kind") == "events" and m["source"] == "_box"}
    assert {m["source"] for m in edge_json if m.get("kind") == "events"} - {"_box"} == MACHINES
    # the reading of the failure goes as edge-json; in Sparkplug its DDEATH stands for it
    (failure,) = [
        m["seq"]
        for m in readings
        if m["device"] == SILENCED and not any(r["values"] for r in m["readings"])
    ]
    expected = set(range(1, max(ours) + 1)) - {failure} - box
    assert ours == expected, "Sparkplug edge/seq: contiguous"
    assert host.values[(SILENCED, EDGE_SEQ)] > failure, "data again after the outage"
