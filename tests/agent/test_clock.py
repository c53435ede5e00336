"""The clock watch: unset, unsynced, synced, and steps of the wall clock."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.clock import RECHECK_MS, ClockWatch, kernel_synced, synced_when_refused
from drivers.base import CLOCK_FLOOR_MS

NOW = CLOCK_FLOOR_MS + 86_400_000


@dataclass
class Clocks:
    """A wall and a monotonic clock the test moves by hand, and a kernel answer."""

    wall: int = NOW
    mono: int = 1_000
    synced: bool | None = True
    asked: int = 0

    def kernel(self) -> bool | None:
        self.asked += 1
        return self.synced

    def watch(self) -> ClockWatch:
        return ClockWatch(self.kernel, lambda: self.wall, lambda: self.mono)

    def tick(self, ms: int) -> None:
        self.wall += ms
        self.mono += ms


@pytest.mark.parametrize(
    ("synced", "state", "flag"),
    [(True, "synced", None), (False, "unsynced", "unsynced"), (None, "unknown", None)],
)
def test_the_kernel_answer_decides_past_the_floor(
    synced: bool | None, state: str, flag: str | None
) -> None:
    clocks = Clocks(synced=synced)
    watch = clocks.watch()
    assert watch.state() == state
    assert watch.flag() == flag
    assert watch.report()["flagged_readings"] == (0 if flag is None else 1)


def test_before_the_floor_the_clock_is_unset_whatever_the_kernel_says() -> None:
    clocks = Clocks(wall=946_684_800_000, synced=True)  # 2000-01-01
    watch = clocks.watch()
    assert watch.flag() == "unset"
    assert watch.state() == "unset"


def test_setting_the_clock_is_seen_at_once_as_a_step_and_ends_the_flags() -> None:
    clocks = Clocks(wall=946_684_800_000)
    watch = clocks.watch()
    assert watch.flag() == "unset"
    clocks.tick(10)
    clocks.wall = NOW  # NTP sets it, well inside the recheck second
    assert watch.flag() is None
    report = watch.report()
    assert report["steps"] == 1
    assert report["last_step_s"] == pytest.approx((NOW - 946_684_800_010) / 1000)


def test_the_kernel_is_asked_at_most_once_per_recheck_interval() -> None:
    clocks = Clocks()
    watch = clocks.watch()
    for _ in range(100):
        watch.flag()
        clocks.tick(RECHECK_MS // 10)
    assert clocks.asked <= 11


def test_drift_is_not_a_step() -> None:
    clocks = Clocks()
    watch = clocks.watch()
    for _ in range(30):  # 1.5 s in all: more than a step, but never at once
        clocks.tick(1000)
        clocks.wall += 50  # NTP slewing: 50 ms per second
        watch.state()
    assert watch.steps == 0


def test_the_kernel_can_be_asked_on_linux() -> None:
    # this box's kernel answers one way or the other; only "cannot ask" is wrong here
    assert kernel_synced() in (True, False)


def test_under_protect_clock_only_timesyncd_flag_file_can_say_synced(tmp_path: Path) -> None:
    # the shipped unit refuses adjtimex (ProtectClock=yes): no answer is not "unsynced"
    flag = tmp_path / "synchronized"
    assert synced_when_refused(flag) is None
    flag.touch()
    assert synced_when_refused(flag) is True
