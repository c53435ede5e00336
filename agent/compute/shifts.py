"""Which shift is it? A site calendar turns epoch milliseconds into local shifts.

A calendar has a time zone, the workdays of the week, holidays and the shifts
of a workday. A shift is given in local wall-clock time; when it ends at or
before its start it crosses midnight and belongs to the date it starts on
(the workday and holiday tests look at that date). Breaks are local times
inside their shift; a shift's *planned* periods are the shift minus its breaks.

Local times become instants through :mod:`zoneinfo`, so a shift across a
daylight-saving change has its real length (a 22:00-06:00 night shift lasts
7 h or 9 h on the change nights in Europe/Berlin). A local time the clock
skips (spring forward) is the instant the clock jumps; a local time that
occurs twice (fall back) is its first occurrence. Both rules keep local
order, so a break never ends before it starts.

Pure: no I/O, no clock. A calendar is configuration, not state; it is built
from a JSON-able mapping with :meth:`Calendar.from_config`.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_MIN = 24 * 60 * 60  # spans are counted in seconds after local midnight
_TIME = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?$")


class CalendarError(ValueError):
    """A calendar that cannot work: a bad time, overlapping shifts, a break outside its shift."""


@dataclass(frozen=True, slots=True)
class Period:
    """The instants ``start_ms <= t < end_ms`` (epoch milliseconds, UTC)."""

    start_ms: int
    end_ms: int

    @property
    def ms(self) -> int:
        """Length in milliseconds."""
        return self.end_ms - self.start_ms


@dataclass(frozen=True, slots=True)
class ShiftDef:
    """One shift of a workday in local wall-clock time (``end <= start``: crosses midnight)."""

    name: str
    start: time
    end: time
    breaks: tuple[tuple[time, time], ...] = ()


@dataclass(frozen=True, slots=True)
class ShiftInstance:
    """A shift on one date: its instants, its breaks and the planned periods between them."""

    day: date
    """The local date the shift starts on (a night shift's date is its evening's)."""
    name: str
    start_ms: int
    end_ms: int
    breaks: tuple[Period, ...]
    planned: tuple[Period, ...]
    """The shift minus its breaks, in time order."""

    @property
    def key(self) -> str:
        """A stable id of the instance, ``YYYY-MM-DD/name``."""
        return f"{self.day.isoformat()}/{self.name}"

    @property
    def planned_ms(self) -> int:
        """Planned time of the whole shift in milliseconds."""
        return sum(p.ms for p in self.planned)


def parse_time(text: object, where: str) -> time:
    """A local ``HH:MM`` (00:00-23:59, ``HH:MM:SS`` too), or a :class:`CalendarError`
    naming ``where``."""
    match = _TIME.match(text) if isinstance(text, str) else None
    if match is None:
        raise CalendarError(f"{where}: {text!r} is not a time HH:MM (00:00 to 23:59)")
    return time(int(match.group(1)), int(match.group(2)), int(match.group(3) or 0))


def _minutes(t: time) -> int:
    """Seconds after midnight (the name is older than the seconds)."""
    return t.hour * 3600 + t.minute * 60 + t.second


class Calendar:
    """A site calendar: time zone, workdays, holidays and the shifts of a workday."""

    def __init__(
        self,
        timezone: str,
        shifts: Sequence[ShiftDef],
        workdays: Iterable[str] = WEEKDAYS[:5],
        holidays: Iterable[date] = (),
    ) -> None:
        try:
            self._tz: tzinfo = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError, TypeError) as exc:
            raise CalendarError(f"timezone: {timezone!r} is not a known time zone") from exc
        self.timezone = timezone
        days = list(workdays)
        unknown = [d for d in days if d not in WEEKDAYS]
        if unknown:
            raise CalendarError(f"workdays: {unknown} are not among {list(WEEKDAYS)}")
        self._workdays = frozenset(WEEKDAYS.index(d) for d in days)
        self._holidays = frozenset(holidays)
        self._shifts = tuple(shifts)
        self._spans = _check(self._shifts)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Calendar:
        """A calendar from ``{timezone, workdays, holidays, shifts: [{name, start, end, breaks}]}``.

        Times are ``"HH:MM"`` strings, holidays ``"YYYY-MM-DD"``, breaks pairs of times.
        """
        shifts: list[ShiftDef] = []
        for i, raw in enumerate(config.get("shifts", ())):
            name = raw.get("name")
            if not isinstance(name, str) or not name:
                raise CalendarError(f"shifts[{i}].name: a shift needs a name")
            where = f"shifts[{i}] ({name})"
            breaks = tuple(
                (parse_time(b[0], f"{where}.breaks[{j}]"), parse_time(b[1], f"{where}.breaks[{j}]"))
                for j, b in enumerate(raw.get("breaks", ()))
            )
            start = parse_time(raw.get("start"), f"{where}.start")
            end = parse_time(raw.get("end"), f"{where}.end")
            shifts.append(ShiftDef(name, start, end, breaks))
        holidays: list[date] = []
        for text in config.get("holidays", ()):
            try:
                holidays.append(date.fromisoformat(text))
            except (TypeError, ValueError) as exc:
                raise CalendarError(f"holidays: {text!r} is not a date YYYY-MM-DD") from exc
        return cls(
            config.get("timezone", ""),
            shifts,
            config.get("workdays", WEEKDAYS[:5]),
            holidays,
        )

    @property
    def shifts(self) -> tuple[ShiftDef, ...]:
        """The shifts of a workday, as configured."""
        return self._shifts

    def is_workday(self, day: date) -> bool:
        """True when shifts start on ``day``: a workday of the week and not a holiday."""
        return day.weekday() in self._workdays and day not in self._holidays

    def instance(self, day: date, name: str) -> ShiftInstance | None:
        """Shift ``name`` starting on ``day``, or None when no shift starts on that date."""
        for definition, span in zip(self._shifts, self._spans, strict=True):
            if definition.name == name:
                return self._instance(day, definition, span) if self.is_workday(day) else None
        raise CalendarError(f"no shift named {name!r}")

    def shift_at(self, ts_ms: int) -> ShiftInstance | None:
        """The shift instance holding instant ``ts_ms`` (start inclusive, end exclusive)."""
        local = self._local_date(ts_ms)
        for shift in self._instances(local - timedelta(days=1), local):
            if shift.start_ms <= ts_ms < shift.end_ms:
                return shift
        return None

    def shifts_between(self, a_ms: int, b_ms: int) -> list[ShiftInstance]:
        """Every shift instance overlapping ``[a_ms, b_ms)``, in time order."""
        if b_ms <= a_ms:
            return []
        return [
            s
            for s in self._instances(
                self._local_date(a_ms) - timedelta(days=1), self._local_date(b_ms)
            )
            if s.start_ms < b_ms and a_ms < s.end_ms
        ]

    def _local_date(self, ts_ms: int) -> date:
        return datetime.fromtimestamp(ts_ms / 1000, UTC).astimezone(self._tz).date()

    def _instances(self, first: date, last: date) -> list[ShiftInstance]:
        found: list[ShiftInstance] = []
        day = first
        while day <= last:
            if self.is_workday(day):
                found.extend(
                    self._instance(day, d, s)
                    for d, s in zip(self._shifts, self._spans, strict=True)
                )
            day += timedelta(days=1)
        found.sort(key=lambda s: s.start_ms)
        return found

    def _instance(self, day: date, definition: ShiftDef, span: _Span) -> ShiftInstance:
        start = self._instant(day, span.start)
        end = self._instant(day, span.end)
        instants = ((self._instant(day, a), self._instant(day, b)) for a, b in span.breaks)
        # A break wholly in the hour the clock skips has no length that night.
        breaks = tuple(Period(a, b) for a, b in instants if b > a)
        planned: list[Period] = []
        cursor = start
        for b in breaks:
            if b.start_ms > cursor:
                planned.append(Period(cursor, b.start_ms))
            cursor = max(cursor, b.end_ms)
        if end > cursor:
            planned.append(Period(cursor, end))
        return ShiftInstance(day, definition.name, start, end, breaks, tuple(planned))

    def _instant(self, day: date, seconds: int) -> int:
        """Epoch ms of local wall time ``day`` + ``seconds`` (may exceed one day)."""
        wall = datetime.combine(day, time()) + timedelta(seconds=seconds)
        return local_to_ms(wall, self._tz)


def local_to_ms(wall: datetime, tz: tzinfo) -> int:
    """Epoch ms of naive local ``wall`` in ``tz``: a skipped time is the jump, a repeated one
    its first occurrence."""
    first = wall.replace(tzinfo=tz, fold=0)
    utc = first.astimezone(UTC)
    if utc.astimezone(tz).replace(tzinfo=None) == wall:
        return _ms(utc)
    # The clock skips ``wall``: find the instant it jumps, between the two readings of it.
    second = wall.replace(tzinfo=tz, fold=1)
    after = second.utcoffset()
    lo, hi = sorted((_ms(second.astimezone(UTC)), _ms(utc)))
    while hi - lo > 1000:  # transitions fall on whole seconds
        mid = (lo + hi) // 2 // 1000 * 1000
        if datetime.fromtimestamp(mid / 1000, UTC).astimezone(tz).utcoffset() == after:
            hi = mid
        else:
            lo = mid
    return hi


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _ms(dt: datetime) -> int:
    return (dt - _EPOCH) // timedelta(milliseconds=1)


@dataclass(frozen=True, slots=True)
class _Span:
    """A shift in seconds after the local midnight of its date (end may pass 24:00)."""

    start: int
    end: int
    breaks: tuple[tuple[int, int], ...]


def _check(shifts: Sequence[ShiftDef]) -> tuple[_Span, ...]:
    """Each shift's span in seconds, or a :class:`CalendarError` for what cannot work."""
    if not shifts:
        raise CalendarError("shifts: a calendar needs at least one shift")
    names = [s.name for s in shifts]
    if len(set(names)) != len(names):
        raise CalendarError(f"shifts: names must be unique, got {names}")
    spans = [_span(s) for s in shifts]
    for i, one in enumerate(spans):
        for j in range(i + 1, len(spans)):
            other = spans[j]
            for days in (-1, 0, 1):
                shift = days * _DAY_MIN
                if one.start < other.end + shift and other.start + shift < one.end:
                    raise CalendarError(f"shifts {shifts[i].name} and {shifts[j].name} overlap")
    return tuple(spans)


def _span(s: ShiftDef) -> _Span:
    start = _minutes(s.start)
    end = _minutes(s.end)
    if end == start:
        raise CalendarError(f"shift {s.name}: start and end are both {s.start:%H:%M}")
    if end < start:
        end += _DAY_MIN
    breaks: list[tuple[int, int]] = []
    for a, b in s.breaks:
        ba = (_minutes(a) - start) % _DAY_MIN + start
        bb = (_minutes(b) - start) % _DAY_MIN + start
        if not start <= ba < bb <= end:
            raise CalendarError(
                f"shift {s.name}: break {a:%H:%M}-{b:%H:%M} is not inside "
                f"{s.start:%H:%M}-{s.end:%H:%M}"
            )
        breaks.append((ba, bb))
    breaks.sort()
    for (_, end1), (start2, _) in itertools.pairwise(breaks):
        if start2 < end1:
            raise CalendarError(f"shift {s.name}: its breaks overlap")
    return _Span(start, end, tuple(breaks))
