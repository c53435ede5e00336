"""The benchmark's MQTT consumer, run as its own process::

    python -m bench.subscriber --port 1883 --out received.json

It subscribes to ``edge/#`` at QoS 1, prints ``ready`` once the broker granted
the subscription, and records for each data message the receive time (epoch
ms, float), ``seq``, the number of values and each reading's ``ts``. On
SIGTERM it writes ``{"messages": [[recv_ms, seq, n_values, [ts, ...]], ...]}``
to ``--out`` and exits. Status messages (``.../status``) are only counted.

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
            readings = doc["readings"]
            n_values = sum(len(r["values"]) for r in readings)
            self.messages.append((now, int(doc["seq"]), n_values, [r["ts"] for r in readings]))
        except (orjson.JSONDecodeError, KeyError, TypeError):
            self.bad += 1


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m bench.subscriber``."""
    parser = argparse.ArgumentParser(prog="python -m bench.subscriber")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--topic", default="edge/#")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    rec = Recorder(args.topic)
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
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
