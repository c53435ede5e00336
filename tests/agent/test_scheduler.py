"""DevicePoller with scripted drivers injected through ``driver_factory``."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from types import TracebackType
from typing import Self

import pytest

from agent.resolve import DeviceConfig, load_site
from agent.scheduler import Backoff, DevicePoller
from drivers.base import DeviceUnavailable, Reading, now_ms

SITE = """
agent: {id: sched-test}
devices:
  - id: dev
    connection: {modbus_tcp: {host: 127.0.0.1, port: 1}}
    poll_groups: {fast: 50ms, slow: 200ms}
    tags:
      a: {address: 0, group: fast}
      b: {address: 1, group: slow}
"""


@pytest.fixture
def device(tmp_path: Path) -> DeviceConfig:
    (tmp_path / "site.yaml").write_text(SITE, encoding="utf-8")
    return load_site(tmp_path / "site.yaml").devices[0]


class Sink:
    def __init__(self) -> None:
        self.batches: list[tuple[str, Reading]] = []

    def put(self, device: str, readings: list[Reading]) -> None:
        self.batches.extend((device, r) for r in readings)


class ScriptedDriver:
    """Fails to connect ``fail_connects`` times, then reads slowly or fast."""

    def __init__(
        self, fail_connects: int = 0, read_time: float = 0.0, fail_reads_after: int | None = None
    ) -> None:
        self.device_id = "dev"
        self.fail_connects = fail_connects
        self.read_time = read_time
        self.fail_reads_after = fail_reads_after
        self.connects = 0
        self.closes = 0
        self.reads: list[str] = []

    async def connect(self) -> None:
        self.connects += 1
        if self.connects <= self.fail_connects:
            raise DeviceUnavailable("connection refused")

    async def close(self) -> None:
        self.closes += 1

    async def read(self, group: str) -> Reading:
        if self.fail_reads_after is not None and len(self.reads) >= self.fail_reads_after:
            self.fail_reads_after = None
            raise DeviceUnavailable("timeout")
        self.reads.append(group)
        await asyncio.sleep(self.read_time)
        tag = "a" if group == "fast" else "b"
        return Reading(now_ms(), {tag: len(self.reads)})

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


async def _run_for(poller: DevicePoller, seconds: float) -> None:
    task = asyncio.create_task(poller.run())
    await asyncio.sleep(seconds)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_each_group_polls_at_its_own_interval(device: DeviceConfig) -> None:
    driver = ScriptedDriver()
    poller = DevicePoller(device, Sink(), driver_factory=lambda d: driver)
    await _run_for(poller, 1.0)
    fast, slow = driver.reads.count("fast"), driver.reads.count("slow")
    assert fast > 2 * slow > 0, driver.reads
    assert poller.stats.state == "connected"
    assert poller.stats.polls_ok == len(driver.reads)


async def test_overruns_are_counted_not_queued(device: DeviceConfig) -> None:
    driver = ScriptedDriver(read_time=0.3)  # slower than the 50 ms fast group
    poller = DevicePoller(device, Sink(), driver_factory=lambda d: driver)
    await _run_for(poller, 1.5)
    assert poller.stats.overruns > 0
    # Queued ticks would be caught up back to back; skipped ones are not, so
    # the reads done can never exceed what the read time allows.
    assert len(driver.reads) <= 1.5 / 0.3 + 1


async def test_unavailable_device_reports_bad_quality_once_and_recovers(
    device: DeviceConfig, caplog: pytest.LogCaptureFixture
) -> None:
    driver = ScriptedDriver(fail_connects=3)
    sink = Sink()
    poller = DevicePoller(device, sink, driver_factory=lambda d: driver, backoff_max=0.1)
    poller._backoff = Backoff(base=0.05, maximum=0.1)
    with caplog.at_level(logging.INFO, logger="agent.scheduler"):
        await _run_for(poller, 1.5)
    errors = [r for _, r in sink.batches if r.errors]
    assert len(errors) == 1, "one all-bad reading per outage"
    assert errors[0].errors == {"a": "connection refused", "b": "connection refused"}
    assert any(r.values for _, r in sink.batches), "values flow after recovery"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    infos = [r for r in caplog.records if "connected again" in r.getMessage()]
    assert len(warnings) == 1
    assert "dev" in warnings[0].getMessage()
    assert len(infos) == 1
    assert poller.stats.reconnects == 3


async def test_read_failure_closes_and_reconnects(device: DeviceConfig) -> None:
    driver = ScriptedDriver(fail_reads_after=3)
    poller = DevicePoller(device, Sink(), driver_factory=lambda d: driver)
    poller._backoff = Backoff(base=0.05, maximum=0.1)
    await _run_for(poller, 1.0)
    assert driver.closes >= 1
    assert driver.connects >= 2
    assert len(driver.reads) > 3
    assert poller.stats.polls_failed >= 1


async def test_a_hung_device_never_delays_another(device: DeviceConfig) -> None:
    class Hung(ScriptedDriver):
        async def read(self, group: str) -> Reading:
            await asyncio.Event().wait()
            raise AssertionError("unreachable")

    healthy = ScriptedDriver()
    stuck = DevicePoller(device, Sink(), driver_factory=lambda d: Hung())
    fine = DevicePoller(device, Sink(), driver_factory=lambda d: healthy)
    tasks = [asyncio.create_task(p.run()) for p in (stuck, fine)]
    await asyncio.sleep(1.0)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert stuck.stats.polls_ok == 0
    assert fine.stats.polls_ok >= 10


def test_backoff_grows_to_its_maximum_with_jitter() -> None:
    backoff = Backoff(base=1.0, maximum=8.0)
    delays = [backoff.next_delay() for _ in range(8)]
    assert 0.75 <= delays[0] <= 1.25
    assert 1.5 <= delays[1] <= 2.5
    assert all(d <= 8.0 * 1.25 for d in delays)
    assert delays[-1] >= 8.0 * 0.75
    backoff.reset()
    assert backoff.next_delay() <= 1.25
