"""CPU and memory of a process, read from ``/proc`` (Linux only).

CPU is ``utime + stime`` of ``/proc/PID/stat``: every thread of the process,
including threads that already ended, in clock ticks (usually 10 ms).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

_TICK = float(os.sysconf("SC_CLK_TCK"))


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used by ``pid`` so far."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        text = f.read()
    # the command name (field 2) may hold spaces: split after its closing parenthesis
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def memory_mb(pid: int) -> tuple[float, float]:
    """``(VmRSS, VmHWM)`` of ``pid`` in MiB: resident now, and its peak."""
    rss = hwm = 0.0
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) / 1024
    return rss, hwm


@dataclass
class CpuWindow:
    """CPU use of one process over a window: ``start()``, later ``percent()``."""

    pid: int
    _cpu0: float = 0.0
    _t0: float = 0.0

    def start(self) -> None:
        """Open the window now."""
        self._cpu0, self._t0 = cpu_seconds(self.pid), time.monotonic()

    def percent(self) -> float:
        """CPU since ``start()`` as a percentage of one core."""
        wall = time.monotonic() - self._t0
        if wall <= 0:
            return 0.0
        return 100.0 * (cpu_seconds(self.pid) - self._cpu0) / wall
