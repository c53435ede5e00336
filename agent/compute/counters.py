"""Piece counters: how many pieces each read of a raw counter register added.

A counter is read as its register gives it (a uint16, an int32 PackML
``AccCount``...) and turned into steps (:class:`~agent.compute.facts.CountStep`),
each classified (decision 14):

* ``first``: no earlier read to compare with; adds nothing (delta None).
* ``declared``: the device said it reset (a reset signal seen in the
  interval); the new value is what was counted since, from 0.
* ``gap``: the delta cannot be known (delta None, never a guessed number):
  the interval is at least one wrap period at ``max_rate`` (the number of
  wraps is ambiguous), or the change is not explained by any rule below.
* ``normal``: the value rose by no more than ``max_rate`` allows.
* ``wrap``: the value fell, and "went past the top and round" is a rise the
  rate allows (only with a ``max_rate``: without a bound any fall could be a
  wrap).
* ``reset``: the value fell, and "restarted from 0" explains it: with a
  ``max_rate``, the new value could have been counted in the interval; without
  one, the new value is at most half of the old one (nearer 0 than the old
  value). The delta is the new value: pieces made before the reset and after
  the previous read are lost, a lower bound, never an invention.

Signed registers are reinterpreted as unsigned of the same width, so a signed
overflow (2,147,483,647 -> -2,147,483,648) is an ordinary rise. The bound is
inclusive: a rise of exactly ``max_rate * dt`` is plausible. A read in error
yields nothing, and the next good read compares with the last good one over
the whole interval. A read not newer than the last one is taken as a replay
and adds nothing, so state committed with its step never counts twice.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Final, Literal

from agent.compute.facts import CountStep

Width = Literal["uint16", "uint32", "int16", "int32", "uint64"]
_Kind = Literal["normal", "wrap", "reset", "declared", "gap"]

_BITS: Final[dict[str, int]] = {
    "uint16": 16,
    "uint32": 32,
    "int16": 16,
    "int32": 32,
    "uint64": 64,
}
_FLOAT_EXACT: Final = 2**53
"""Above this a float no longer holds every integer: a count may have been rounded."""
_STATE_VERSION: Final = 1


class CounterError(ValueError):
    """A counter's configuration, value or saved state is unusable; the message says why."""


@dataclass(frozen=True, slots=True)
class CounterSpec:
    """How to read one counter: its register width and plausibility bound."""

    width: Width
    max_rate: float | None = None
    """The fastest the counter can count (counts per second): wraps are accepted only with it."""
    reset_signal: bool = False
    """The device declares its resets (a reset bit, a reset trigger): ``feed(reset=...)``."""

    def __post_init__(self) -> None:
        if self.width not in _BITS:
            raise CounterError(f"counter width {self.width!r}: use one of {', '.join(_BITS)}")
        rate = self.max_rate
        if rate is not None and (isinstance(rate, bool) or not math.isfinite(rate) or rate <= 0):
            raise CounterError(f"max_rate {rate!r}: a positive number of counts per second")

    @property
    def modulus(self) -> int:
        """Number of distinct register values (65,536 for 16 bits)."""
        return 1 << _BITS[self.width]

    @property
    def signed(self) -> bool:
        """True for a two's-complement register (reinterpreted as unsigned)."""
        return self.width.startswith("int")

    def wrap_period_s(self) -> float | None:
        """Seconds one full turn of the register takes at ``max_rate`` (None without one)."""
        return None if self.max_rate is None else self.modulus / self.max_rate


class Counter:
    """One piece counter; feed it reads in time order."""

    def __init__(self, spec: CounterSpec) -> None:
        self.spec = spec
        # Exact rational bound: 0.3/s over 10 s allows 3 counts, not 2.999...
        self._rate = None if spec.max_rate is None else Fraction(repr(spec.max_rate))
        self._last_raw: int | None = None
        self._last_ts: int | None = None
        self._total = 0

    @property
    def running_total(self) -> int:
        """Sum of every known delta since this counter's state began."""
        return self._total

    @property
    def last(self) -> tuple[int, int] | None:
        """(ts_ms, raw) of the last good read, None before the first."""
        if self._last_raw is None or self._last_ts is None:
            return None
        return self._last_ts, self._last_raw

    def feed(
        self,
        ts_ms: int,
        value: object = None,
        *,
        error: str | None = None,
        reset: bool = False,
    ) -> CountStep | None:
        """The step one read adds; None for a read in error or a replayed read.

        ``value`` is the driver's value: an int of the counter's width, or a
        float holding an integer exactly; anything else is refused with
        :class:`CounterError` (a wrongly typed tag is a configuration fault).
        ``reset`` says the device signalled a reset since the previous read.
        """
        if reset and not self.spec.reset_signal:
            raise CounterError("reset given to a counter declared without a reset signal")
        if error is not None:
            return None
        if self._last_ts is not None and ts_ms <= self._last_ts:
            return None
        raw = self._unsigned(value)
        prev_raw, prev_ts = self._last_raw, self._last_ts
        self._last_raw, self._last_ts = raw, ts_ms
        if prev_raw is None or prev_ts is None:
            return CountStep(ts_ms, None, None, "first", raw)
        delta, kind = self._classify(prev_raw, raw, ts_ms - prev_ts, reset)
        if delta is not None:
            self._total += delta
        return CountStep(ts_ms, prev_ts, delta, kind, raw)

    def _classify(self, prev: int, raw: int, dt_ms: int, reset: bool) -> tuple[int | None, _Kind]:
        if reset:
            return raw, "declared"
        if self._rate is None:
            # No bound: any rise is taken, no fall is a wrap; a fall to half or
            # less is nearer "restarted from 0" than "set back", so a reset.
            if raw >= prev:
                return raw - prev, "normal"
            return (raw, "reset") if 2 * raw <= prev else (None, "gap")
        return self._bounded(prev, raw, self._rate * dt_ms / 1000)

    def _bounded(self, prev: int, raw: int, limit: Fraction) -> tuple[int | None, _Kind]:
        modulus = self.spec.modulus
        if limit >= modulus:
            return None, "gap"  # a wrap period or more: the number of turns is unknown
        if raw >= prev:
            return (raw - prev, "normal") if raw - prev <= limit else (None, "gap")
        if modulus - prev + raw <= limit:
            return modulus - prev + raw, "wrap"
        return (raw, "reset") if raw <= limit else (None, "gap")

    def _unsigned(self, value: object) -> int:
        width = self.spec.width
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise CounterError(f"{width} counter read {value!r}: a count must be a number")
        if isinstance(value, float):
            if not value.is_integer():
                raise CounterError(f"{width} counter read {value!r}: not a whole number")
            if abs(value) > _FLOAT_EXACT:
                raise CounterError(
                    f"{width} counter read {value!r}: a float this large may have lost counts;"
                    " read the register as an integer"
                )
            value = int(value)
        modulus = self.spec.modulus
        low, high = (-(modulus // 2), modulus // 2 - 1) if self.spec.signed else (0, modulus - 1)
        if not low <= value <= high:
            raise CounterError(f"{width} counter read {value}: outside {low}..{high}")
        return value % modulus

    def state(self) -> dict[str, object]:
        """What a restart needs, as a small JSON-able dict (commit it with the steps)."""
        return {
            "v": _STATE_VERSION,
            "width": self.spec.width,
            "last_raw": self._last_raw,
            "last_ts_ms": self._last_ts,
            "running_total": self._total,
        }

    @classmethod
    def from_state(cls, spec: CounterSpec, state: Mapping[str, object]) -> Counter:
        """A counter continuing from ``state`` (as :meth:`state` gave it) under ``spec``.

        A state saved for another width is refused: its last value means
        nothing for this register, and the caller starts afresh (``first``).
        """
        if state.get("v") != _STATE_VERSION:
            raise CounterError(f"counter state version {state.get('v')!r}: expected 1")
        if state.get("width") != spec.width:
            raise CounterError(
                f"counter state saved for {state.get('width')!r}, the counter is now {spec.width}"
            )
        raw = _opt_int(state, "last_raw")
        ts = _opt_int(state, "last_ts_ms")
        total = _opt_int(state, "running_total")
        if (raw is None) != (ts is None) or total is None:
            raise CounterError(
                "counter state: last_raw and last_ts_ms set together, a running_total"
            )
        if raw is not None and not 0 <= raw < spec.modulus:
            raise CounterError(f"counter state: last_raw {raw} outside the {spec.width} range")
        counter = cls(spec)
        counter._last_raw, counter._last_ts, counter._total = raw, ts, total
        return counter


def _opt_int(state: Mapping[str, object], key: str) -> int | None:
    value = state.get(key)
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise CounterError(f"counter state: {key} {value!r} is not an integer")
