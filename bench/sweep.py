"""S14, the tag-count sweep: start-up, memory and ``validate`` time as the tags grow.

For each size (devices x tags, int16 holding registers as in S1) one agent is
started against the lean responder and a broker: ``startup_s`` is the process
spawn to the first data message at the broker (the S5 method), ``rss_mb`` the
agent's ``VmRSS`` after a warm-up, ``bytes_per_tag`` that RSS minus the RSS of
the same agent with no device, over the tag count. ``validate_s`` is the wall
time of ``edge-agent validate`` on the same site file (median of 3).
Figures are named ``<size>_<metric>``, the size as ``10x100``.
"""

from __future__ import annotations

import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.harness import Load, Rig
from bench.procstat import memory_mb
from tests.support.agentproc import ROOT

Figures = dict[str, float]

SIZES: tuple[tuple[int, int], ...] = ((10, 100), (10, 1200), (20, 12000))
"""(devices, tags per device): 1,000, 12,000 and 240,000 tags."""
QUICK_SIZES: tuple[tuple[int, int], ...] = ((10, 100),)
GROUP_TAGS = 1000
"""Tags per poll group: one reading is one message, and 12,000 int16 values (or 1,200
named ``t10800``...) do not fit in the default 64 KiB."""


def load_of(devices: int, tags: int) -> Load:
    """The load of one size: S1's shape, in poll groups of at most :data:`GROUP_TAGS`."""
    return Load(devices, tags, INTERVAL_S, group_tags=GROUP_TAGS if tags > GROUP_TAGS else 0)


INTERVAL_S = 1.0
START_WAIT_S = 240.0
"""The longest start waited for (the status endpoint answers once the site is loaded)."""
FIRST_VALUE_WAIT_S = 120.0


def size_name(devices: int, tags: int) -> str:
    """``10x100``: the prefix of that size's figures."""
    return f"{devices}x{tags}"


def time_validate(site_file: Path, env: dict[str, str], calls: int = 3) -> float:
    """Median wall time in s of ``python -m agent validate -c site_file``."""
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "agent", "validate", "-c", str(site_file)],
            env=env, cwd=ROOT, capture_output=True, timeout=600, check=False,
        )  # fmt: skip
        times.append(time.perf_counter() - t0)
        if done.returncode != 0:
            raise RuntimeError(f"edge-agent validate failed: {done.stderr.decode()[-400:]}")
    return statistics.median(times)


def _wait_first_value(rig: Rig) -> None:
    """Until the agent has published a message (the broker's PUBACK), or the time is up."""
    if not rig.load.devices:
        return
    deadline = time.monotonic() + FIRST_VALUE_WAIT_S
    while time.monotonic() < deadline:
        assert rig.agent is not None
        if rig.agent.status()["broker"]["messages_published"]:
            return
        time.sleep(0.1)


def one_size(workdir: Path, load: Load, warmup_s: float, *, validate_calls: int = 3) -> Figures:
    """Start, first value, RSS after ``warmup_s``; ``validate`` on the same site file."""
    with Rig(workdir, load, start_wait=START_WAIT_S) as rig:
        assert rig.agent is not None
        _wait_first_value(rig)
        time.sleep(warmup_s)
        rss_mb, hwm_mb = memory_mb(rig.pids["agent"])
        env, site_file = rig.agent.env, rig.agent.site_file
    assert rig.subscriber is not None
    first = min((m[0] for m in rig.subscriber.messages()), default=math.nan)
    figures = {"startup_s": (first - rig.spawned_ms) / 1000, "rss_mb": rss_mb, "hwm_mb": hwm_mb}
    if validate_calls and load.devices:
        figures["validate_s"] = time_validate(site_file, env, validate_calls)
    return figures


def tag_sweep(
    workdir: Path, warmup_s: float, sizes: tuple[tuple[int, int], ...] = SIZES
) -> Figures:
    """S14: every size in ``sizes``, after one agent with no device (the RSS baseline)."""
    empty = one_size(workdir / "0x0", Load(0, 1, INTERVAL_S), warmup_s, validate_calls=0)
    out: Figures = {"empty_rss_mb": empty["rss_mb"]}
    for devices, tags in sizes:
        name = size_name(devices, tags)
        figs = one_size(workdir / name, load_of(devices, tags), warmup_s)
        figs["bytes_per_tag"] = (figs["rss_mb"] - empty["rss_mb"]) * 1024 * 1024 / (devices * tags)
        out |= {f"{name}_{k}": v for k, v in figs.items()}
    return out
