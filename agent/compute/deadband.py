"""Report-by-exception: absolute deadband with a heartbeat, per tag.

A tag with a deadband is reported only when it moved more than the deadband
since the value last reported, or when its heartbeat (maximum silence) ran
out. Non-numeric values are reported on any change. A tag without deadband
and heartbeat is reported on every poll. Errors are always reported, and a
tag that comes back from an error is reported at once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from drivers.base import Reading, TagBase, Value


@dataclass(frozen=True, slots=True)
class _Rule:
    deadband: float | None
    heartbeat_ms: int | None


class Filter:
    """Per-device deadband state; feed it every reading in time order."""

    def __init__(self, tags: Mapping[str, TagBase]) -> None:
        self._rules = {
            name: _Rule(tag.deadband, int(tag.heartbeat * 1000) if tag.heartbeat else None)
            for name, tag in tags.items()
            if tag.deadband is not None or tag.heartbeat is not None
        }
        self._last: dict[str, tuple[Value, int]] = {}

    @property
    def active(self) -> bool:
        """False when no tag of the device filters anything (the fast path)."""
        return bool(self._rules)

    def apply(self, reading: Reading, now_ms: int | None = None) -> Reading:
        """The part of ``reading`` worth reporting (may hold no values and no errors).

        Heartbeats are timed with ``now_ms`` when given (the poller passes the
        monotonic clock, which never steps), else with ``reading.ts``: a device's
        own timestamp may stand still while its value does (OPC UA source
        timestamps), and a wall clock stepped back an hour would silence every
        heartbeat for that hour.
        """
        if not self._rules:
            return reading
        ts = reading.ts if now_ms is None else now_ms
        kept: dict[str, Value] = {}
        for name, value in reading.values.items():
            rule = self._rules.get(name)
            if rule is None or self._changed(name, value, ts, rule):
                kept[name] = value
        for name in reading.errors:
            self._last.pop(name, None)
        return Reading(reading.ts, kept, reading.errors)

    def _changed(self, name: str, value: Value, ts: int, rule: _Rule) -> bool:
        last = self._last.get(name)
        report = (
            last is None
            or (rule.heartbeat_ms is not None and ts - last[1] >= rule.heartbeat_ms)
            or _moved(last[0], value, rule.deadband)
        )
        if report:
            self._last[name] = (value, ts)
        return report


def _moved(old: Value, new: Value, deadband: float | None) -> bool:
    numeric = (int, float)
    if (
        deadband is not None
        and isinstance(old, numeric)
        and not isinstance(old, bool)
        and isinstance(new, numeric)
        and not isinstance(new, bool)
    ):
        # NaN compares false with everything: without this a tag that once read
        # NaN would never be reported again (and NaN -> NaN is no change).
        if math.isnan(old) or math.isnan(new):
            return math.isnan(old) != math.isnan(new)
        return abs(new - old) > deadband
    # Heartbeat-only numeric tags and every non-numeric tag report on change.
    return old != new and not (_is_nan(old) and _is_nan(new))


def _is_nan(value: Value) -> bool:
    return isinstance(value, float) and math.isnan(value)
