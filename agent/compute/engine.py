"""One machine's facts as its readings arrive: the state machine, counters, alarms, shifts.

:class:`Machine` runs a :class:`~agent.compute.plan.MachinePlan`. The runtime
feeds it the raw readings of the machine's devices (before any deadband),
calls :meth:`Machine.tick` now and then, and :meth:`Machine.drain` to take the
events to commit together with :meth:`Machine.state`, in one transaction. A
restart builds the machine again from that state: what it had counted and not
yet sent is part of the state, so a kill between two commits neither loses nor
repeats a piece (the reads after the last commit are simply read again: the
next read is compared with the last committed one).

Events are the dicts of docs/EVENTS.md. What the engine adds to the core:

* **State events**: an interval is announced when the state machine accepts
  it (back-dated by debounce and offline rules), and again when it closes.
* **Counts**: the deltas of each counter are summed and sent every
  ``count_every_ms`` as one ``count`` event; a gap is a ``counter_gap`` event
  at once. Every step also goes to the tallies of the shifts it belongs to.
* **Alarms**: raised when the condition holds; a clear is held for
  ``min_repeat_ms`` (raised again meanwhile, the alarm stays the same); the
  machine going offline ends an active alarm with quality ``stale``.
* **Shifts**: a running figure every ``publish_every_ms``; the summary once the
  shift is over and nothing can still be back-dated into it (debounce +
  offline_after + two polls); a revision when a fact decided later (a state
  back-dated across the end) changes a summary already sent.
* **Energy**: meter reads kept for the shifts still open, thinned once settled
  to those the energy split needs (the register is cumulative: dropping a read
  with no boundary between its neighbours changes no figure).

Pure: no clock, no I/O; times are the readings' (epoch ms).
"""

from __future__ import annotations

import bisect
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Final

from agent.compute.counters import Counter, CounterError
from agent.compute.energy import MeterRead, energy_summary
from agent.compute.facts import MACHINE_STATES, CountStep, MachineState, StateInterval
from agent.compute.oee import CountTally, Revisions, ShiftSummary, shift_summary
from agent.compute.plan import AlarmPlan, CounterPlan, MachinePlan
from agent.compute.shifts import ShiftInstance
from agent.compute.state import StateConfigError, StateMachine
from drivers.base import Reading, Value

log = logging.getLogger(__name__)

STATE_VERSION: Final = 1
COUNT_EVERY_MS: Final = 10_000
"""Count events are sent at most this often per counter (the deltas are summed)."""
MAX_INTERVALS: Final = 5000
"""State intervals kept for the shifts still open; past this the oldest are dropped."""
AHEAD_MS: Final = 300_000
"""A reading stamped further ahead of when it was seen is dated when it was seen."""
KEEP_DONE_MS: Final = 3_600_000
"""A shift summary sent is kept this long for revisions."""

Event = dict[str, Any]
_DAY_MS: Final = 86_400_000
_FLOAT32_MAX: Final = 3.4028234663852886e38


@dataclass(slots=True)
class _Pending:
    """Pieces counted and not yet sent in a count event."""

    delta: int = 0
    from_ms: int | None = None
    to_ms: int | None = None
    kinds: set[str] = field(default_factory=set)


@dataclass(slots=True)
class _Alarm:
    active: bool = False
    start_ms: int = 0
    clear_ms: int | None = None
    """When the condition stopped holding, while the clear is held for min_repeat."""


@dataclass(slots=True)
class _Shift:
    instance: ShiftInstance
    tallies: dict[str, CountTally]
    published_ms: int | None = None
    final: bool = False


@dataclass(frozen=True, slots=True)
class Drained:
    """What a commit takes: the events, and which of them the history keeps."""

    events: list[Event]
    history: list[Event]


class Machine:
    """One machine's running facts (see the module docstring)."""

    def __init__(
        self,
        plan: MachinePlan,
        saved: Mapping[str, Any] | None = None,
        *,
        count_every_ms: int = COUNT_EVERY_MS,
    ) -> None:
        self.plan = plan
        self.name = plan.name
        self.count_every_ms = count_every_ms
        self.problems: list[str] = []
        """Why parts of the machine could not be read (a counter typed wrongly...)."""
        self._events: list[Event] = []
        self._values: dict[str, Value] = {}
        self._routes = _routes(plan)
        self._tracked: tuple[int, int] | None = None
        """Shifts are tracked for reads from [0] on; none starts before [1] (a cache: the
        calendar's instances cost time zone arithmetic)."""
        self._sm_last: int | None = None
        """The time of the last read the state machine took (see :meth:`feed`)."""
        self._sm = StateMachine(plan.state) if plan.state is not None else None
        self._state_aliases = frozenset() if plan.state is None else plan.state.inputs
        self._judged: tuple[dict[str, Value], list[str]] | None = None
        """The state inputs (values, aliases in error) the state machine last judged."""
        self._open: StateInterval | None = None
        self._intervals: list[StateInterval] = []
        self._counters: dict[str, Counter] = {c.role: Counter(c.spec) for c in plan.counters}
        self._pending: dict[str, _Pending] = {c.role: _Pending() for c in plan.counters}
        self._last_count_ms: dict[str, int] = {}
        self._alarms = {a.name: _Alarm() for a in plan.alarms}
        self._shifts: dict[str, _Shift] = {}
        self._meter: list[MeterRead] = []
        self._revisions = Revisions()
        self._latest: ShiftSummary | None = None
        self._latest_energy: dict[str, Any] | None = None
        self._last_ms: int | None = None
        self._dirty = False
        if saved is not None:
            self._restore(saved)

    # ------------------------------------------------------------------ input

    def feed(self, device: str, reading: Reading, seen_ms: int | None = None) -> None:
        """Take one raw reading of ``device`` (one of the plan's devices).

        ``seen_ms``: when the agent took the reading. A device that stamps values with
        their own change time (OPC UA) keeps the stamp of a value that stands still: the
        state machine then takes the unchanged read as of when it was seen, so a quiet
        machine is never taken for a silent one.
        """
        route = self._routes.get(device)
        if route is None:
            return
        if seen_ms is not None and reading.ts > seen_ms + AHEAD_MS:
            # a device stamp ahead of the box (a PLC clock, a bad source timestamp): the
            # facts would run into the future; the read is dated when it was seen
            reading = Reading(seen_ms, reading.values, reading.errors)
        ts = reading.ts
        if self._last_ms is not None and ts + 600_000 < self._last_ms:
            return  # far in the past (a clock step back): nothing to decide from it
        self._track_shifts(ts)
        touched = state_read = False
        for alias, tag in route.inputs:
            if tag in reading.values:
                self._values[alias] = reading.values[tag]
            elif tag in reading.errors:
                self._values.pop(alias, None)
            else:
                continue
            touched = True
            state_read = state_read or alias in self._state_aliases
        for plan in route.counters:
            self._count(plan, reading)
        if route.meter is not None:
            self._meter_read(route.meter, reading)
        if self._sm is not None and state_read:  # a read of another poll group says nothing
            errors = [a for a, t in route.inputs if t in reading.errors]
            values = self._state_values()
            # A device that stamps values with their own change time (OPC UA) gives a
            # group's read a time no newer than another group's: new values still count,
            # judged as of the last read (late); the same values under a stamp that
            # stands still say the machine is there, as of when the agent saw them.
            late = (values, errors) != self._judged
            at, last = ts, self._sm_last
            if not late and seen_ms is not None and last is not None and ts <= last:
                at = max(seen_ms, last + 1)
            closed = self._sm.feed(at, values, errors, late=late)
            self._sm_last = at if self._sm_last is None else max(self._sm_last, at)
            self._judged = (values, errors)
            self._states(closed)
        if touched and self._alarms:
            self._judge_alarms(ts)
        self._last_ms = max(ts, self._last_ms or ts)
        self._dirty = True

    def tick(self, now_ms: int) -> None:
        """Notice silence (offline), held alarm clears, running figures and shift ends."""
        if self._sm is not None:
            self._states(self._sm.tick(now_ms))
        for name, alarm in self._alarms.items():
            plan = next(a for a in self.plan.alarms if a.name == name)
            held = alarm.clear_ms
            if alarm.active and held is not None and now_ms - held >= plan.min_repeat_ms:
                self._clear(plan, alarm, held, "good")
        # a device's clock ahead of ours (or reads of several devices out of order):
        # a figure is never as of an instant before a state it already knows
        as_of = max(now_ms, min(self._last_ms or now_ms, now_ms + AHEAD_MS))
        self._track_shifts(as_of)
        self._shift_figures(as_of)

    # ----------------------------------------------------------------- output

    def drain(self, now_ms: int) -> Drained:
        """The events decided since the last drain, and those the history keeps."""
        self._flush_counts(now_ms, force=False)
        self._thin_meter(now_ms)
        events, self._events = self._events, []
        events.sort(key=lambda e: int(e["ts"]))
        history = [e for e in events if e["type"] != "count"]
        return Drained(events, history)

    @property
    def dirty(self) -> bool:
        """Something changed since the last :meth:`state` (a commit is due)."""
        return self._dirty or bool(self._events)

    def state(self) -> dict[str, Any]:
        """Everything a restart needs, JSON-able; to commit with the drained events."""
        self._dirty = False
        return {
            "v": STATE_VERSION,
            "sm": None if self._sm is None else self._sm.state(),
            "open": None if self._open is None else _dump_interval(self._open),
            "intervals": [_dump_interval(i) for i in self._intervals],
            "counters": {role: c.state() for role, c in self._counters.items()},
            "pending": {
                role: [p.delta, p.from_ms, p.to_ms, sorted(p.kinds)]
                for role, p in self._pending.items()
            },
            "last_count_ms": dict(self._last_count_ms),
            "alarms": {n: [a.active, a.start_ms, a.clear_ms] for n, a in self._alarms.items()},
            "shifts": {
                key: {
                    "tallies": {r: t.state() for r, t in s.tallies.items()},
                    "published_ms": s.published_ms,
                    "final": s.final,
                }
                for key, s in self._shifts.items()
            },
            "meter": [[r.ts_ms, _json_number(r.kwh)] for r in self._meter],
            "revisions": self._revisions.state(),
            "last_ms": self._last_ms,
            "values": dict(self._values),
            "sm_last": self._sm_last,
            "judged": None if self._judged is None else [self._judged[0], self._judged[1]],
        }

    # ----------------------------------------------------------------- status

    @property
    def current(self) -> StateInterval | None:
        """The state now and since when (None before the first)."""
        return None if self._sm is None else self._sm.current

    def totals(self) -> dict[str, int]:
        """Each counter's running total since its state began."""
        return {role: c.running_total for role, c in self._counters.items()}

    def shift_now(self, now_ms: int) -> ShiftSummary | None:
        """The running figure of the shift in progress at ``now_ms`` (None outside shifts)."""
        for s in self._shifts.values():
            if s.instance.start_ms <= now_ms < s.instance.end_ms:
                return self._summary(s, now_ms)
        return None

    def latest(self) -> ShiftSummary | None:
        """The last shift figure sent (running or final)."""
        return self._latest

    # ---------------------------------------------------------------- states

    def _state_values(self) -> dict[str, Value]:
        return {a: v for a, v in self._values.items() if a in self._state_aliases}

    def _states(self, closed: Sequence[StateInterval]) -> None:
        for interval in closed:
            if self._open is None or self._open.start_ms != interval.start_ms:
                if self._open is not None:
                    self._retract(self._open, interval.start_ms)
                self._emit_state(interval, opening=True)
            self._emit_state(interval, opening=False)
            self._keep(interval)
            self._open = None
            self._revise(interval)
        assert self._sm is not None
        current = self._sm.current
        if current is None:
            return
        if self._open is not None and _same_open(self._open, current):
            return
        if self._open is not None:
            self._retract(self._open, current.start_ms)
        self._open = current
        self._emit_state(current, opening=True)
        if current.state == "offline":
            for plan in self.plan.alarms:
                alarm = self._alarms[plan.name]
                if alarm.active:
                    self._clear(plan, alarm, current.start_ms, "stale")

    def _retract(self, announced: StateInterval, superseded_at: int) -> None:
        """An announced interval the state machine replaced from before its start: close it
        with no length (it was a back-dated guess that did not last)."""
        del superseded_at  # its start: the guess never held
        self._emit_state(
            StateInterval(
                announced.start_ms,
                announced.start_ms,
                announced.state,
                announced.mode,
                announced.reason,
                announced.planned_downtime,
            ),
            opening=False,
        )  # fmt: skip

    def _emit_state(self, interval: StateInterval, *, opening: bool) -> None:
        end = None if opening else interval.end_ms
        self._events.append(
            {
                "type": "state",
                "id": f"{self.name}/state/{interval.start_ms}",
                "ts": interval.start_ms if opening or end is None else end,
                "state": interval.state,
                "reason": interval.reason,
                "mode": interval.mode,
                "planned_downtime": interval.planned_downtime,
                "start": interval.start_ms,
                "end": end,
            }
        )

    def _keep(self, interval: StateInterval) -> None:
        if interval.end_ms is not None and interval.end_ms <= interval.start_ms:
            return
        self._intervals.append(interval)
        if len(self._intervals) > MAX_INTERVALS:
            del self._intervals[: len(self._intervals) - MAX_INTERVALS]
            self._problem("more state changes than kept for one shift: the oldest dropped")

    def _timeline(self) -> list[StateInterval]:
        current = self.current
        if current is None:
            return list(self._intervals)
        return [*self._intervals, current]

    # -------------------------------------------------------------- counters

    def _count(self, plan: CounterPlan, reading: Reading) -> None:
        tag = plan.source.tag
        error = reading.errors.get(tag)
        if tag not in reading.values and error is None:
            return
        reset = False
        if plan.reset is not None:
            flag = reading.values.get(plan.reset.tag)
            reset = bool(flag) and not isinstance(flag, str)
        counter = self._counters[plan.role]
        try:
            step = counter.feed(reading.ts, reading.values.get(tag), error=error, reset=reset)
        except CounterError as exc:
            self._problem(f"counter {plan.role} ({plan.source}): {exc}")
            return
        if step is None:
            return
        self._step(plan.role, step)

    def _step(self, role: str, step: CountStep) -> None:
        for s in self._shifts.values():
            s.tallies[role].add(step)
        if step.kind == "first":
            return
        if step.delta is None:
            self._flush_count(role, step.prev_ts_ms or step.ts_ms)
            self._events.append(
                {
                    "type": "counter_gap",
                    "id": f"{self.name}/gap/{role}/{step.ts_ms}",
                    "ts": step.ts_ms,
                    "counter": role,
                    "from": step.prev_ts_ms,
                    "to": step.ts_ms,
                    "raw": step.raw,
                }
            )
            return
        pending = self._pending[role]
        if pending.from_ms is None:
            pending.from_ms = step.prev_ts_ms
        pending.to_ms = step.ts_ms
        pending.delta += step.delta
        pending.kinds.add(step.kind)

    def _flush_counts(self, now_ms: int, *, force: bool) -> None:
        for role in self._pending:
            last = self._last_count_ms.get(role)
            if force or last is None or now_ms - last >= self.count_every_ms:
                self._flush_count(role, now_ms)

    def _flush_count(self, role: str, now_ms: int) -> None:
        pending = self._pending[role]
        if pending.to_ms is None:
            return
        if pending.delta or pending.kinds - {"normal"}:
            self._events.append(
                {
                    "type": "count",
                    "id": f"{self.name}/count/{role}/{pending.to_ms}",
                    "ts": pending.to_ms,
                    "counter": role,
                    "delta": pending.delta,
                    "total": self._counters[role].running_total,
                    "from": pending.from_ms,
                    "to": pending.to_ms,
                    "kinds": sorted(pending.kinds),
                }
            )
        self._pending[role] = _Pending()
        self._last_count_ms[role] = now_ms

    # ---------------------------------------------------------------- alarms

    def _judge_alarms(self, ts: int) -> None:
        for plan in self.plan.alarms:
            alarm = self._alarms[plan.name]
            holds = plan.condition.holds(self._values)
            if holds is None:
                continue  # not known: neither raised nor cleared on a guess
            if holds:
                if not alarm.active:
                    alarm.active, alarm.start_ms, alarm.clear_ms = True, ts, None
                    self._emit_alarm(plan, alarm, None, "good")
                else:
                    alarm.clear_ms = None  # raised again within min_repeat: the same alarm
            elif alarm.active and alarm.clear_ms is None:
                alarm.clear_ms = ts
                if plan.min_repeat_ms <= 0:
                    self._clear(plan, alarm, ts, "good")

    def _clear(self, plan: AlarmPlan, alarm: _Alarm, end_ms: int, quality: str) -> None:
        alarm.active, alarm.clear_ms = False, None
        self._emit_alarm(plan, alarm, max(end_ms, alarm.start_ms), quality)

    def _emit_alarm(self, plan: AlarmPlan, alarm: _Alarm, end: int | None, quality: str) -> None:
        self._events.append(
            {
                "type": "alarm",
                "id": f"{self.name}/alarm/{plan.name}/{alarm.start_ms}",
                "ts": alarm.start_ms if end is None else end,
                "name": plan.name,
                "active": end is None,
                "severity": plan.severity,
                "message": plan.message,
                "start": alarm.start_ms,
                "end": end,
                "quality": quality,
            }
        )

    # ---------------------------------------------------------------- energy

    def _meter_read(self, tag: str, reading: Reading) -> None:
        value = reading.values.get(tag)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return
        if not math.isfinite(value) or (
            self.plan.energy is not None
            and self.plan.energy.register == "float32"
            and abs(value) > _FLOAT32_MAX
        ):
            self._problem(f"meter {tag}: {value!r} is no float32 register value: not counted")
            return
        if self._meter and reading.ts <= self._meter[-1].ts_ms:
            return
        self._meter.append(MeterRead(reading.ts, value))

    def _thin_meter(self, now_ms: int) -> None:
        """Drop settled reads no boundary needs: between two neighbours with no shift edge
        or state change strictly between them and no decrease."""
        reads = self._meter
        if self._shifts:
            oldest = min(s.instance.start_ms for s in self._shifts.values())
            first = next((i for i, r in enumerate(reads) if r.ts_ms >= oldest), len(reads))
            if first > 1:
                del reads[: first - 1]  # keep the one read before the oldest shift
        elif len(reads) > 2:
            del reads[:-2]
        if len(reads) < 3:
            return
        settled = now_ms - self._settle_ms()
        edges = sorted(
            {s.instance.start_ms for s in self._shifts.values()}
            | {s.instance.end_ms for s in self._shifts.values()}
            | {i.start_ms for i in self._timeline()}
            | {i.end_ms for i in self._intervals if i.end_ms is not None}
        )
        kept = [reads[0]]
        for i in range(1, len(reads) - 1):
            a, b, c = kept[-1], reads[i], reads[i + 1]
            if (
                c.ts_ms < settled
                and a.kwh <= b.kwh <= c.kwh
                and not _edge_between(edges, a.ts_ms, c.ts_ms)
            ):
                continue
            kept.append(b)
        kept.append(reads[-1])
        self._meter = kept

    # ---------------------------------------------------------------- shifts

    def _settle_ms(self) -> int:
        state = self.plan.state
        poll = self.plan.oee.poll_interval_ms if self.plan.oee is not None else 1000
        extra = 0 if state is None else state.debounce_ms + state.offline_after_ms
        meter = 0 if self.plan.energy is None else self.plan.energy.poll_ms
        return extra + 2 * max(poll, meter, 0 if state is None else (state.poll_ms or 0))

    def _track_shifts(self, ts: int) -> None:
        calendar = self.plan.calendar
        if calendar is None or self.plan.oee is None:
            return
        since = ts if self._last_ms is None else min(self._last_ms, ts)
        known = self._tracked
        if known is not None and known[0] <= since and ts < known[1]:
            return  # no shift starts before known[1]: every one up to ts is tracked
        for instance in calendar.shifts_between(since, ts + 1):
            if instance.key not in self._shifts and instance.end_ms > since:
                self._shifts[instance.key] = _Shift(instance, self._tallies(instance))
        upcoming = [
            s.start_ms for s in calendar.shifts_between(ts + 1, ts + 2 * _DAY_MS) if s.start_ms > ts
        ]
        self._tracked = (since, min(upcoming, default=ts + _DAY_MS))

    def _tallies(self, instance: ShiftInstance) -> dict[str, CountTally]:
        assert self.plan.oee is not None
        poll = self.plan.oee.poll_interval_ms
        return {
            c.role: CountTally(instance.start_ms, instance.end_ms, poll) for c in self.plan.counters
        }

    def _shift_figures(self, now_ms: int) -> None:
        every = self.plan.publish_every_ms
        settle = self._settle_ms()
        for key, s in list(self._shifts.items()):
            inst = s.instance
            if s.final:
                if now_ms >= inst.end_ms + settle + KEEP_DONE_MS:
                    del self._shifts[key]
                    self._revisions.forget_before(now_ms - KEEP_DONE_MS)
                continue
            if now_ms >= inst.end_ms + settle:
                self._flush_counts(now_ms, force=True)
                self._send_summary(s, inst.end_ms)
                s.final = True
                continue
            if (
                every > 0
                and inst.start_ms <= now_ms < inst.end_ms
                and (s.published_ms is None or now_ms - s.published_ms >= every)
            ):
                s.published_ms = now_ms
                self._send_summary(s, now_ms)
        self._prune_intervals()

    def _revise(self, interval: StateInterval) -> None:
        """A closed interval reaching into a shift already summed up may change its figures."""
        for s in self._shifts.values():
            if s.final and interval.start_ms < s.instance.end_ms:
                self._send_summary(s, s.instance.end_ms)

    def _summary(self, s: _Shift, as_of: int) -> ShiftSummary:
        assert self.plan.oee is not None
        tallies = s.tallies
        total = tallies.get("total")
        good = tallies.get("good")
        reject = tallies.get("reject")
        empty = CountTally(s.instance.start_ms, s.instance.end_ms, self.plan.oee.poll_interval_ms)
        given = {k: v for k, v in (("total", total), ("good", good), ("reject", reject)) if v}
        if len(given) < 2:
            # One counter: what it counts is all good (total) or all there is (good).
            if "reject" not in given:
                given["reject"] = empty
            if len(given) < 2:
                given["total"] = empty
        timeline = [
            i
            for i in self._timeline()
            if (i.end_ms is None or i.end_ms > s.instance.start_ms) and i.start_ms <= as_of
        ]  # a state begun after the figure's instant (the next shift's) is not its business
        return shift_summary(
            self.name,
            s.instance,
            _stop_run_before(self._intervals, s.instance.start_ms) + timeline,
            self.plan.oee,
            total=given.get("total"),
            good=given.get("good"),
            reject=given.get("reject"),
            as_of_ms=as_of,
        )

    def _send_summary(self, s: _Shift, as_of: int) -> None:
        summary = self._revisions.stamp(self._summary(s, as_of))
        if summary is None:
            return
        energy = self._energy(s, summary)
        self._latest, self._latest_energy = summary, energy
        suffix = "" if summary.final else f"/{as_of}"
        self._events.append(
            {
                "type": "shift",
                "id": f"{summary.id}{suffix}",
                "ts": as_of,
                **summary.to_dict(),
                "energy": energy,
            }
        )

    def _energy(self, s: _Shift, summary: ShiftSummary) -> dict[str, Any] | None:
        plan = self.plan.energy
        if plan is None or len(self._meter) < 2:
            return None
        inst = s.instance
        states = [
            i
            for i in self._timeline()
            if (i.end_ms is None or i.end_ms > inst.start_ms) and i.start_ms <= summary.as_of_ms
        ]
        result = energy_summary(
            self._meter,
            inst.start_ms,
            inst.end_ms,
            states,
            poll_interval_ms=plan.poll_ms,
            good=summary.figures.good,
            total=summary.figures.total,
            register=plan.register,
            as_of_ms=summary.as_of_ms,
        )
        return result.to_dict()

    def _prune_intervals(self) -> None:
        if not self._shifts:
            keep_from = self._last_ms or 0
        else:
            keep_from = min(s.instance.start_ms for s in self._shifts.values())
        cut = 0
        while cut < len(self._intervals):
            end = self._intervals[cut].end_ms
            if end is not None and end <= keep_from:
                cut += 1
            else:
                break
        # keep the stop run that reaches the oldest shift: its whole length decides
        while cut > 0 and self._intervals[cut - 1].state in ("idle", "stopped", "fault"):
            cut -= 1
        if cut:
            del self._intervals[:cut]

    # --------------------------------------------------------------- restart

    def _restore(self, saved: Mapping[str, Any]) -> None:
        if saved.get("v") != STATE_VERSION:
            self._problem(f"saved state version {saved.get('v')!r} unknown: started afresh")
            return
        try:
            self._restore_parts(saved)
        except (KeyError, TypeError, ValueError, StateConfigError, CounterError) as exc:
            self._problem(f"saved state unusable ({exc}): started afresh")
            fresh = Machine(self.plan, count_every_ms=self.count_every_ms)
            for name in ("_sm", "_open", "_intervals", "_counters", "_pending", "_alarms"):
                setattr(self, name, getattr(fresh, name))
            self._shifts, self._meter, self._last_ms = {}, [], None

    def _restore_parts(self, saved: Mapping[str, Any]) -> None:
        plan = self.plan
        if self._sm is not None and plan.state is not None and saved.get("sm") is not None:
            self._sm = StateMachine.from_state(plan.state, saved["sm"])
        opened = saved.get("open")
        self._open = None if opened is None else _load_interval(opened)
        self._intervals = [_load_interval(i) for i in saved.get("intervals", [])]
        for role, state in dict(saved.get("counters", {})).items():
            if role in self._counters:
                spec = self._counters[role].spec
                try:
                    self._counters[role] = Counter.from_state(spec, state)
                except CounterError as exc:
                    self._problem(f"counter {role}: saved state not used ({exc})")
        for role, raw in dict(saved.get("pending", {})).items():
            if role in self._pending:
                delta, from_ms, to_ms, kinds = raw
                self._pending[role] = _Pending(int(delta), from_ms, to_ms, set(kinds))
        self._last_count_ms = {
            str(k): int(v) for k, v in dict(saved.get("last_count_ms", {})).items()
        }
        alarms = dict(saved.get("alarms", {}))
        self._alarms.update(
            {n: _Alarm(bool(r[0]), int(r[1]), r[2]) for n, r in alarms.items() if n in self._alarms}
        )
        self._restore_shifts(saved)
        self._meter = [MeterRead(int(ts), kwh) for ts, kwh in saved.get("meter", [])]
        self._revisions = Revisions.from_state(dict(saved.get("revisions", {})))
        last = saved.get("last_ms")
        self._last_ms = None if last is None else int(last)
        self._values = dict(saved.get("values", {}))
        sm_last = saved.get("sm_last")
        self._sm_last = None if sm_last is None else int(sm_last)
        judged = saved.get("judged")
        self._judged = None if judged is None else (dict(judged[0]), list(judged[1]))

    def _restore_shifts(self, saved: Mapping[str, Any]) -> None:
        plan = self.plan
        if plan.calendar is not None and plan.oee is not None:
            for key, raw in dict(saved.get("shifts", {})).items():
                day, _, shift_name = str(key).partition("/")
                try:
                    instance = plan.calendar.instance(date.fromisoformat(day), shift_name)
                except ValueError:
                    instance = None
                if instance is None:
                    continue
                tallies = self._tallies(instance)
                for role, t in dict(raw.get("tallies", {})).items():
                    window = (t.get("start_ms"), t.get("end_ms"))
                    if role in tallies and window == (instance.start_ms, instance.end_ms):
                        tallies[role] = CountTally.from_state(t)  # else: the calendar changed
                self._shifts[key] = _Shift(
                    instance, tallies, raw.get("published_ms"), bool(raw.get("final"))
                )

    def _problem(self, text: str) -> None:
        if text not in self.problems:
            self.problems.append(text)
            log.warning("machine %s: %s", self.name, text)
            del self.problems[:-8]


# ----------------------------------------------------------------- helpers


@dataclass(frozen=True, slots=True)
class _Route:
    """What one device's readings feed: condition inputs, counters, the meter tag."""

    inputs: tuple[tuple[str, str], ...]
    counters: tuple[CounterPlan, ...]
    meter: str | None


def _routes(plan: MachinePlan) -> dict[str, _Route]:
    devices = plan.devices
    routes: dict[str, _Route] = {}
    for device in devices:
        inputs = tuple((a, s.tag) for a, s in plan.inputs.items() if s.device == device)
        counters = tuple(c for c in plan.counters if c.source.device == device)
        meter = (
            plan.energy.source.tag
            if plan.energy is not None and plan.energy.source.device == device
            else None
        )
        routes[device] = _Route(inputs, counters, meter)
    return routes


def _same_open(a: StateInterval, b: StateInterval) -> bool:
    return (a.start_ms, a.state, a.reason, a.mode) == (b.start_ms, b.state, b.reason, b.mode)


def _dump_interval(i: StateInterval) -> list[Any]:
    return [i.start_ms, i.end_ms, i.state, i.mode, i.reason, i.planned_downtime]


def _load_interval(raw: Sequence[Any]) -> StateInterval:
    start, end, state, mode, reason, planned = raw
    found: MachineState | None = next((s for s in MACHINE_STATES if s == state), None)
    if found is None:
        raise ValueError(f"state {state!r} unknown")
    return StateInterval(int(start), None if end is None else int(end), found, mode, reason,
                         bool(planned))  # fmt: skip


def _stop_run_before(intervals: Sequence[StateInterval], start_ms: int) -> list[StateInterval]:
    """The stop intervals adjacent to each other that end at or before ``start_ms`` and touch
    the first interval reaching into the shift (their whole length decides micro-stop)."""
    before = [i for i in intervals if i.end_ms is not None and i.end_ms <= start_ms]
    run: list[StateInterval] = []
    for interval in reversed(before):
        if interval.state not in ("idle", "stopped", "fault"):
            break
        if run and interval.end_ms != run[0].start_ms:
            break
        run.insert(0, interval)
    return run


def _edge_between(edges: Sequence[int], a: int, c: int) -> bool:
    i = bisect.bisect_right(edges, a)
    return i < len(edges) and edges[i] < c


def _json_number(value: object) -> int | float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    return float(value)  # type: ignore[arg-type]
