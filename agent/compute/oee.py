"""How effective was a machine in a shift? Times, pieces, A, P, Q and OEE from machine facts.

Inputs are the records of :mod:`agent.compute.facts`: a machine's
:class:`StateInterval` list and the :class:`CountStep` of its piece counters,
for one :class:`~agent.compute.shifts.ShiftInstance`. The rules (decisions in
docs/decisions/0015-shifts-oee-energy.md):

- **Planned time** is the shift minus its breaks, minus the time spent in a
  planned-downtime mode (maintenance...), cut at ``as_of`` for a running figure.
  Running during a break is reported as ``run_outside_planned``, not planned
  (unless ``breaks_count_if_running``).
- **A stop** is a run of adjacent idle / stopped / fault intervals; offline
  ends it. A stop of at most ``micro_stop_max`` (inclusive, its whole length,
  also outside planned time) is a micro-stop, a longer one is downtime. Only
  the planned part of either is counted.
- **Unknown** time is planned time in ``offline`` or with no interval at all.
  ``exclude``: out of A's numerator and denominator, ``coverage`` = known /
  planned. ``as_down``: in A's denominator only.
- **Method** ``common``: micro-stops are a performance loss (operating time =
  run + micro-stops); ``iso22400``: an availability loss (operating = run).
- **Pieces** belong to the shift of the read that observed them (never split).
  A gap, a counter re-initialised within the shift, or reads around a shift
  boundary further apart than twice the poll interval flag ``counts_incomplete``.
- **P above 1** is reported as computed and flagged ``performance_over_100``;
  OEE is never clipped either (it stays ideal cycle x good / planned).
- **Roll-ups** add times, pieces and ideal times (:func:`rollup`); ratios are
  never averaged.

Pure: the caller feeds records; :class:`CountTally` and :class:`Revisions`
keep what must survive a restart as a small JSON-able dict.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from agent.compute.facts import CountStep, StateInterval
from agent.compute.shifts import Period, ShiftInstance

Method = Literal["common", "iso22400"]
UnknownTime = Literal["exclude", "as_down"]

STOP_STATES = frozenset({"idle", "stopped", "fault"})
"""States that make a stop (``offline`` is unknown, never a stop)."""

DIGITS = 6
"""Ratios in :meth:`Figures.to_dict` are rounded to this many decimals."""


@dataclass(frozen=True, slots=True, kw_only=True)
class OeeConfig:
    """How one machine's OEE is computed."""

    ideal_cycle_s: float
    """Theoretical best seconds per piece on this machine (for the current product)."""
    poll_interval_ms: int
    """The counters' poll interval: reads around a boundary more than twice it apart are suspect."""
    micro_stop_max_ms: int = 120_000
    method: Method = "common"
    unknown_time: UnknownTime = "exclude"
    planned_downtime_modes: frozenset[str] = frozenset()
    breaks_count_if_running: bool = False

    def __post_init__(self) -> None:
        if not self.ideal_cycle_s > 0:
            raise ValueError(f"ideal_cycle_s must be > 0, got {self.ideal_cycle_s}")
        if self.poll_interval_ms <= 0:
            raise ValueError(f"poll_interval_ms must be > 0, got {self.poll_interval_ms}")
        if self.micro_stop_max_ms < 0:
            raise ValueError(f"micro_stop_max_ms must be >= 0, got {self.micro_stop_max_ms}")
        if self.method not in ("common", "iso22400"):
            raise ValueError(f"method must be common or iso22400, got {self.method!r}")
        if self.unknown_time not in ("exclude", "as_down"):
            raise ValueError(f"unknown_time must be exclude or as_down, got {self.unknown_time!r}")


class CountTally:
    """What one counter gave one shift; feed it the counter's steps in time order.

    A step counts when ``start_ms <= ts_ms < end_ms``. The reasons that make the
    pieces incomplete: ``gap`` (a step without delta), ``start`` / ``end`` (the
    reads around that boundary are more than twice the poll interval apart, or
    the first read of the shift comes late), ``restart`` (the counter was read
    with no previous value inside the shift).
    """

    def __init__(self, start_ms: int, end_ms: int, poll_interval_ms: int) -> None:
        self.start_ms = start_ms
        self.end_ms = end_ms
        self.poll_interval_ms = poll_interval_ms
        self.pieces = 0
        self.steps = 0
        self.closed = False
        """A read after the shift end was seen: no later step changes this tally."""
        self._reasons: set[str] = set()

    @property
    def reasons(self) -> tuple[str, ...]:
        """Why the pieces may be incomplete, sorted; empty when they are complete."""
        return tuple(sorted(self._reasons))

    @property
    def incomplete(self) -> bool:
        """True when some pieces of the shift may be missing."""
        return bool(self._reasons)

    def add(self, step: CountStep) -> None:
        """Take the next step; those before the shift or after its first read past the end
        change nothing."""
        far = 2 * self.poll_interval_ms
        if step.ts_ms < self.start_ms or self.closed:
            return
        if step.ts_ms >= self.end_ms:
            self.closed = True
            if (
                step.prev_ts_ms is None
                or (step.prev_ts_ms < self.end_ms and step.ts_ms - step.prev_ts_ms > far)
                or (self.steps == 0 and step.prev_ts_ms >= self.end_ms)
            ):
                self._reasons.add("end")
            return
        if self.steps == 0:
            if step.prev_ts_ms is None:
                if step.ts_ms - self.start_ms > far:
                    self._reasons.add("start")
            elif step.prev_ts_ms >= self.start_ms or step.ts_ms - step.prev_ts_ms > far:
                self._reasons.add("start")
        elif step.prev_ts_ms is None:
            self._reasons.add("restart")
        self.steps += 1
        if step.delta is None:
            self._reasons.add("gap")
        else:
            self.pieces += step.delta

    def state(self) -> dict[str, Any]:
        """Everything the tally knows, JSON-able (see :meth:`from_state`)."""
        return {
            "start_ms": self.start_ms,
            "end_ms": self.end_ms,
            "poll_interval_ms": self.poll_interval_ms,
            "pieces": self.pieces,
            "steps": self.steps,
            "closed": self.closed,
            "reasons": sorted(self._reasons),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> CountTally:
        """The tally :meth:`state` described."""
        tally = cls(int(state["start_ms"]), int(state["end_ms"]), int(state["poll_interval_ms"]))
        tally.pieces = int(state["pieces"])
        tally.steps = int(state["steps"])
        tally.closed = bool(state["closed"])
        tally._reasons = {str(r) for r in state["reasons"]}
        return tally


def tally(steps: Iterable[CountStep], shift: ShiftInstance, poll_interval_ms: int) -> CountTally:
    """A :class:`CountTally` of ``shift`` fed ``steps`` (in time order)."""
    result = CountTally(shift.start_ms, shift.end_ms, poll_interval_ms)
    for step in steps:
        result.add(step)
    return result


@dataclass(frozen=True, slots=True)
class Figures:
    """Summed times (ms) and pieces, and the ratios they give; adds up across machines."""

    method: Method
    unknown_time: UnknownTime
    planned_ms: int = 0
    run_ms: int = 0
    micro_stop_ms: int = 0
    down_ms: int = 0
    unknown_ms: int = 0
    planned_down_ms: int = 0
    """Time in a planned-downtime mode, taken out of planned time."""
    run_outside_planned_ms: int = 0
    total: int = 0
    good: int = 0
    reject: int = 0
    ideal_total_ms: float = 0.0
    """Sum of ideal cycle x total pieces: the net run time the pieces needed."""
    ideal_good_ms: float = 0.0
    """Sum of ideal cycle x good pieces: the fully productive time."""
    counts_incomplete: bool = False

    @property
    def operating_ms(self) -> int:
        """A's numerator: run plus micro-stops (common), run only (iso22400)."""
        return self.run_ms + (self.micro_stop_ms if self.method == "common" else 0)

    @property
    def available_ms(self) -> int:
        """A's denominator: planned time less unknown time when it is excluded."""
        return self.planned_ms - (self.unknown_ms if self.unknown_time == "exclude" else 0)

    @property
    def availability(self) -> float | None:
        """Operating over available time (None without available time)."""
        return _ratio(self.operating_ms, self.available_ms)

    @property
    def performance(self) -> float | None:
        """Ideal time of the pieces over operating time; may exceed 1, never clipped."""
        return _ratio(self.ideal_total_ms, self.operating_ms)

    @property
    def quality(self) -> float | None:
        """Good over total pieces, weighted by ideal cycle across machines."""
        return _ratio(self.ideal_good_ms, self.ideal_total_ms)

    @property
    def oee(self) -> float | None:
        """Fully productive time over available time: A x P x Q when all three exist."""
        return _ratio(self.ideal_good_ms, self.available_ms)

    @property
    def coverage(self) -> float | None:
        """Share of planned time with a known state."""
        return _ratio(self.planned_ms - self.unknown_ms, self.planned_ms)

    @property
    def performance_over_100(self) -> bool:
        """P above 1, or pieces with no operating time: the ideal cycle (or the states) is wrong."""
        p = self.performance
        return p > 1 if p is not None else self.total > 0

    def __add__(self, other: Figures) -> Figures:
        if (self.method, self.unknown_time) != (other.method, other.unknown_time):
            raise ValueError(
                f"cannot add {self.method}/{self.unknown_time} figures "
                f"to {other.method}/{other.unknown_time} ones"
            )
        return Figures(
            self.method,
            self.unknown_time,
            self.planned_ms + other.planned_ms,
            self.run_ms + other.run_ms,
            self.micro_stop_ms + other.micro_stop_ms,
            self.down_ms + other.down_ms,
            self.unknown_ms + other.unknown_ms,
            self.planned_down_ms + other.planned_down_ms,
            self.run_outside_planned_ms + other.run_outside_planned_ms,
            self.total + other.total,
            self.good + other.good,
            self.reject + other.reject,
            self.ideal_total_ms + other.ideal_total_ms,
            self.ideal_good_ms + other.ideal_good_ms,
            self.counts_incomplete or other.counts_incomplete,
        )

    def to_dict(self) -> dict[str, Any]:
        """Times in seconds, pieces, ratios rounded to :data:`DIGITS`, the flags."""
        return {
            "method": self.method,
            "unknown_time": self.unknown_time,
            "planned_s": self.planned_ms / 1000,
            "run_s": self.run_ms / 1000,
            "micro_stop_s": self.micro_stop_ms / 1000,
            "down_s": self.down_ms / 1000,
            "unknown_s": self.unknown_ms / 1000,
            "planned_down_s": self.planned_down_ms / 1000,
            "run_outside_planned_s": self.run_outside_planned_ms / 1000,
            "total": self.total,
            "good": self.good,
            "reject": self.reject,
            "A": _round(self.availability),
            "P": _round(self.performance),
            "Q": _round(self.quality),
            "OEE": _round(self.oee),
            "coverage": _round(self.coverage),
            "performance_over_100": self.performance_over_100,
            "counts_incomplete": self.counts_incomplete,
        }


@dataclass(frozen=True, slots=True)
class ShiftSummary:
    """One machine's figures for one shift instance, whole (``final``) or so far."""

    machine: str
    shift: str
    """The shift instance's key, ``YYYY-MM-DD/name``."""
    start_ms: int
    end_ms: int
    as_of_ms: int
    ideal_cycle_s: float
    figures: Figures
    count_reasons: tuple[str, ...] = ()
    revision: int = 0

    @property
    def final(self) -> bool:
        """True once the shift has ended (late data may still revise it)."""
        return self.as_of_ms >= self.end_ms

    @property
    def id(self) -> str:
        """A stable id for an idempotent send: ``machine/shift/revision``."""
        return f"{self.machine}/{self.shift}/{self.revision}"

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able summary (figures flattened)."""
        return {
            "machine": self.machine,
            "shift": self.shift,
            "start_ms": self.start_ms,
            "end_ms": self.end_ms,
            "as_of_ms": self.as_of_ms,
            "final": self.final,
            "ideal_cycle_s": self.ideal_cycle_s,
            **self.figures.to_dict(),
            "count_reasons": list(self.count_reasons),
            "revision": self.revision,
        }


Counts = CountTally | Sequence[CountStep]


def shift_summary(
    machine: str,
    shift: ShiftInstance,
    states: Sequence[StateInterval],
    config: OeeConfig,
    *,
    total: Counts | None = None,
    good: Counts | None = None,
    reject: Counts | None = None,
    as_of_ms: int | None = None,
) -> ShiftSummary:
    """``machine``'s figures for ``shift``, up to ``as_of_ms`` (default: the shift's end).

    Two of ``total``, ``good`` and ``reject`` are given (the third follows:
    good = total - reject). ``states`` are the machine's intervals, ordered and
    not overlapping, covering the shift and every stop that reaches into it (a
    stop's whole length decides micro-stop or downtime); an open interval
    (``end_ms`` None) lasts until ``as_of_ms``.
    """
    as_of = shift.end_ms if as_of_ms is None else as_of_ms
    horizon = min(shift.end_ms, as_of)
    times = _times(shift, states, config, horizon, as_of)
    tallies = {
        name: _as_tally(c, shift, config.poll_interval_ms, as_of)
        for name, c in (("total", total), ("good", good), ("reject", reject))
        if c is not None
    }
    if len(tallies) != 2:
        raise ValueError("give two of total, good and reject")
    pieces = {name: c.pieces for name, c in tallies.items()}
    if "total" not in pieces:
        pieces["total"] = pieces["good"] + pieces["reject"]
    n_total = pieces["total"]
    n_good = pieces["good"] if "good" in pieces else n_total - pieces["reject"]
    n_reject = n_total - n_good
    reasons = tuple(sorted({f"{n}:{why}" for n, c in tallies.items() for why in c.reasons}))
    figures = replace(
        times,
        total=n_total,
        good=n_good,
        reject=n_reject,
        ideal_total_ms=config.ideal_cycle_s * 1000 * n_total,
        ideal_good_ms=config.ideal_cycle_s * 1000 * n_good,
        counts_incomplete=bool(reasons),
    )
    return ShiftSummary(
        machine,
        shift.key,
        shift.start_ms,
        shift.end_ms,
        as_of,
        config.ideal_cycle_s,
        figures,
        reasons,
    )


def rollup(parts: Iterable[ShiftSummary | Figures]) -> Figures:
    """Figures summed over machines (or shifts): times, pieces and ideal times, never ratios.

    Hence P = sum(ideal cycle x total) / sum(operating time), and A x P x Q = OEE.
    """
    figures = [p.figures if isinstance(p, ShiftSummary) else p for p in parts]
    if not figures:
        raise ValueError("nothing to roll up")
    result = figures[0]
    for f in figures[1:]:
        result = result + f
    return result


@dataclass(slots=True)
class Revisions:
    """The revision of each closed shift summary sent: late data that changes one raises it.

    State: ``{"machine/YYYY-MM-DD/name": {"revision": n, "digest": "...", "end_ms": t}}``.
    """

    seen: dict[str, dict[str, Any]] = field(default_factory=dict)

    def stamp(self, summary: ShiftSummary) -> ShiftSummary | None:
        """``summary`` with its revision when it is new or changed, None when already sent.

        Running figures (not ``final``) are returned as they are, revision 0,
        and not remembered.
        """
        if not summary.final:
            return summary
        key = f"{summary.machine}/{summary.shift}"
        digest = _digest(summary)
        last = self.seen.get(key)
        if last is not None and last["digest"] == digest:
            return None
        revision = 0 if last is None else int(last["revision"]) + 1
        self.seen[key] = {"revision": revision, "digest": digest, "end_ms": summary.end_ms}
        return replace(summary, revision=revision)

    def forget_before(self, ts_ms: int) -> None:
        """Drop the shifts that ended before ``ts_ms`` (no late data revises them any more)."""
        self.seen = {k: v for k, v in self.seen.items() if int(v["end_ms"]) >= ts_ms}

    def state(self) -> dict[str, Any]:
        """JSON-able state (see :meth:`from_state`)."""
        return {k: dict(v) for k, v in self.seen.items()}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Revisions:
        """The ledger :meth:`state` described."""
        return cls({str(k): dict(v) for k, v in state.items()})


def _digest(summary: ShiftSummary) -> str:
    body = summary.to_dict()
    for key in ("as_of_ms", "final", "revision"):
        body.pop(key)
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _as_tally(counts: Counts, shift: ShiftInstance, poll_ms: int, as_of: int) -> CountTally:
    """A running figure sees the reads before ``as_of``; a final one every read given (the one
    after the shift's end tells whether its last pieces are all there)."""
    if isinstance(counts, CountTally):
        return counts
    final = as_of >= shift.end_ms
    return tally((s for s in counts if final or s.ts_ms < as_of), shift, poll_ms)


def _times(
    shift: ShiftInstance,
    states: Sequence[StateInterval],
    config: OeeConfig,
    horizon: int,
    as_of: int,
) -> Figures:
    """The time figures of ``shift`` up to ``horizon`` (pieces left at zero)."""
    planned = _clip(shift.planned, shift.start_ms, horizon)
    window = Period(shift.start_ms, max(shift.start_ms, horizon))
    run = micro = down = unknown = planned_down = outside = covered = 0
    for interval, end, stop_ms in _resolved(states, as_of):
        span = Period(interval.start_ms, end)
        in_planned = sum(_overlap(span, p) for p in planned)
        in_window = _overlap(span, window)
        covered += in_planned
        if interval.mode is not None and interval.mode in config.planned_downtime_modes:
            planned_down += in_planned
        elif interval.state == "running":
            run += in_planned
            outside += in_window - in_planned
        elif interval.state == "offline":
            unknown += in_planned
        elif stop_ms is not None and stop_ms <= config.micro_stop_max_ms:
            micro += in_planned
        else:
            down += in_planned
    planned_ms = sum(p.ms for p in planned)
    unknown += planned_ms - covered
    planned_ms -= planned_down
    if config.breaks_count_if_running:
        planned_ms += outside
        run += outside
    return Figures(
        config.method,
        config.unknown_time,
        planned_ms=planned_ms,
        run_ms=run,
        micro_stop_ms=micro,
        down_ms=down,
        unknown_ms=unknown,
        planned_down_ms=planned_down,
        run_outside_planned_ms=outside,
    )


def _resolved(
    states: Sequence[StateInterval], as_of: int
) -> list[tuple[StateInterval, int, int | None]]:
    """Each interval with its end (an open one ends at ``as_of``) and, for a stop, the length
    of the whole stop it belongs to."""
    out: list[tuple[StateInterval, int, int | None]] = []
    previous_end: int | None = None
    for i, interval in enumerate(states):
        end = as_of if interval.end_ms is None else interval.end_ms
        if interval.end_ms is None and i != len(states) - 1:
            raise ValueError(
                f"only the last interval may be open, not the one at {interval.start_ms}"
            )
        if end < interval.start_ms:
            raise ValueError(f"interval at {interval.start_ms} ends before it starts")
        if previous_end is not None and interval.start_ms < previous_end:
            raise ValueError(f"intervals overlap at {interval.start_ms}: give them in time order")
        previous_end = end
        out.append((interval, end, None))
    # A stop: adjacent idle/stopped/fault intervals; its whole length goes to each of them.
    i = 0
    while i < len(out):
        if out[i][0].state not in STOP_STATES:
            i += 1
            continue
        j = i
        while (
            j + 1 < len(out)
            and out[j + 1][0].state in STOP_STATES
            and out[j + 1][0].start_ms == out[j][1]
        ):
            j += 1
        length = out[j][1] - out[i][0].start_ms
        for k in range(i, j + 1):
            out[k] = (out[k][0], out[k][1], length)
        i = j + 1
    return out


def _clip(periods: Sequence[Period], lo: int, hi: int) -> list[Period]:
    return [
        Period(max(p.start_ms, lo), min(p.end_ms, hi))
        for p in periods
        if p.start_ms < hi and lo < p.end_ms
    ]


def _overlap(a: Period, b: Period) -> int:
    return max(0, min(a.end_ms, b.end_ms) - max(a.start_ms, b.start_ms))


def _ratio(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, DIGITS)
