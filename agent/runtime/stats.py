"""What is counted for each device while it is polled: its state, its counters,
the poll-duration histogram and the latest values (for status, metrics, the demo)."""

from __future__ import annotations

import bisect
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from drivers.base import Value

State = Literal["connecting", "connected", "backoff", "error", "disabled"]
RATE_WINDOW_S = 10.0
"""``values_per_second`` averages over this window."""
POLL_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
"""Upper bounds (seconds, inclusive) of the poll latency histogram; +Inf is implied."""


@dataclass(slots=True)
class Histogram:
    """Fixed buckets, cheap to observe: one bisect on a tuple and two additions.

    ``counts[i]`` counts observations in ``(bounds[i-1], bounds[i]]``; the last
    slot is above every bound (+Inf). Metrics make them cumulative.
    """

    bounds: tuple[float, ...] = POLL_BUCKETS_S
    counts: list[int] = field(default_factory=list)
    total: float = 0.0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        """Count one observation of ``value``."""
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    @property
    def count(self) -> int:
        """How many observations so far."""
        return sum(self.counts)


@dataclass(slots=True)
class DeviceStats:
    """What `status` shows for one device."""

    state: State = "connecting"
    last_ok_ms: int | None = None
    polls_ok: int = 0
    polls_failed: int = 0
    overruns: int = 0
    reconnects: int = 0
    last_error: str | None = None
    values_total: int = 0
    last_poll_ms: float | None = None
    poll_seconds: Histogram = field(default_factory=Histogram)
    """Duration of every completed read (not of streamed changes)."""
    latest: dict[str, dict[str, Value]] = field(default_factory=dict, repr=False)
    """The values of the last reading of each poll group (kept by reference, not copied)."""
    _recent: deque[tuple[float, int]] = field(default_factory=deque, repr=False)

    @property
    def last_values(self) -> dict[str, Value]:
        """The latest value of every tag read so far (merged only when asked for)."""
        merged: dict[str, Value] = {}
        for values in self.latest.values():
            merged.update(values)
        return merged

    def count_values(self, n: int) -> None:
        now = time.monotonic()
        self.values_total += n
        self._recent.append((now, n))
        while self._recent and now - self._recent[0][0] > RATE_WINDOW_S:
            self._recent.popleft()

    def values_per_second(self) -> float:
        """Values read per second over the last ten seconds."""
        now = time.monotonic()
        while self._recent and now - self._recent[0][0] > RATE_WINDOW_S:
            self._recent.popleft()
        total: int = sum(n for _, n in self._recent)
        return total / RATE_WINDOW_S
