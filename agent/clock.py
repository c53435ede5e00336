"""Can the agent's wall clock be trusted for a reading's ``ts``? (standard library only)

Intervals and heartbeats run on the monotonic clock (``drivers.base.monotonic_ms``);
only ``ts`` is wall time, and the wall clock can be wrong:

* **unset**: it reads a time before this version's release
  (``drivers.base.CLOCK_FLOOR_MS``). A box without a real-time clock boots in
  1970 or 2000, and systemd's ``After=time-sync.target`` does not wait for NTP.
  Such a ``ts`` is certainly wrong.
* **unsynced**: the kernel says no time service keeps it right (``adjtimex``
  reports ``TIME_ERROR`` or the ``STA_UNSYNC`` flag, which chrony, ntpd and
  systemd-timesyncd clear). The time may be close (a box with an RTC), or
  hours off (a box that restored its last saved time at boot).

Readings taken in either state carry ``"clock": "unset"`` or ``"unsynced"``
in the message. They are flagged, not re-based: they are committed to the
buffer within ``commit_interval``, long before anyone knows the right time,
and a committed batch is never rewritten. When the clock steps (NTP sets it)
the watch logs the step and keeps its size in status (``clock.last_step_s``),
so whoever reads the data can shift the flagged readings before it.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal, TypedDict

from drivers.base import CLOCK_FLOOR_MS

log = logging.getLogger(__name__)

ClockState = Literal["synced", "unsynced", "unset", "unknown"]
"""``unknown``: the kernel cannot be asked (:func:`kernel_synced`); the time is past the floor."""

STEP_MS = 1000
"""A change of (wall - monotonic) above this is a step of the wall clock, not drift."""
RECHECK_MS = 1000
"""How often the kernel is asked again (a step is noticed at once, without asking)."""

_STA_UNSYNC = 0x0040
_TIME_ERROR = 5


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class _Timex(ctypes.Structure):
    """``struct timex`` of <sys/timex.h> (Linux, glibc and musl: same layout)."""

    _fields_ = [
        ("modes", ctypes.c_uint),
        *((f, ctypes.c_long) for f in ("offset", "freq", "maxerror", "esterror")),
        ("status", ctypes.c_int),
        *((f, ctypes.c_long) for f in ("constant", "precision", "tolerance")),
        ("time", _Timeval),
        *((f, ctypes.c_long) for f in ("tick", "ppsfreq", "jitter")),
        ("shift", ctypes.c_int),
        *((f, ctypes.c_long) for f in ("stabil", "jitcnt", "calcnt", "errcnt", "stbcnt")),
        ("tai", ctypes.c_int),
        ("_reserved", ctypes.c_int * 11),
    ]


TIMESYNCD_FLAG = Path("/run/systemd/timesync/synchronized")
"""Touched by systemd-timesyncd once it has synchronised the clock (systemd 239+)."""


def kernel_synced() -> bool | None:
    """Whether the kernel says a time service keeps the clock right; None if it cannot tell.

    ``adjtimex`` with ``modes = 0`` only reads and needs no privilege, but the
    shipped unit's ``ProtectClock=yes`` refuses the system call altogether
    (EPERM). Then systemd-timesyncd's flag file answers "synced"; without it
    (chrony, ntpd, or not synchronised yet) the answer is None: only the
    floor check applies.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        adjtimex = libc.adjtimex
    except (OSError, AttributeError):
        return None
    timex = _Timex()
    state = adjtimex(ctypes.byref(timex))
    if state < 0:
        return synced_when_refused()
    return state != _TIME_ERROR and not timex.status & _STA_UNSYNC


def synced_when_refused(flag: Path = TIMESYNCD_FLAG) -> bool | None:
    """The answer when ``adjtimex`` is refused: True if timesyncd says so, else None."""
    return True if flag.exists() else None


class ClockStatus(TypedDict):
    """The ``clock`` section of status (mirrored in ``agent/status/document.py``)."""

    state: ClockState
    flagged_readings: int
    steps: int
    last_step_s: float | None


class ClockWatch:
    """The wall clock's state, cheap enough to ask for every reading."""

    def __init__(
        self,
        kernel: Callable[[], bool | None] = kernel_synced,
        wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        mono_ms: Callable[[], int] = lambda: time.monotonic_ns() // 1_000_000,
    ) -> None:
        self._kernel, self._wall, self._mono = kernel, wall_ms, mono_ms
        self._offset = self._wall() - self._mono()
        self._next_check = 0
        self._state: ClockState | None = None
        self.flagged = 0
        self.steps = 0
        self.last_step_ms: int | None = None

    def flag(self) -> Literal["unset", "unsynced"] | None:
        """The flag for a reading taken now, None when the clock can be trusted."""
        state = self.state()
        if state == "unset" or state == "unsynced":  # noqa: PLR1714 (mypy narrows this form)
            self.flagged += 1
            return state
        return None

    def state(self) -> ClockState:
        """The clock's state now: asks the kernel at most once per second, and on a step."""
        mono = self._mono()
        wall = self._wall()
        offset = wall - mono
        if abs(offset - self._offset) > STEP_MS:
            self._stepped(offset - self._offset)
            self._next_check = 0
        self._offset = offset  # follow slewing, so drift never adds up to a "step"
        if self._state is None or mono >= self._next_check:
            self._next_check = mono + RECHECK_MS
            self._changed(self._judge(wall))
        assert self._state is not None
        return self._state

    def report(self) -> ClockStatus:
        """The ``clock`` section of the status document."""
        state = self.state()  # first: it is what notices a step
        step = None if self.last_step_ms is None else round(self.last_step_ms / 1000, 3)
        return {
            "state": state,
            "flagged_readings": self.flagged,
            "steps": self.steps,
            "last_step_s": step,
        }

    def _judge(self, wall: int) -> ClockState:
        if wall < CLOCK_FLOOR_MS:
            return "unset"
        synced = self._kernel()
        return "unknown" if synced is None else ("synced" if synced else "unsynced")

    def _stepped(self, by_ms: int) -> None:
        self.steps += 1
        self.last_step_ms = by_ms
        log.info("the wall clock stepped by %+.3f s; intervals are not affected", by_ms / 1000)

    def _changed(self, state: ClockState) -> None:
        old, self._state = self._state, state
        if state == old:
            return
        if state == "unset":
            shown = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(self._wall() / 1000))
            log.warning("the clock says %s: it is not set; readings are flagged unset", shown)
        elif state == "unsynced":
            log.warning("the clock is not synchronised (no NTP); readings are flagged unsynced")
        elif old in ("unset", "unsynced"):
            log.info("the clock is %s: readings are no longer flagged", state)


@functools.cache
def system_clock() -> ClockWatch:
    """The one watch of this process (every poller and the status share it)."""
    return ClockWatch()
