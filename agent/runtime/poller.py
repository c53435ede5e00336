"""One task per device: deadline-based polling, backoff, isolation.

Each device runs in its own task with its own connection, so a dead device
never delays another. Poll groups tick on fixed deadlines (``start + k *
interval``) that do not drift; a poll that overruns skips the ticks it missed
and counts them instead of queueing them. When a device stops answering, its
task closes the connection, reports every tag bad once, and reconnects with
jittered exponential backoff. Whatever else a driver raises (a bug, an
untranslated ``OSError``) is a failure of that device only (state ``error``),
never of the agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from agent.clock import ClockWatch, system_clock
from agent.compute.deadband import Filter
from agent.compute.derive import Derivation, Deriver
from agent.message import encodable
from agent.runtime.stats import DeviceStats
from agent.site.loader import DeviceConfig
from drivers.base import (
    DeviceUnavailable,
    Driver,
    Reading,
    ReportsCounters,
    Streaming,
    monotonic_ms,
    now_ms,
)

log = logging.getLogger(__name__)

READ_GUARD_S = 120.0
CONNECT_GUARD_S = 60.0
CLOSE_GUARD_S = 30.0
T = TypeVar("T")


class Sink(Protocol):
    """Where readings go: the buffer."""

    def put(self, device: str, readings: list[Reading]) -> None: ...


class _Misbehaved(DeviceUnavailable):
    """A driver raised something other than DeviceUnavailable: a bug, not an outage."""


def _raise_if_cancelled() -> None:
    """Re-raise a cancel that a library swallowed.

    Python 3.11's ``asyncio.wait_for`` (pymodbus awaits every connect and request
    with it) returns normally when a cancel lands just as its inner call ends.
    The request stays counted on the task; without this check the poller would
    run on, and a stop or a reload waiting for it would wait forever.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def _guarded(call: Awaitable[T], what: str, limit: float | None) -> T:
    """Await one driver call; whatever it raises becomes a DeviceUnavailable."""
    try:
        async with asyncio.timeout(limit):
            return await call
    except (DeviceUnavailable, StopAsyncIteration):
        raise
    except TimeoutError as exc:
        raise DeviceUnavailable(f"{what} hung") from exc
    except Exception as exc:
        raise _Misbehaved(f"{what} failed: {type(exc).__name__}: {exc}") from exc
    finally:
        _raise_if_cancelled()


async def _close_quietly(driver: Driver) -> None:
    # close() "never raises" by contract; a driver bug there must not either,
    # and a close that hangs must not freeze the device (or a stop) forever.
    with contextlib.suppress(Exception):
        async with asyncio.timeout(CLOSE_GUARD_S):
            await driver.close()
    _raise_if_cancelled()


class Backoff:
    """Jittered exponential backoff: base, 2x base ... up to ``maximum``, +-25 %."""

    def __init__(self, base: float, maximum: float) -> None:
        self.base = base
        self.maximum = maximum
        self.attempt = 0

    def next_delay(self) -> float:
        delay = min(self.maximum, self.base * 2.0**self.attempt)
        self.attempt += 1
        return delay * random.uniform(0.75, 1.25)

    def reset(self) -> None:
        self.attempt = 0


class DevicePoller:
    """Polls one device for the lifetime of the agent."""

    def __init__(
        self,
        device: DeviceConfig,
        sink: Sink,
        *,
        driver_factory: Callable[[DeviceConfig], Driver] | None = None,
        backoff_max: float = 30.0,
        clock: ClockWatch | None = None,
        on_state: Callable[[str, bool], object] | None = None,
        on_reading: Callable[[str, Reading], object] | None = None,
    ) -> None:
        self.device = device
        self.sink = sink
        self._on_state = on_state  # (device id, answers): an outage begins or ends
        self._on_reading = on_reading  # every raw reading (machine facts), before the filter
        self._clock = clock or system_clock()
        self.stats = DeviceStats(state="connecting" if device.enabled else "disabled")
        self._factory = driver_factory or (lambda d: d.spec.create(d.id, d.options))
        derived = device.derived
        self._deriver = Deriver([Derivation(d.name, d.formula) for d in derived])
        self._filter = Filter({**device.options.tags, **{d.name: d.attrs for d in derived}})
        fastest = min(device.poll_groups[g] for g in self._groups())
        self._backoff = Backoff(base=min(max(fastest, 0.5), 2.0), maximum=backoff_max)
        self._down = False
        self.driver: Driver | None = None

    @property
    def answering(self) -> bool:
        """False from the failure that began an outage until the device answers again.

        The same state ``on_state`` was last told (True before the first poll).
        """
        return not self._down

    def driver_stats(self) -> dict[str, object] | None:
        """The driver's own counters (garbage lines, dropped changes...), if it keeps any."""
        driver = self.driver
        return driver.counters() if isinstance(driver, ReportsCounters) else None

    def _groups(self) -> list[str]:
        used = {tag.group for tag in self.device.options.tags.values()}
        return sorted(used) or ["default"]

    async def run(self) -> None:
        """Poll until cancelled. Never raises for a device or driver fault.

        Cancelling it (a reload, a stop) closes the driver, so no connection,
        shared transport or session is left behind.
        """
        if not self.device.enabled:
            return
        try:
            driver = self.driver = self._factory(self.device)
        except Exception as exc:  # building does no I/O: this is a bug, and stays one
            self.stats.state, self.stats.last_error = "error", f"{type(exc).__name__}: {exc}"
            log.exception("device %s: cannot build its driver", self.device.id)
            return
        try:
            while True:
                await self._session(driver)
        finally:
            await _close_quietly(driver)

    async def _session(self, driver: Driver) -> None:
        """Connect, then poll or consume until the device fails (then back off)."""
        try:
            await _guarded(driver.connect(), "connect", CONNECT_GUARD_S)
            self.stats.state = "connected"
            if isinstance(driver, Streaming) and driver.streams:
                await self._consume(driver)
            else:
                await self._poll(driver)
        except DeviceUnavailable as exc:
            await self._failed(driver, exc, self._groups())

    def _answered(self) -> None:
        # Only an answer ends an outage: connect() alone succeeds on a serial port
        # or a gateway whose unit is dead, and would repeat the warning every retry.
        if self._down:
            log.info("device %s: connected again", self.device.id)
            self._down = False
            self._tell(answers=True)

    async def _poll(self, driver: Driver) -> None:
        groups = {g: self.device.poll_groups[g] for g in self._groups()}
        start = time.monotonic()
        due = dict.fromkeys(groups, start)
        while True:
            now = time.monotonic()
            name = min(due, key=due.__getitem__)
            if due[name] > now:
                await asyncio.sleep(due[name] - now)
            t0 = time.monotonic()
            # Drivers bound every call with their own timeouts; this only
            # catches a driver bug, so a hung read cannot freeze the device.
            reading = await _guarded(driver.read(name), f"read of group {name!r}", READ_GUARD_S)
            self._record(reading, time.monotonic() - t0, name)
            interval = groups[name]
            due[name] += interval
            late = time.monotonic() - due[name]
            if late > 0:
                missed = int(late // interval) + 1
                self.stats.overruns += missed
                due[name] += missed * interval

    async def _consume(self, driver: Streaming) -> None:
        readings = aiter(driver.stream())
        while True:
            try:
                reading = await _guarded(anext(readings), "stream", None)
            except StopAsyncIteration:
                return
            self._record(reading, None)

    def _record(self, reading: Reading, took: float | None, group: str | None = None) -> None:
        stats = self.stats
        self._answered()
        now = now_ms()
        if reading.values:
            stats.polls_ok += 1
            # the agent's clock: a reading's ts may be the device's (an OPC UA
            # source timestamp stands still while the value does)
            stats.last_ok_ms = now
            self._backoff.reset()
        else:
            stats.polls_failed += 1
        if reading.errors:
            stats.last_error = "; ".join(f"{k}: {v}" for k, v in list(reading.errors.items())[:3])
        if took is not None:
            stats.last_poll_ms = took * 1000
            stats.poll_seconds.observe(took)
        stats.count_values(len(reading.values))
        # derived tags (compute:) join the reading here, before it is kept and filtered
        reading = self._deriver.apply(reading)
        if group is not None:
            # a poll reads its whole group: keep a reference, copy nothing per poll
            stats.latest[group] = reading.values
        else:
            # a stream may carry only the tags that changed
            stats.latest.setdefault("", {}).update(reading.values)
        # heartbeats on the monotonic clock: a wall clock stepped an hour back
        # would otherwise silence every heartbeat for that hour
        if self._on_reading is not None:
            self._raw(reading)
        reported = self._filter.apply(reading, monotonic_ms())
        if reported.values or reported.errors:
            self._put(reported)

    def _raw(self, reading: Reading) -> None:
        assert self._on_reading is not None
        reading.clock = self._clock.flag()
        try:
            self._on_reading(self.device.id, reading)
        except Exception:  # machine facts must never stop polling
            log.exception("device %s: machine facts could not take a reading", self.device.id)

    def _put(self, reading: Reading) -> None:
        reading.clock = self._clock.flag()
        try:
            self.sink.put(self.device.id, [reading])
        except ValueError:
            # A value the message cannot carry (an integer above 64 bits from a
            # garbled line...): that tag is bad, the rest of the reading goes on.
            self.sink.put(self.device.id, [encodable(reading)])

    def _tell(self, *, answers: bool) -> None:
        if self._on_state is None:
            return
        try:
            self._on_state(self.device.id, answers)
        except Exception:  # the north side's problem must not stop polling
            log.exception("device %s: telling the north side it %s failed", self.device.id,
                          "answers again" if answers else "stopped answering")  # fmt: skip

    async def _failed(self, driver: Driver, exc: Exception, groups: list[str]) -> None:
        stats = self.stats
        reason = str(exc) or type(exc).__name__
        stats.polls_failed += 1
        stats.last_error = reason
        stats.state = "error" if isinstance(exc, _Misbehaved) else "backoff"
        await _close_quietly(driver)
        if not self._down:
            # One warning and one all-bad reading per outage; repeats go to debug.
            if isinstance(exc, _Misbehaved):
                log.error("device %s: driver error: %s", self.device.id, reason, exc_info=exc)
            else:
                log.warning("device %s: unavailable: %s", self.device.id, reason)
            tags = [n for n, t in self.device.options.tags.items() if t.group in groups]
            failed = self._deriver.apply(Reading(now_ms(), {}, dict.fromkeys(tags, reason)))
            if self._on_reading is not None:
                self._raw(failed)
            # through the filter: it forgets what it reported of these tags, so their
            # first value after the outage is reported even within the deadband
            self._put(self._filter.apply(failed, monotonic_ms()))
            self._down = True
            self._tell(answers=False)
        else:
            log.debug("device %s: still unavailable: %s", self.device.id, reason)
        delay = self._backoff.next_delay()
        stats.reconnects += 1
        await asyncio.sleep(delay)
        stats.state = "connecting"
