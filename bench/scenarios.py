"""The scenarios S1-S10: each runs a :class:`~bench.harness.Rig` and returns its figures.

A scenario returns a flat ``{metric: value}``; :mod:`bench.report` knows the
targets. Measurement windows start after a warm-up, CPU is read from
``/proc`` at both ends of the window, latency and rates come from the
subscriber's record of what reached the broker.
"""

from __future__ import annotations

import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.analysis import Message, check_seqs, percentile, window
from bench.backlog import copy_buffer, make_backlog
from bench.harness import AGENT_ID, EDGE_JSON, SPARKPLUG, Load, Rig
from bench.procstat import CpuWindow, cpu_seconds, memory_mb
from tests.support.agentproc import ROOT

Figures = dict[str, float]


@dataclass(frozen=True)
class Settings:
    """How long to warm up and to measure, and how often to time ``status``."""

    warmup_s: float = 5.0
    duration_s: float = 20.0
    status_calls: int = 5
    drain_timeout_s: float = 180.0


# --------------------------------------------------------------------------- helpers


def _status_command() -> list[str]:
    script = Path(sys.executable).with_name("edge-agent")
    return [str(script)] if script.exists() else [sys.executable, "-m", "agent"]


def time_status(rig: Rig, calls: int) -> float:
    """Median wall time in ms of ``edge-agent status`` against the running agent."""
    assert rig.agent is not None
    return _time_command(rig.agent.env, calls, expect=0)


def time_status_offline(env: dict[str, str], data_dir: Path, calls: int) -> float:
    """Median wall time in ms of ``edge-agent status`` with no agent: it reads the buffer file.

    ``STATE_DIRECTORY`` points at the stopped agent's data dir, so status finds its
    buffer the way it finds a service's (the clean stop removed the pointer file).
    """
    return _time_command({**env, "STATE_DIRECTORY": str(data_dir)}, calls, expect=1)


def _time_command(env: dict[str, str], calls: int, expect: int) -> float:
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        done = subprocess.run(
            [*_status_command(), "status"], env=env, cwd=ROOT,
            capture_output=True, timeout=30, check=False,
        )  # fmt: skip
        times.append((time.perf_counter() - t0) * 1000)
        if done.returncode != expect or b"buffer" not in done.stdout:
            raise RuntimeError(f"edge-agent status failed: {done.stderr.decode()[-400:]}")
    return statistics.median(times)


def _startup_s(rig: Rig, messages: list[Message]) -> float:
    first = min((m[0] for m in messages), default=math.nan)
    return (first - rig.spawned_ms) / 1000


def _measure(
    rig: Rig, settings: Settings, sample: Callable[[], None] | None = None
) -> tuple[float, float, Figures]:
    """Warm up, then one window: every process's CPU, agent memory; ``(start, end, figures)``."""
    time.sleep(settings.warmup_s)
    windows = {role: CpuWindow(pid) for role, pid in rig.pids.items()}
    for w in windows.values():
        w.start()
    start_ms = time.time() * 1000
    deadline = time.monotonic() + settings.duration_s
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, 0.25))
        if sample is not None:
            sample()
    end_ms = time.time() * 1000
    figures = {f"{role}_cpu_pct": w.percent() for role, w in windows.items()}
    figures["cpu_pct"] = figures.pop("agent_cpu_pct")
    figures["rss_mb"], figures["hwm_mb"] = memory_mb(rig.pids["agent"])
    return start_ms, end_ms, figures


def _traffic(messages: list[Message], start_ms: float, end_ms: float) -> Figures:
    w = window(messages, start_ms, end_ms)
    seqs = check_seqs(messages)
    return {
        "values_per_s": w.values_per_s,
        "latency_p50_ms": w.latency_p50_ms,
        "latency_p95_ms": w.latency_p95_ms,
        "latency_p99_ms": w.latency_p99_ms,
        "lost": float(seqs.missing),
        "duplicates": float(seqs.duplicates),
    }


# --------------------------------------------------------------------------- steady load


def steady(workdir: Path, load: Load, settings: Settings, *, status_calls: int = 0) -> Figures:
    """S1/S2/S3: a constant load; CPU, memory, delivered rate, latency, loss (and S5/S6)."""
    with Rig(workdir, load) as rig:
        start_ms, end_ms, figures = _measure(rig, settings)
        assert rig.agent is not None
        status = rig.agent.status()
        if status_calls:
            figures["status_ms"] = time_status(rig, status_calls)
    if status_calls:  # the same box after the agent stopped: status reads the buffer file
        figures["status_offline_ms"] = time_status_offline(
            rig.agent.env, rig.agent.buffer.parent, status_calls
        )
    assert rig.subscriber is not None
    messages = rig.subscriber.messages()
    figures.update(_traffic(messages, start_ms, end_ms))
    figures["offered_values_per_s"] = load.values_per_s
    figures["overruns"] = float(sum(d["overruns"] for d in status["devices"].values()))
    figures["startup_s"] = _startup_s(rig, messages)
    return figures


# --------------------------------------------------------------------------- S4 backlog


@dataclass(frozen=True)
class Backlog:
    """A prepared buffer file: ``last_seq`` batches of ``values_per_batch`` values."""

    template: Path
    last_seq: int
    values_per_batch: int


def prepare_backlog(folder: Path, seconds: int, devices: int = 10, tags: int = 100) -> Backlog:
    """One outage of ``seconds`` at ``devices`` x ``tags`` values per second, on disk."""
    template = folder / "backlog-template" / "buffer.db"
    last = make_backlog(template, AGENT_ID, devices, tags, seconds)
    return Backlog(template, last, tags)


def backlog(workdir: Path, prepared: Backlog, settings: Settings) -> Figures:
    """S4: the agent starts on the backlog with the broker up and live polling on."""
    return drain(workdir, prepared, settings, (EDGE_JSON,))[EDGE_JSON]


def drain(
    workdir: Path, prepared: Backlog, settings: Settings, destinations: tuple[str, ...]
) -> dict[str, Figures]:
    """S4/S9: the backlog drained to ``destinations`` at once; the figures of each.

    Each destination has its own cursor on the one buffer file: the drain of
    one ends when its ``pending_batches`` is down to the live traffic.
    """
    load = Load(devices=10, tags=prepared.values_per_batch, interval=1.0)
    with Rig(workdir, load, before_agent=lambda path: copy_buffer(prepared.template, path),
             destinations=destinations) as rig:  # fmt: skip
        assert rig.agent is not None
        pid = rig.pids["agent"]
        deadline = time.monotonic() + settings.drain_timeout_s
        while time.monotonic() < deadline:
            pending = rig.agent.status()["destinations"]
            if all(pending[d]["pending_batches"] <= 2 * load.devices for d in destinations):
                break
            time.sleep(0.2)
        drained = time.monotonic() < deadline
        cpu_s = cpu_seconds(pid)
        rss_mb, hwm_mb = memory_mb(pid)
        ran_ms = time.time() * 1000 - rig.spawned_ms
    common = {"cpu_pct": 100 * cpu_s / (ran_ms / 1000), "rss_mb": rss_mb, "hwm_mb": hwm_mb}
    out = {}
    for d in destinations:
        messages = rig.subscribers[d].messages()
        out[d] = _drain_figures(messages, prepared, rig.spawned_ms, drained) | common
    return out


DRAIN_VARIANTS: dict[str, tuple[str, ...]] = {
    "json_alone": (EDGE_JSON,),
    "sp_alone": (SPARKPLUG,),
    "both": (EDGE_JSON, SPARKPLUG),
}
"""S9: which destinations drain the backlog, by the prefix of their figures."""
_SHORT = {EDGE_JSON: "json", SPARKPLUG: "sp"}


def drain_per_destination(workdir: Path, prepared: Backlog, settings: Settings) -> Figures:
    """S9: the S4 backlog drained by edge-json alone, Sparkplug B alone, then both at once.

    Figures are named ``<variant>_<metric>`` (``json_alone_drain_values_per_s``,
    ``both_sp_drain_values_per_s``...).
    """
    out: Figures = {}
    for variant, dests in DRAIN_VARIANTS.items():
        figs = drain(workdir / variant, prepared, settings, dests)
        for dest, f in figs.items():
            prefix = variant if len(dests) == 1 else f"{variant}_{_SHORT[dest]}"
            for metric in ("drain_values_per_s", "drain_from_start_s", "lost", "duplicates"):
                if metric in f:
                    out[f"{prefix}_{metric}"] = f[metric]
        out[f"{variant}_cpu_pct"] = next(iter(figs.values()))["cpu_pct"]
    return out


def _drain_figures(
    messages: list[Message], prepared: Backlog, spawned_ms: float, drained: bool
) -> Figures:
    old = [m for m in messages if m[1] <= prepared.last_seq]
    if not old or not drained:
        return {"drain_values_per_s": 0.0, "lost": float(prepared.last_seq)}
    first, last = min(m[0] for m in old), max(m[0] for m in old)
    values = sum(m[2] for m in old)
    # Live batches queue behind the backlog (seq order), so they arrive after it: what
    # shows that polling went on is the live readings taken while the backlog drained.
    live = [m for m in messages if m[1] > prepared.last_seq and first <= min(m[3]) <= last]
    live_values = sum(m[2] for m in live)
    lat = [m[0] - ts for m in live for ts in m[3]]
    seqs = check_seqs(messages)
    return {
        "backlog_values": float(values),
        "drain_values_per_s": values / max((last - first) / 1000, 1e-3),
        "drain_from_start_s": (last - spawned_ms) / 1000,
        "live_values_per_s": live_values / max((last - first) / 1000, 1e-3),
        "live_latency_p50_ms": percentile(lat, 50),  # their wait behind the backlog
        "lost": float(seqs.missing),
        "duplicates": float(seqs.duplicates),
    }


# ------------------------------------------------------------------ S8, S10 two destinations


def _prefixed(prefix: str, figures: Figures) -> Figures:
    return {f"{prefix}_{k}": v for k, v in figures.items()}


def two_destinations(workdir: Path, load: Load, settings: Settings) -> Figures:
    """S8: the S1 load published to edge-json and Sparkplug B at once (two brokers).

    Latency per destination: the subscriber's receive time minus the reading's
    time (edge-json ``ts``, the Sparkplug metric timestamps).
    """
    with Rig(workdir, load, destinations=(EDGE_JSON, SPARKPLUG)) as rig:
        start_ms, end_ms, figures = _measure(rig, settings)
    for dest, sub in rig.subscribers.items():
        traffic = _traffic(sub.messages(), start_ms, end_ms)
        figures |= _prefixed(_SHORT[dest], traffic)
    return figures


def one_down(workdir: Path, load: Load, settings: Settings, outage_s: float) -> Figures:
    """S10: the Sparkplug broker stopped for ``outage_s`` under the S1 load, then back.

    The edge-json destination's latency in a window before the outage and
    over the outage; the Sparkplug destination's catch-up once its broker is
    back: from the restart until its pending batches are down to the live
    traffic (``catch_up_s``), and the rate of the batches it had missed.
    The Sparkplug entry reconnects at most 2 s apart (``reconnect_max``), so
    the shipped 30 s backoff does not hide the drain.
    """
    with Rig(workdir, load, destinations=(EDGE_JSON, SPARKPLUG),
             north={"reconnect_max": "2s"}) as rig:  # fmt: skip
        agent, sp = rig.agent, rig.brokers[SPARKPLUG]
        assert agent is not None
        start_ms, before_end_ms, figures = _measure(rig, settings)
        cpu = CpuWindow(rig.pids["agent"])
        down_ms = time.time() * 1000
        sp.stop()  # persistence saved: the subscriber's session survives
        cpu.start()
        time.sleep(outage_s)
        figures["outage_cpu_pct"] = cpu.percent()
        doc = agent.status()["destinations"]
        figures["outage_sp_pending_batches"] = float(doc[SPARKPLUG]["pending_batches"])
        figures["outage_json_pending_batches"] = float(doc[EDGE_JSON]["pending_batches"])
        up_ms = time.time() * 1000
        sp.restart()  # on the same port: the agent reconnects to it
        deadline = time.monotonic() + settings.drain_timeout_s
        drained_ms = math.nan
        while time.monotonic() < deadline:
            back = agent.status()["destinations"][SPARKPLUG]
            if back["connected"] and back["pending_batches"] <= 2 * load.devices:
                drained_ms = time.time() * 1000
                break
            time.sleep(0.1)
        time.sleep(1.0)  # the last batches on their way to the subscriber
    json_msgs = rig.subscribers[EDGE_JSON].messages()
    sp_msgs = rig.subscribers[SPARKPLUG].messages()
    before = window(json_msgs, start_ms, before_end_ms)
    during = window(json_msgs, down_ms, up_ms)
    missed = [m for m in sp_msgs if m[0] >= up_ms and min(m[3], default=up_ms) < up_ms]
    seqs = check_seqs(sp_msgs)
    figures |= {
        "json_before_p50_ms": before.latency_p50_ms,
        "json_before_p99_ms": before.latency_p99_ms,
        "json_during_p50_ms": during.latency_p50_ms,
        "json_during_p99_ms": during.latency_p99_ms,
        "json_during_vs_before_p99": during.latency_p99_ms / before.latency_p99_ms,
        "json_during_values_per_s": during.values_per_s,
        "json_lost": float(check_seqs(json_msgs).missing),
        "sp_lost": float(seqs.missing),
        "sp_duplicates": float(seqs.duplicates),
        "outage_s": (up_ms - down_ms) / 1000,
        "catch_up_s": (drained_ms - up_ms) / 1000,
    }
    if missed:
        first, last = min(m[0] for m in missed), max(m[0] for m in missed)
        values = sum(m[2] for m in missed)
        figures["sp_missed_values"] = float(values)
        figures["sp_first_after_s"] = (first - up_ms) / 1000
        figures["sp_last_missed_s"] = (last - up_ms) / 1000
        figures["sp_catch_up_values_per_s"] = values / max((last - first) / 1000, 1e-3)
    return figures


# --------------------------------------------------------------------------- S15 recovery


def recovery(workdir: Path, load: Load, settings: Settings, outage_s: float) -> Figures:
    """S15: the edge-json broker stopped for ``outage_s`` under ``load``, then started again.

    The shipped backoff (``reconnect_min`` 0.5 s, ``reconnect_max`` 30 s).
    ``first_data_after_s``: from the broker's port accepting again (its
    ``start`` returned) to the first batch the agent has confirmed after it
    (status ``messages_published`` moving, polled every 50 ms): the broker's
    own PUBACK, independent of the subscriber's reconnect.
    """
    with Rig(workdir, load) as rig:
        agent, broker = rig.agent, rig.brokers[EDGE_JSON]
        assert agent is not None
        time.sleep(settings.warmup_s)
        broker.stop()
        deadline = time.monotonic() + 15
        while agent.status()["destinations"][EDGE_JSON]["connected"]:
            if time.monotonic() > deadline:
                raise RuntimeError("the agent did not notice the broker stopped")
            time.sleep(0.05)
        time.sleep(outage_s)
        published = agent.status()["destinations"][EDGE_JSON]["messages_published"]
        broker.restart()  # on the same port
        up = time.monotonic()
        first = math.nan
        while time.monotonic() - up < 120:
            if agent.status()["destinations"][EDGE_JSON]["messages_published"] > published:
                first = time.monotonic() - up
                break
            time.sleep(0.05)
        reconnects = agent.status()["destinations"][EDGE_JSON]["reconnects"]
    return {"first_data_after_s": first, "outage_s": outage_s, "reconnects": float(reconnects)}


# --------------------------------------------------------------------------- S7 RTU bus


def wire_s(load: Load) -> float:
    """Seconds one poll of one unit takes on the wire: request, reply, two silences per read."""
    bits = 10  # 8N1
    chars = 0.0
    left = load.tags
    while left > 0:
        count = min(left, 125)
        chars += 8 + (5 + 2 * count) + 2 * 3.5
        left -= count
    return chars * bits / load.baud


def rtu_bus(workdir: Path, load: Load, settings: Settings) -> Figures:
    """S7: units sharing one RS-485 bus at ``load.baud``; utilisation and poll timing."""
    samples: dict[str, list[float]] = {}
    polls: dict[str, int] = {}
    with Rig(workdir, load) as rig:
        agent = rig.agent
        assert agent is not None

        def sample() -> None:
            for name, dev in agent.status()["devices"].items():
                if dev["last_poll_ms"] is not None:
                    samples.setdefault(name, []).append(dev["last_poll_ms"])

        time.sleep(settings.warmup_s)
        first = agent.status()["devices"]
        t0 = time.monotonic()
        _start, _end, figures = _measure(rig, Settings(0, settings.duration_s), sample)
        last = agent.status()["devices"]
        elapsed = time.monotonic() - t0
        polls = {n: last[n]["polls_ok"] - first[n]["polls_ok"] for n in last}
        overruns = sum(last[n]["overruns"] - first[n]["overruns"] for n in last)
        dead_failures = sum(last[n]["polls_failed"] - first[n]["polls_failed"]
                            for n in last if n.startswith("dead"))  # fmt: skip
    assert rig.server is not None
    wire = wire_s(load)
    # With deadlines aligned, units queue for the bus: the first one in a cycle shows the
    # time of one exchange, the last one the whole cycle (every unit once).
    quickest = min((min(s) for s in samples.values() if s), default=math.nan)
    slowest = max((max(s) for s in samples.values() if s), default=math.nan)
    counters: dict[str, Any] = rig.server.counters()
    served_s = counters.get("stopped", 0) - counters.get("started", 0)
    return figures | {
        "wire_ms_per_poll": wire * 1000,
        "bus_utilisation_pct": 100 * sum(polls.values()) * wire / elapsed,
        "responder_busy_pct": 100 * counters.get("bus_busy_s", 0) / served_s if served_s else 0,
        "poll_vs_wire": quickest / (wire * 1000),
        "worst_poll_vs_cycle": slowest / (wire * 1000 * load.devices),
        "polls_per_s": sum(polls.values()) / elapsed,
        "overruns": float(overruns),
        "dead_unit_timeouts": float(dead_failures),
        # the slowest healthy unit's measured poll period against its interval
        "healthy_period_vs_target": max(
            (elapsed / n / load.interval for d, n in polls.items() if not d.startswith("dead")
             and n > 0), default=math.nan),
    }  # fmt: skip


def default_workdir(base: Path, name: str, run: int) -> Path:
    """``base/<name>-<run>`` (kept after the run for the logs)."""
    path = base / f"{name}-{run}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def cpu_count() -> int:
    """CPUs this process may run on."""
    return len(os.sched_getaffinity(0))
