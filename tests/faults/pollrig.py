"""The agent's real scheduler and drivers, in-process, for the device fault tests (F10-F12).

:func:`load_devices` resolves a site file exactly as the agent does; a
:class:`ListSink` stands in for the buffer and keeps every reading.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from agent.runtime.poller import DevicePoller
from agent.site.loader import DeviceConfig, load_site
from drivers.base import Reading
from simulators.faults import Fault
from simulators.run import RunningSimulators

GOOD_SITE = {"agent": {"id": "poll-rig", "data_dir": "data"}, "mqtt": {"host": "127.0.0.1"}}


def load_devices(tmp_path: Path, devices: list[dict[str, Any]]) -> list[DeviceConfig]:
    """Resolve ``devices`` (site-file entries) through ``agent.site.loader.load_site``."""
    site_file = tmp_path / "site.yaml"
    site_file.write_text(yaml.safe_dump({**GOOD_SITE, "devices": devices}), encoding="utf-8")
    return load_site(site_file).devices


class ListSink:
    """Keeps every (device, reading) the pollers hand over, with the time it came."""

    def __init__(self) -> None:
        self.items: list[tuple[str, Reading, float]] = []

    def put(self, device: str, readings: list[Reading]) -> None:
        """What the scheduler calls instead of ``Buffer.put``."""
        now = time.monotonic()
        self.items.extend((device, r, now) for r in readings)

    def of(self, device: str, since: float = 0.0) -> list[Reading]:
        """Readings of ``device`` received at or after ``since`` (monotonic)."""
        return [r for d, r, at in self.items if d == device and at >= since]

    async def wait(
        self, device: str, since: float, predicate: Callable[[Reading], bool], limit_s: float
    ) -> Reading:
        """The first reading of ``device`` since ``since`` matching ``predicate``."""
        async with asyncio.timeout(limit_s):
            while True:
                for reading in self.of(device, since):
                    if predicate(reading):
                        return reading
                await asyncio.sleep(0.02)

    def wrong_tags(self) -> list[tuple[str, str, Any]]:
        """Counter values whose ``% 1000`` is not their tag's index (``tN``)."""
        bad = []
        for device, reading, _ in self.items:
            for tag, value in reading.values.items():
                if tag.startswith("t") and tag[1:].isdigit() and (
                    isinstance(value, bool) or not isinstance(value, int | float)
                    or int(value) % 1000 != int(tag[1:])
                ):  # fmt: skip
                    bad.append((device, tag, value))
        return bad


def complete(reading: Reading, n_tags: int = 13) -> bool:
    """All tags read, none bad."""
    return len(reading.values) == n_tags and not reading.errors


async def fault_round(
    sims: RunningSimulators, sink: ListSink, bad: str, good: DevicePoller, fault: Fault,
    *, expect_error: bool = True, hold_s: float = 0.7,
) -> None:  # fmt: skip
    """Switch ``fault`` on for ``bad`` and check the F10/F11 criteria; then heal it."""
    await sink.wait(bad, time.monotonic(), complete, 30)
    good_before = good.stats.polls_ok
    since = time.monotonic()
    sims[bad].faults.set(fault)
    if expect_error:
        # the poll in progress when the fault starts may still succeed; the next one may not
        first_bad = await sink.wait(bad, since, lambda r: bool(r.errors), 10)
        polled = [r for r in sink.of(bad, since) if r.values or r.errors]
        assert polled.index(first_bad) <= 1, f"{fault}: bad quality came late: {polled[:3]}"
        assert set(first_bad.values).isdisjoint(first_bad.errors)
    await asyncio.sleep(hold_s)
    sims[bad].faults.clear()
    await sink.wait(bad, time.monotonic(), complete, 30)
    assert good.stats.polls_ok > good_before + 3, f"{fault}: the healthy device stalled"
