"""DevicePoller with scripted drivers injected through ``driver_factory``."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from types import TracebackType
from typing import Self

import orjson
import pytest

from agent.runtime.poller import Backoff, DevicePoller
from agent.site.loader import DeviceConfig, load_site
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
    # the latest value of each tag, whichever group read it
    assert set(poller.stats.last_values) == {"a", "b"}
    fast_values = [i + 1 for i, g in enumerate(driver.reads) if g == "fast"]
    # the newest fast reading (the very last read may have been cut by the cancel)
    assert poller.stats.last_values["a"] in fast_values[-2:]


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
    with caplog.at_level(logging.INFO, logger="agent.runtime.poller"):
        await _run_for(poller, 1.5)
    errors = [r for _, r in sink.batches if r.errors]
    assert len(errors) == 1, "one all-bad reading per outage"
    assert errors[0].errors == {"a": "connection refused", "b": "connection refused"}
    assert any(r.values for _, r in sink.batches), "values flow after recovery"
    # the poller's own lines: the clock may warn once per process too (no NTP here)
    mine = [r for r in caplog.records if r.name == "agent.runtime.poller"]
    warnings = [r for r in mine if r.levelno == logging.WARNING]
    infos = [r for r in mine if "connected again" in r.getMessage()]
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


# A hung device next to a healthy one is tested through the real agent process:
# tests/faults/test_f10_hung_device_isolation.py (two tasks made here would not
# show whether the agent itself polls devices concurrently).


def test_backoff_grows_to_its_maximum_with_jitter() -> None:
    backoff = Backoff(base=1.0, maximum=8.0)
    delays = [backoff.next_delay() for _ in range(8)]
    assert 0.75 <= delays[0] <= 1.25
    assert 1.5 <= delays[1] <= 2.5
    assert all(d <= 8.0 * 1.25 for d in delays)
    assert delays[-1] >= 8.0 * 0.75
    backoff.reset()
    assert backoff.next_delay() <= 1.25


# --------------------------------------------------------------------------- review regressions


class Buggy(ScriptedDriver):
    """A driver with a bug: raises something other than DeviceUnavailable."""

    def __init__(self, on: str, exc: Exception) -> None:
        super().__init__()
        self.on = on
        self.exc = exc

    async def connect(self) -> None:
        await super().connect()
        if self.on == "connect":
            raise self.exc

    async def read(self, group: str) -> Reading:
        if self.on == "read":
            self.reads.append(group)
            raise self.exc
        return await super().read(group)


@pytest.mark.parametrize(
    ("on", "exc"),
    [
        ("read", ValueError("unpack requires a buffer of 4 bytes")),
        ("read", KeyError("a")),
        ("connect", OSError(113, "No route to host")),
        ("connect", RuntimeError("driver bug")),
    ],
)
async def test_a_driver_raising_anything_never_takes_down_other_devices(
    device: DeviceConfig, on: str, exc: Exception
) -> None:
    healthy = ScriptedDriver()
    buggy = Buggy(on, exc)
    bad = DevicePoller(device, Sink(), driver_factory=lambda d: buggy)
    bad._backoff = Backoff(base=0.05, maximum=0.1)
    fine = DevicePoller(device, Sink(), driver_factory=lambda d: healthy)
    states = set()
    async with asyncio.timeout(30), asyncio.TaskGroup() as group:  # a crash would end the group
        tasks = [group.create_task(p.run()) for p in (bad, fine)]
        for _ in range(100):
            await asyncio.sleep(0.01)
            states.add(bad.stats.state)
        assert not any(t.done() for t in tasks), "a poller task ended"
        for task in tasks:
            task.cancel()
    assert fine.stats.polls_ok >= 10
    assert "error" in states, states
    assert type(exc).__name__ in (bad.stats.last_error or "")
    assert buggy.connects >= 2, "retried with backoff"
    assert buggy.closes >= 1


async def test_cancelling_a_poller_closes_its_driver(device: DeviceConfig) -> None:
    """A reload or a stop cancels the task: the connection must not stay open."""
    driver = ScriptedDriver()
    poller = DevicePoller(device, Sink(), driver_factory=lambda d: driver)
    await _run_for(poller, 0.3)
    assert driver.reads, "it polled"
    assert driver.closes == 1


async def test_a_dead_unit_behind_a_live_link_warns_once_per_outage(
    device: DeviceConfig, caplog: pytest.LogCaptureFixture
) -> None:
    """connect() works (a gateway, a serial port) but the unit never answers."""
    driver = ScriptedDriver()

    async def silent(group: str) -> Reading:
        raise DeviceUnavailable("unit 1: no reply within 1s")

    driver.read = silent  # type: ignore[method-assign]
    sink = Sink()
    poller = DevicePoller(device, sink, driver_factory=lambda d: driver)
    poller._backoff = Backoff(base=0.05, maximum=0.1)
    with caplog.at_level(logging.INFO, logger="agent.runtime.poller"):
        await _run_for(poller, 1.0)
    assert driver.connects >= 3
    assert len([r for _, r in sink.batches if r.errors]) == 1, "one all-bad reading per outage"
    mine = [r for r in caplog.records if r.name == "agent.runtime.poller"]  # not the clock's
    assert len([r for r in mine if r.levelno == logging.WARNING]) == 1
    assert not [r for r in mine if "connected again" in r.getMessage()]


async def test_a_value_the_message_cannot_carry_becomes_a_tag_error(
    device: DeviceConfig, tmp_path: Path
) -> None:
    """A garbled serial line can parse to an integer above 64 bits; the agent must survive it."""
    from agent.buffer import Buffer

    class Huge(ScriptedDriver):
        async def read(self, group: str) -> Reading:
            self.reads.append(group)
            if group == "fast":
                return Reading(now_ms(), {"a": 2**70})
            return Reading(now_ms(), {"b": 7})

    driver = Huge()
    async with Buffer(tmp_path / "buffer.db", agent_id="t", commit_interval=0) as buffer:
        poller = DevicePoller(device, buffer, driver_factory=lambda d: driver)
        task = asyncio.create_task(poller.run())
        await asyncio.sleep(0.5)
        assert not task.done(), "the poller died"
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await buffer.flush()
        batches = await buffer.fetch(0, 1000)
    assert batches
    readings = [r for b in batches for r in orjson.loads(b.payload)["readings"]]
    assert {"b": 7} in [r["values"] for r in readings], "the other tag still goes through"
    bad = [r for r in readings if "a" in r.get("errors", {})]
    assert bad, readings
    assert "cannot be encoded" in bad[0]["errors"]["a"]


HEARTBEAT_SITE = """
agent: {id: sched-test}
devices:
  - id: dev
    connection: {modbus_tcp: {host: 127.0.0.1, port: 1}}
    poll_groups: {default: 50ms}
    tags:
      a: {address: 0, deadband: 1.0, heartbeat: 200ms}
"""


async def test_heartbeat_and_last_ok_use_the_agent_clock(tmp_path: Path) -> None:
    """OPC UA polls return a value's source timestamp: it stands still while the value does."""
    (tmp_path / "site.yaml").write_text(HEARTBEAT_SITE, encoding="utf-8")
    device = load_site(tmp_path / "site.yaml").devices[0]
    changed_at = now_ms() - 3_600_000  # the value last changed an hour ago

    class Stale(ScriptedDriver):
        async def read(self, group: str) -> Reading:
            self.reads.append(group)
            return Reading(changed_at, {"a": 5.0})

    driver = Stale()
    sink = Sink()
    poller = DevicePoller(device, sink, driver_factory=lambda d: driver)
    await _run_for(poller, 1.2)
    reported = [r for _, r in sink.batches if "a" in r.values]
    assert len(driver.reads) >= 10
    assert len(reported) >= 3, "the heartbeat repeats a quiet value"
    assert poller.stats.last_ok_ms is not None
    assert now_ms() - poller.stats.last_ok_ms < 60_000, "last poll time is when it was polled"


class Swallowing(ScriptedDriver):
    """Loses a cancel the way Python 3.11's asyncio.wait_for does (pymodbus uses it for
    every connect and request): the cancel lands as the inner call completes, and the
    call returns its result instead of raising CancelledError."""

    def __init__(self, on: str) -> None:
        super().__init__()
        self.on = on
        self.swallow = True

    async def _slow(self) -> None:
        try:
            await asyncio.sleep(0.2)
        except asyncio.CancelledError:
            if not self.swallow:
                raise

    async def connect(self) -> None:
        await super().connect()
        if self.on == "connect":
            await self._slow()
            raise DeviceUnavailable("connection refused")

    async def read(self, group: str) -> Reading:
        if self.on == "read":
            await self._slow()
        return await super().read(group)


@pytest.mark.parametrize("on", ["connect", "read"])
async def test_a_cancel_lost_inside_a_driver_call_still_stops_the_poller(
    device: DeviceConfig, on: str
) -> None:
    driver = Swallowing(on)
    poller = DevicePoller(device, Sink(), driver_factory=lambda d: driver)
    poller._backoff = Backoff(base=0.001, maximum=0.001)
    task = asyncio.create_task(poller.run())
    await asyncio.sleep(0.1)  # inside the slow call
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=5)
    driver.swallow = False
    if not done:  # stop it for real before failing
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert done, "the poller ran on after its cancel: a stop or a reload would wait forever"
    assert task.cancelled()


DERIVED_SITE = (
    SITE
    + """    compute:
      a2: {expr: "a * 2", deadband: 5}
      b_big: {expr: "b > 3"}
"""
)


async def test_derived_tags_join_readings_before_the_filter_and_carry_outages(
    tmp_path: Path,
) -> None:
    (tmp_path / "site.yaml").write_text(DERIVED_SITE, encoding="utf-8")
    device = load_site(tmp_path / "site.yaml").devices[0]
    driver = ScriptedDriver(fail_connects=1)
    sink = Sink()
    poller = DevicePoller(device, sink, driver_factory=lambda d: driver, backoff_max=0.1)
    poller._backoff = Backoff(base=0.05, maximum=0.1)
    await _run_for(poller, 1.0)
    readings = [r for _, r in sink.batches]
    outage = [r for r in readings if r.errors]
    assert outage[0].errors == {
        "a": "connection refused",
        "b": "connection refused",
        "a2": "input a: connection refused",
        "b_big": "input b: connection refused",
    }
    fast = [r for r in readings if "a" in r.values]
    with_a2 = [r for r in fast if "a2" in r.values]
    assert all(r.values["a2"] == 2.0 * float(r.values["a"]) for r in with_a2)
    assert with_a2, "the first value is always reported"
    assert len(with_a2) < len(fast), "a2 has a deadband of 5: some moves are filtered"
    slow = [r for r in readings if "b" in r.values]
    assert all(r.values["b_big"] is (int(r.values["b"]) > 3) for r in slow)
    assert "a2" not in {k for r in slow for k in r.values}, "a2 belongs to group fast"
    assert "a2" in poller.stats.last_values


DEADBAND_SITE = """
agent: {id: sched-test}
devices:
  - id: dev
    connection: {modbus_tcp: {host: 127.0.0.1, port: 1}}
    poll_groups: {default: 50ms}
    tags:
      a: {address: 0, deadband: 1.0}
"""


async def test_a_quiet_value_is_reported_again_once_its_device_answers_after_an_outage(
    tmp_path: Path,
) -> None:
    """The outage's all-bad reading said the tag was in error: the same value after it is
    news, even within the deadband (a consumer would otherwise keep the error)."""
    (tmp_path / "site.yaml").write_text(DEADBAND_SITE, encoding="utf-8")
    device = load_site(tmp_path / "site.yaml").devices[0]

    class Steady(ScriptedDriver):
        async def read(self, group: str) -> Reading:
            if len(self.reads) == 3:
                self.reads.append("failed")
                raise DeviceUnavailable("timeout")
            self.reads.append(group)
            return Reading(now_ms(), {"a": 5.0})

    driver = Steady()
    sink = Sink()
    poller = DevicePoller(device, sink, driver_factory=lambda d: driver, backoff_max=0.1)
    poller._backoff = Backoff(base=0.05, maximum=0.1)
    await _run_for(poller, 1.0)
    seen = [("error" if r.errors else r.values.get("a")) for _, r in sink.batches]
    assert seen[:3] == [5.0, "error", 5.0], seen
