"""Pure figures from what the subscriber recorded: rates, latency percentiles, seq gaps."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

Message = tuple[float, int, int, list[int]]
"""``(recv_ms, seq, n_values, [ts, ...])`` as recorded by ``bench.subscriber``."""


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


@dataclass(frozen=True)
class Window:
    """Figures of the messages received between ``start_ms`` and ``end_ms``."""

    values_per_s: float
    messages: int
    latency_p50_ms: float
    latency_p95_ms: float
    latency_p99_ms: float
    latency_max_ms: float


def window(messages: Iterable[Message], start_ms: float, end_ms: float) -> Window:
    """Delivered values per second and latency (receive time minus each reading's ts)."""
    values = 0
    count = 0
    latencies: list[float] = []
    for recv, _seq, n_values, stamps in messages:
        if start_ms <= recv < end_ms:
            count += 1
            values += n_values
            latencies.extend(recv - ts for ts in stamps)
    seconds = max((end_ms - start_ms) / 1000, 1e-9)
    return Window(
        values_per_s=values / seconds,
        messages=count,
        latency_p50_ms=percentile(latencies, 50),
        latency_p95_ms=percentile(latencies, 95),
        latency_p99_ms=percentile(latencies, 99),
        latency_max_ms=max(latencies, default=math.nan),
    )


@dataclass(frozen=True)
class SeqCheck:
    """Seqs seen against the contiguous range 1..``upto``."""

    upto: int
    missing: int
    duplicates: int
    first_missing: int | None


def check_seqs(messages: Iterable[Message], upto: int | None = None) -> SeqCheck:
    """Gaps and duplicates in ``seq`` from 1 to ``upto`` (default: the highest seen)."""
    seen: set[int] = set()
    duplicates = 0
    for _recv, seq, _n, _ts in messages:
        if seq in seen:
            duplicates += 1
        seen.add(seq)
    top = max(seen, default=0) if upto is None else upto
    missing = [s for s in range(1, top + 1) if s not in seen]
    return SeqCheck(top, len(missing), duplicates, missing[0] if missing else None)
