"""How much energy did a shift take, in which machine state, and per part?

A meter gives a cumulative energy register (kWh). The energy of a window is
the register's value at its end minus its value at its start, each value
taken on the straight line between the two reads around that instant (linear
interpolation, the same for shift boundaries and state changes). Energy by
state is the same split at each state interval's ends; the parts add up to
the whole exactly.

Arithmetic is exact: each read becomes a :class:`~fractions.Fraction`. A
float32 register (SDM630, DTSU666) decodes to a binary fraction that Python's
float holds exactly; ``register="float32"`` snaps each value to the nearest
float32 first, so a value printed and parsed back (12453.123) is again the
register's own (12453.123046875). Differences and interpolations stay
rational, so nothing accumulates float error; figures are rounded once, in
:meth:`EnergySummary.to_dict`. Decimal would hold the reads too, but not the
divisions of interpolation. Float32 still limits what the meter can say: one
step is 2 kWh above 2^24 kWh; ``resolution_kwh`` reports the step at the
largest read.

A decrease is never guessed at: a read marked ``reset`` (a meter replaced or
cleared) counts its value from zero; any other decrease leaves that pair's
energy unknown (``meter_gaps``), never a wrap: a float32 kWh register does not
wrap, and the vendors' roll-over points differ.

Pure: reads in, figures out. The reads may be thinned to those around the
window's ends, the state changes and any decrease: the register is cumulative.
"""

from __future__ import annotations

import bisect
import itertools
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import Any, Literal

from agent.compute.facts import StateInterval

Register = Literal["float32", "exact"]
DIGITS = 6
"""kWh figures in :meth:`EnergySummary.to_dict` are rounded to this many decimals (1 mWh)."""


@dataclass(frozen=True, slots=True)
class MeterRead:
    """One read of a cumulative energy register, in kWh as decoded."""

    ts_ms: int
    kwh: float | int | Decimal | Fraction
    reset: bool = False
    """The meter was declared reset or replaced since the read before: count from zero."""


@dataclass(frozen=True, slots=True)
class EnergySummary:
    """The energy of ``start_ms <= t < end_ms``, by state and per part."""

    start_ms: int
    end_ms: int
    as_of_ms: int
    """The figure is up to this instant (the end, or earlier for a running figure)."""
    kwh: Fraction
    """Energy over the covered part of the window."""
    kwh_by_state: dict[str, Fraction] = field(default_factory=dict)
    """Per machine state; ``unknown`` for covered time with no state interval."""
    covered_ms: int = 0
    """Time of the window with a known energy (reads on both sides, no meter gap)."""
    meter_gaps: int = 0
    """Pairs of reads whose energy is unknown (an undeclared decrease)."""
    boundary_uncertain: bool = False
    """A window end falls between reads more than twice the poll interval apart."""
    resolution_kwh: float = 0.0
    """The register's step at its largest read (float32), 0 for an exact register."""
    good: int | None = None
    total: int | None = None

    @property
    def complete(self) -> bool:
        """True when the energy of the whole window (up to ``as_of_ms``) is known."""
        return self.covered_ms == max(0, min(self.end_ms, self.as_of_ms) - self.start_ms)

    @property
    def kwh_per_good(self) -> Fraction | None:
        """kWh per good part (None without good parts)."""
        return self.kwh / self.good if self.good else None

    @property
    def kwh_per_total(self) -> Fraction | None:
        """kWh per part made, good or not (None without parts)."""
        return self.kwh / self.total if self.total else None

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able summary: kWh rounded to :data:`DIGITS`, the flags."""
        return {
            "start_ms": self.start_ms,
            "end_ms": self.end_ms,
            "as_of_ms": self.as_of_ms,
            "kwh": _round(self.kwh),
            "kwh_per_good": _round(self.kwh_per_good),
            "kwh_per_total": _round(self.kwh_per_total),
            "kwh_by_state": {k: _round(v) for k, v in sorted(self.kwh_by_state.items())},
            "covered_s": self.covered_ms / 1000,
            "complete": self.complete,
            "meter_gaps": self.meter_gaps,
            "boundary_uncertain": self.boundary_uncertain,
            "resolution_kwh": self.resolution_kwh,
        }


def float32(value: float) -> Fraction:
    """The exact value of the float32 nearest ``value``."""
    (snapped,) = struct.unpack(">f", struct.pack(">f", value))
    return Fraction(snapped)


def float32_step(value: float) -> float:
    """The distance from ``value`` to the next float32 (its resolution), for a normal float32."""
    if value == 0:
        return 2.0**-149
    _, exponent = math.frexp(abs(value))
    return 2.0 ** (exponent - 24)


@dataclass(frozen=True, slots=True)
class _Pair:
    start_ms: int
    end_ms: int
    kwh: Fraction | None


def energy_summary(
    reads: Sequence[MeterRead],
    start_ms: int,
    end_ms: int,
    states: Sequence[StateInterval] = (),
    *,
    poll_interval_ms: int,
    good: int | None = None,
    total: int | None = None,
    register: Register = "float32",
    as_of_ms: int | None = None,
) -> EnergySummary:
    """The energy of ``[start_ms, end_ms)`` (a shift), up to ``as_of_ms`` for a running figure.

    ``reads`` in time order; ``states`` the machine's intervals (an open one lasts
    until ``as_of_ms``); ``good`` and ``total`` the parts of the same window.
    """
    horizon = end_ms if as_of_ms is None else min(end_ms, as_of_ms)
    pairs, resolution = _pairs(reads, register)
    far = 2 * poll_interval_ms

    pair_ends = [p.end_ms for p in pairs]

    def energy(a: int, b: int) -> tuple[Fraction, int]:
        """Energy and known time of ``[a, b)``."""
        kwh = Fraction(0)
        known = 0
        for p in pairs[bisect.bisect_right(pair_ends, a) :]:
            if p.start_ms >= b:
                break
            lo, hi = max(a, p.start_ms), min(b, p.end_ms)
            if p.kwh is None:
                continue
            kwh += (
                p.kwh
                if hi - lo == p.end_ms - p.start_ms
                else p.kwh * (hi - lo) / (p.end_ms - p.start_ms)
            )
            known += hi - lo
        return kwh, known

    kwh, covered = energy(start_ms, horizon)
    by_state: dict[str, Fraction] = {}
    cursor = start_ms
    as_of = end_ms if as_of_ms is None else as_of_ms
    for interval in states:
        lo = max(interval.start_ms, start_ms)
        hi = min(as_of if interval.end_ms is None else interval.end_ms, horizon)
        if hi <= lo:
            continue
        if lo < cursor:
            raise ValueError(f"state intervals overlap at {interval.start_ms}: give them in order")
        if lo > cursor:
            _add(by_state, "unknown", energy(cursor, lo)[0])
        _add(by_state, interval.state, energy(lo, hi)[0])
        cursor = max(cursor, hi)
    if cursor < horizon:
        _add(by_state, "unknown", energy(cursor, horizon)[0])
    ends = [start_ms] + ([end_ms] if horizon == end_ms else [])
    uncertain = any(
        p.start_ms < edge < p.end_ms and p.end_ms - p.start_ms > far for p in pairs for edge in ends
    )
    return EnergySummary(
        start_ms,
        end_ms,
        as_of,
        kwh,
        {k: v for k, v in by_state.items() if v or k != "unknown"},
        covered,
        sum(1 for p in pairs if p.kwh is None and p.start_ms < horizon and start_ms < p.end_ms),
        uncertain,
        resolution,
        good,
        total,
    )


def _pairs(reads: Sequence[MeterRead], register: Register) -> tuple[list[_Pair], float]:
    values: list[Fraction] = []
    largest = 0.0
    for r in reads:
        value = float(r.kwh) if register == "float32" else r.kwh
        if not math.isfinite(float(value)):
            raise ValueError(f"meter read at {r.ts_ms} is not a number: {r.kwh!r}")
        values.append(float32(float(value)) if register == "float32" else Fraction(value))
        largest = max(largest, abs(float(value)))
    pairs: list[_Pair] = []
    for (a, va), (b, vb) in itertools.pairwise(zip(reads, values, strict=True)):
        if b.ts_ms <= a.ts_ms:
            raise ValueError(f"meter reads must be in time order: {b.ts_ms} after {a.ts_ms}")
        if b.reset:
            pairs.append(_Pair(a.ts_ms, b.ts_ms, vb))
        elif vb >= va:
            pairs.append(_Pair(a.ts_ms, b.ts_ms, vb - va))
        else:
            pairs.append(_Pair(a.ts_ms, b.ts_ms, None))
    resolution = float32_step(float(float32(largest))) if register == "float32" else 0.0
    return pairs, resolution


def _add(into: dict[str, Fraction], key: str, kwh: Fraction) -> None:
    into[key] = into.get(key, Fraction(0)) + kwh


def _round(value: Fraction | None) -> float | None:
    return None if value is None else round(float(value), DIGITS)
