"""Fleet metrics: the agent's counters as Prometheus text and as a compact JSON summary.

Both are built from one :class:`MetricsState`, a snapshot of the per-device
statistics, the publisher's counters and the buffer's committed state. The
text follows the Prometheus exposition format 0.0.4 (``# HELP`` and ``# TYPE``
lines, escaped label values); metric names follow Prometheus conventions:
``edge_agent_`` prefix, ``_total`` for counters, base units in ``_seconds``
and ``_bytes``. The endpoint serving it and the publishing loop are in
:mod:`agent.runtime.metrics_http`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, get_args

from agent.runtime.stats import State

if TYPE_CHECKING:
    from agent.buffer import BufferStats
    from agent.north.options import PublisherStats
    from agent.runtime.stats import DeviceStats, Histogram

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
STATES: tuple[str, ...] = get_args(State)
SUMMARY_VERSION = 1

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class MetricsState:
    """Everything the metrics show, taken at one moment."""

    agent_id: str
    version: str
    uptime_s: float
    now_ms: int
    devices: Mapping[str, DeviceStats]
    publisher: PublisherStats
    buffer: BufferStats
    publishers: Mapping[str, PublisherStats] = field(default_factory=dict)
    """Every destination's publisher by id (``publisher`` is the first of them)."""


# --------------------------------------------------------------------------- text format


def escape_label(value: str) -> str:
    r"""A label value as the text format wants it: ``\``, ``"`` and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def _sample(name: str, labels: Labels, value: float) -> str:
    if not labels:
        return f"{name} {_number(value)}"
    inner = ",".join(f'{k}="{escape_label(v)}"' for k, v in labels)
    return f"{name}{{{inner}}} {_number(value)}"


class _Family:
    """One metric family: its HELP and TYPE lines, then its samples."""

    def __init__(self, name: str, kind: str, help_text: str) -> None:
        self.name = name
        self.lines = [f"# HELP {name} {_escape_help(help_text)}", f"# TYPE {name} {kind}"]

    def add(self, value: float, labels: Labels = (), suffix: str = "") -> None:
        self.lines.append(_sample(self.name + suffix, labels, value))

    def histogram(self, hist: Histogram, labels: Labels) -> None:
        running = 0
        for bound, count in zip((*hist.bounds, math.inf), hist.counts, strict=True):
            running += count
            self.add(running, (*labels, ("le", _number(float(bound)))), "_bucket")
        self.add(hist.total, labels, "_sum")
        self.add(running, labels, "_count")


def _device_families(devices: Mapping[str, DeviceStats]) -> Iterator[_Family]:
    polls = _Family("edge_agent_device_polls_total", "counter", "Polls per device and result.")
    latency = _Family(
        "edge_agent_device_poll_duration_seconds", "histogram", "Time one read of a device took."
    )
    values = _Family("edge_agent_device_values_read_total", "counter", "Values read per device.")
    overruns = _Family(
        "edge_agent_device_overruns_total", "counter", "Poll ticks skipped because a read ran late."
    )
    reconnects = _Family(
        "edge_agent_device_reconnects_total", "counter", "Reconnect attempts after a failure."
    )
    state = _Family(
        "edge_agent_device_state", "gauge", "1 for the state the device is in, 0 for the others."
    )
    for device, s in devices.items():
        dev: Labels = (("device", device),)
        polls.add(s.polls_ok, (*dev, ("result", "ok")))
        polls.add(s.polls_failed, (*dev, ("result", "failed")))
        latency.histogram(s.poll_seconds, dev)
        values.add(s.values_total, dev)
        overruns.add(s.overruns, dev)
        reconnects.add(s.reconnects, dev)
        for name in STATES:
            state.add(int(s.state == name), (*dev, ("state", name)))
    yield from (polls, latency, values, overruns, reconnects, state)


def _buffer_families(b: BufferStats, now_ms: int) -> Iterator[_Family]:
    age = 0.0 if b.oldest_created_ms is None else max(0.0, (now_ms - b.oldest_created_ms) / 1000)
    rows: list[tuple[str, str, str, float]] = [
        ("pending_batches", "gauge", "Batches committed and not yet acknowledged.",
         b.pending_batches),
        ("pending_bytes", "gauge", "Size of the pending batches.", b.pending_bytes),
        ("oldest_pending_age_seconds", "gauge", "Age of the oldest pending batch (0 if none).",
         age),
        ("dropped_batches_total", "counter", "Batches dropped because the buffer was full.",
         b.dropped_batches),
        ("last_seq", "gauge", "Highest seq committed so far.", b.last_seq),
        ("file_bytes", "gauge", "Size of the buffer file on disk.", b.file_bytes),
        ("max_bytes", "gauge", "The configured size cap of the buffer.", b.max_bytes),
        ("disk_full", "gauge", "1 while the disk under the buffer has no room.",
         int(b.disk_full)),
        ("held_batches", "gauge", "Batches waiting in RAM for a commit (disk full).",
         b.held_batches),
    ]  # fmt: skip
    for name, kind, help_text, value in rows:
        family = _Family(f"edge_agent_buffer_{name}", kind, help_text)
        family.add(value)
        yield family


def _publisher_families(p: PublisherStats) -> Iterator[_Family]:
    rows: list[tuple[str, str, str, float]] = [
        ("messages_total", "counter", "Batches the broker acknowledged.", p.messages_published),
        ("values_total", "counter", "Values in the acknowledged batches.", p.values_published),
        ("connected", "gauge", "1 while connected to the broker.", int(p.connected)),
        ("reconnects_total", "counter", "Connections to the broker after the first.", p.reconnects),
        ("inflight", "gauge", "Batches sent and not yet acknowledged.", p.inflight),
        (
            "early_disconnects_total",
            "counter",
            "Connections that ended within 10 s of being accepted.",
            p.early_disconnects,
        ),
        (
            "oversized_split_total",
            "counter",
            "Stored batches above the message limit, queued again in pieces.",
            p.oversized_split,
        ),
    ]
    for name, kind, help_text, value in rows:
        family = _Family(f"edge_agent_publish_{name}", kind, help_text)
        family.add(value)
        yield family


def _destination_families(state: MetricsState) -> Iterator[_Family]:
    """Per destination, labelled by its id and dialect: its link and its share of the buffer."""
    if not state.publishers:
        return
    mine = {d.id: d for d in state.buffer.destinations}
    rows: list[tuple[str, str, str]] = [
        ("connected", "gauge", "1 while this destination's broker link is up."),
        ("messages_total", "counter", "Batches this destination confirmed."),
        ("values_total", "counter", "Values in the batches this destination confirmed."),
        ("packets_total", "counter", "Data messages this destination confirmed."),
        ("refused_by_cloud_total", "counter", "Values the cloud answered it will never take."),
        ("refused_by_dialect_total", "counter", "Readings this dialect cannot carry."),
        ("dialect_errors_total", "counter", "Failures of the dialect's code (link made again)."),
        ("reconnects_total", "counter", "Connections to this destination after the first."),
        ("pending_batches", "gauge", "Batches this destination has not confirmed yet."),
        ("oldest_pending_age_seconds", "gauge", "Age of its oldest unconfirmed batch (0 if none)."),
        ("never_received_total", "counter", "Batches dropped before this destination had them."),
    ]
    families = {name: _Family(f"edge_agent_destination_{name}", k, h) for name, k, h in rows}
    for dest, p in state.publishers.items():
        labels: Labels = (("destination", dest), ("dialect", p.dialect))
        b = mine.get(dest)
        oldest = None if b is None else b.oldest_created_ms
        age = 0.0 if oldest is None else max(0.0, (state.now_ms - oldest) / 1000)
        values = {
            "connected": int(p.connected),
            "messages_total": p.messages_published,
            "values_total": p.values_published,
            "packets_total": p.packets_published,
            "refused_by_cloud_total": p.refused_by_cloud,
            "refused_by_dialect_total": p.refused_by_dialect,
            "dialect_errors_total": p.dialect_errors,
            "reconnects_total": p.reconnects,
            "pending_batches": state.buffer.pending_batches if b is None else b.pending_batches,
            "oldest_pending_age_seconds": age,
            "never_received_total": state.buffer.dropped_batches if b is None else b.never_received,
        }
        for name, value in values.items():
            families[name].add(value, labels)
    yield from families.values()


def render_prometheus(state: MetricsState) -> str:
    """The Prometheus text exposition (format 0.0.4) of ``state``."""
    info = _Family("edge_agent_info", "gauge", "Version and id of this agent (always 1).")
    info.add(1, (("version", state.version), ("agent", state.agent_id)))
    uptime = _Family("edge_agent_uptime_seconds", "gauge", "Seconds since the agent started.")
    uptime.add(round(state.uptime_s, 3))
    families = [
        info,
        uptime,
        *_device_families(state.devices),
        *_buffer_families(state.buffer, state.now_ms),
        *_publisher_families(state.publisher),
        *_destination_families(state),
    ]
    return "\n".join(line for f in families for line in f.lines) + "\n"


# --------------------------------------------------------------------------- JSON summary


def summary(state: MetricsState) -> dict[str, Any]:
    """The same numbers as a compact document, for publishing to the broker.

    ``poll_hist`` holds per-bucket (not cumulative) counts whose upper bounds
    are ``poll_buckets_ms``, plus one last count above them.
    """
    b, p = state.buffer, state.publisher
    oldest = b.oldest_created_ms
    age = None if oldest is None else round((state.now_ms - oldest) / 1000, 1)
    bounds = next(iter(state.devices.values())).poll_seconds.bounds if state.devices else ()
    return {
        "v": SUMMARY_VERSION,
        "kind": "metrics",
        "agent": state.agent_id,
        "version": state.version,
        "ts": state.now_ms,
        "uptime_s": round(state.uptime_s, 1),
        "poll_buckets_ms": [round(x * 1000, 3) for x in bounds],
        "devices": {d: _device_summary(s) for d, s in state.devices.items()},
        "buffer": {
            "pending_batches": b.pending_batches,
            "pending_bytes": b.pending_bytes,
            "oldest_pending_age_s": age,
            "dropped_batches": b.dropped_batches,
            "last_seq": b.last_seq,
            "disk_full": b.disk_full,
            "held_batches": b.held_batches,
        },
        "publish": {
            "connected": p.connected,
            "messages": p.messages_published,
            "values": p.values_published,
            "reconnects": p.reconnects,
            "inflight": p.inflight,
        },
    }  # fmt: skip


def _device_summary(s: DeviceStats) -> dict[str, Any]:
    hist = s.poll_seconds
    count = hist.count
    return {
        "state": s.state,
        "polls_ok": s.polls_ok,
        "polls_failed": s.polls_failed,
        "values": s.values_total,
        "overruns": s.overruns,
        "reconnects": s.reconnects,
        "poll_mean_ms": round(hist.total / count * 1000, 2) if count else None,
        "poll_hist": list(hist.counts),
    }
