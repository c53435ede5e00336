"""S11: what one Sparkplug B DDATA costs the publisher, in microseconds, in this process.

The publisher's Sparkplug path takes each stored batch (the edge-json payload
the buffer holds), decodes it into readings, and has the session encode the
DDATA. Both steps are timed here on the S1 shape (10 devices, one reading of
``tags`` Int64 values per batch), in runs of ``max_inflight`` batches as the
publisher hands them over, the session born first so only data is measured.
The edge-json path publishes the stored payload as it is: it costs neither.
"""

from __future__ import annotations

import time

from agent.message import decode_message, encode_message
from agent.north.destination import SparkplugOptions
from agent.north.dialects.common import Batch
from agent.north.session import DeviceFacts
from agent.north.sparkplug.encode import TagSpec
from agent.north.sparkplug.session import SparkplugSession
from drivers.base import Reading

Figures = dict[str, float]
RUN = 100  # batches per encode call: the publisher's default window


def _stored(batches: int, devices: int, tags: int) -> list[tuple[int, str, bytes]]:
    out = []
    for seq in range(1, batches + 1):
        device = f"dev-{seq % devices:02d}"
        reading = Reading(1_764_270_000_000 + seq, {f"t{i}": (i + seq) % 1000 for i in range(tags)})
        out.append((seq, device, encode_message("bench-box", device, seq, [reading])))
    return out


def _decode(stored: list[tuple[int, str, bytes]]) -> list[Batch]:
    # as PublishLoop._decode does for each stored payload
    out = []
    for seq, device, payload in stored:
        message = decode_message(payload)
        readings = [Reading(r["ts"], r["values"], r.get("errors", {}), r.get("clock"))
                    for r in message["readings"]]  # fmt: skip
        out.append(Batch(seq, device, readings))
    return out


def encode_cost(batches: int = 5000, devices: int = 10, tags: int = 100,
                repeats: int = 3) -> Figures:  # fmt: skip
    """Best of ``repeats``: µs per value and per DDATA message, decode and encode apart."""
    stored = _stored(batches, devices, tags)
    facts = {
        f"dev-{d:02d}": DeviceFacts(f"dev-{d:02d}", "bench@0",
                                    tags=[TagSpec(f"t{i}") for i in range(tags)])
        for d in range(devices)
    }  # fmt: skip
    best_decode = best_encode = float("inf")
    size = 0
    for _ in range(repeats):
        session = SparkplugSession(SparkplugOptions(group_id="bench", edge_node_id="bench-box"),
                                   "bench-box", facts)  # fmt: skip
        session.will(0)
        session.on_connect(0)
        t0 = time.perf_counter()
        decoded = _decode(stored)
        t1 = time.perf_counter()
        for i in range(0, len(decoded), RUN):
            session.encode(decoded[i : i + RUN], 0, historical=True)  # warm: births out of the way
        t2 = time.perf_counter()
        encoded = [session.encode(decoded[i : i + RUN], 0, historical=True)
                   for i in range(0, len(decoded), RUN)]  # fmt: skip
        t3 = time.perf_counter()
        best_decode = min(best_decode, t1 - t0)
        best_encode = min(best_encode, t3 - t2)
        size = sum(len(p.payload) for e in encoded for p in e.packets)
    values = batches * tags
    return {
        "decode_us_per_value": 1e6 * best_decode / values,
        "encode_us_per_value": 1e6 * best_encode / values,
        "ddata_us_per_message": 1e6 * best_encode / batches,
        "path_us_per_value": 1e6 * (best_decode + best_encode) / values,
        "ddata_bytes_per_value": size / values,
        "ceiling_values_per_s": values / (best_decode + best_encode),
    }
