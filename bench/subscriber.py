"""The benchmark's MQTT consumer, run as its own process::

    python -m bench.subscriber --port 1883 --out received.json
    python -m bench.subscriber --port 1884 --out sp.json --dialect sparkplug-b --client-id host

It subscribes at QoS 1 (``edge/#``, or ``spBv1.0/#`` for Sparkplug B), prints
``ready`` once the broker granted the subscription, and records for each data
message the receive time (epoch ms, float), the buffer ``seq``, the number of
values and each reading's ``ts``. On SIGTERM it writes
``{"messages": [[recv_ms, seq, n_values, [ts, ...]], ...]}`` to ``--out`` and
exits. Status messages (``.../status``) are only counted; an events message
(machine facts, S12/S13) is recorded with its seq and no values.

Sparkplug B: only DDATA is recorded; the seq is its ``edge/seq`` metric (its
alias learned from the DBIRTH), the values are the other metrics and the
``ts`` are their distinct metric timestamps (one per reading, as in
edge-json). Births and deaths are counted. With ``--client-id`` the session is
persistent (clean session off), so a broker that restarts with persistence
keeps what was published for it meanwhile; paho reconnects every 50 ms.

Latency is computed by the caller as receive time minus ``ts``: the broker
and this process share the machine's clock, and the broker hands a message on
within microseconds on loopback, so this stands for the broker's receive time.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from agent.north.sparkplug import sparkplug_b_pb2 as pb
from agent.north.sparkplug.encode import EDGE_SEQ

DEFAULT_TOPICS = {"edge-json": "edge/#", "sparkplug-b": "spBv1.0/#"}


class Recorder:
    """paho callbacks that record what arrives (they run on paho's network thread)."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.messages: list[tuple[float, int, int, list[int]]] = []
        self.status_messages = 0
        self.bad = 0
        self.subscribed = threading.Event()

    def on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any
    ) -> None:
        if not rc.is_failure:
            client.subscribe(self.topic, qos=1)

    def on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, rcs: Any, props: Any
    ) -> None:
        self.subscribed.set()

    def on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        now = time.time_ns() / 1e6
        if msg.topic.endswith("/status"):
            self.status_messages += 1
            return
        try:
            doc = orjson.loads(msg.payload)
            if doc.get("kind") == "events":  # machine facts: a seq of the one sequence
                self.messages.append((now, int(doc["seq"]), 0, []))
                return
            readings = doc["readings"]
            n_values = sum(len(r["values"]) for r in readings)
            self.messages.append((now, int(doc["seq"]), n_values, [r["ts"] for r in readings]))
        except (orjson.JSONDecodeError, KeyError, TypeError):
            self.bad += 1


class SparkplugRecorder(Recorder):
    """DDATA by ``edge/seq``; births, deaths and anything else are only counted."""

    def __init__(self, topic: str) -> None:
        super().__init__(topic)
        self.seq_alias: dict[str, int] = {}  # device -> alias of its edge/seq metric
        self.births = 0

    def on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        now = time.time_ns() / 1e6
        parts = msg.topic.split("/")
        kind = parts[2] if len(parts) > 2 else ""
        if kind not in ("DBIRTH", "DDATA"):
            self.status_messages += 1
            return
        payload = pb.Payload()
        try:
            payload.ParseFromString(bytes(msg.payload))
        except Exception:  # protobuf's DecodeError: a message the bench cannot read
            self.bad += 1
            return
        device = parts[4]
        if kind == "DBIRTH":
            self.births += 1
            for m in payload.metrics:
                if m.name == EDGE_SEQ:
                    self.seq_alias[device] = m.alias
            return
        alias = self.seq_alias.get(device)
        seq = None
        stamps: set[int] = set()
        n_values = 0
        for m in payload.metrics:
            if m.alias == alias or m.name == EDGE_SEQ:
                seq = m.long_value
            else:
                n_values += 1
                stamps.add(m.timestamp)
        if seq is None:
            self.bad += 1
            return
        self.messages.append((now, seq, n_values, sorted(stamps)))


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m bench.subscriber``."""
    parser = argparse.ArgumentParser(prog="python -m bench.subscriber")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dialect", choices=sorted(DEFAULT_TOPICS), default="edge-json")
    parser.add_argument("--topic", default=None, help="default: edge/# or spBv1.0/#")
    parser.add_argument("--client-id", default=None, help="a persistent session of this id")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    topic = args.topic or DEFAULT_TOPICS[args.dialect]
    rec = SparkplugRecorder(topic) if args.dialect == "sparkplug-b" else Recorder(topic)
    if args.client_id:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=args.client_id,
                             clean_session=False)  # fmt: skip
    else:
        client = mqtt.Client(CallbackAPIVersion.VERSION2)
    # paho takes float seconds: a broker back from an outage sees this session within
    # 50 ms, before the agent's reconnect (its backoff is in whole seconds)
    client.reconnect_delay_set(0.05, 0.05)  # type: ignore[arg-type]
    client.on_connect = rec.on_connect
    client.on_subscribe = rec.on_subscribe
    client.on_message = rec.on_message
    client.connect("127.0.0.1", args.port, keepalive=30)
    client.loop_start()
    if not rec.subscribed.wait(10):
        print("no SUBACK within 10 s", file=sys.stderr)
        return 1
    print("ready", flush=True)
    while not stop.wait(0.2):
        pass
    client.disconnect()
    client.loop_stop()
    out = {"messages": rec.messages, "status_messages": rec.status_messages, "bad": rec.bad}
    args.out.write_bytes(orjson.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
