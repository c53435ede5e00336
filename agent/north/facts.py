"""A machine's facts as the cloud dialects carry them: events become values (pure).

An events message (:func:`agent.message.encode_event_parts`) has no place in
a cloud dialect as it is: each event becomes values of the machine, sent as
the machine's own (sub-)device with the event's ``ts`` as the timestamp
(docs/EVENTS.md, "The same facts in the other dialects"):

==============  =============================================================
event           values
==============  =============================================================
state, opening  ``state``, ``state_reason`` ("" when none), ``mode`` ("" when none)
state, closing  ``state_duration_s``
alarm           ``alarm_{name}`` (true while active)
count           ``count_{counter}`` (the running total)
counter_gap     ``counter_gap_{counter}_s`` (the gap's length)
clock           ``clock_state`` (the box itself, source ``_box``)
shift           ``shift``, ``shift_final``, ``oee``... (figures not known are left out)
==============  =============================================================

:func:`events_batch` turns a stored events payload into a dialect
:class:`~agent.north.dialects.common.Batch`: one reading per event that has
values, in the events' order, and the events themselves (Alink sends them as
events of the pack too). :func:`machine_tags` gives the datatypes a birth
announces.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from agent.message import BOX_SOURCE, decode_events
from agent.north.dialects.common import Batch, TagSpec
from drivers.base import Reading, Value

__all__ = [
    "BOX_SOURCE",
    "BOX_TAGS",
    "MACHINE_PROFILE",
    "batch_of_events",
    "event_values",
    "events_batch",
    "halves",
    "machine_attributes",
    "machine_tags",
]

MACHINE_PROFILE = "machine@1"
"""The profile a machine is announced with (ThingsBoard device type, Sparkplug property)."""

BOX_TAGS: tuple[TagSpec, ...] = (TagSpec("clock_state", "String"),)
"""What the box itself reports from its events (Sparkplug: node metrics)."""

_SHIFT_FLOATS = (
    "oee", "availability", "performance", "quality", "run_s", "down_s", "unknown_s",
    "kwh_per_good", "kwh_per_total",
)  # fmt: skip
_SHIFT_INTS = ("good", "total", "reject")
_ATTRIBUTES = frozenset({"state", "state_reason", "mode"})


def event_values(event: Mapping[str, Any]) -> dict[str, Value]:
    """The values of one event (see the module docstring); empty for an unknown type.

    Raise KeyError, TypeError or ValueError when a field the values need is missing.
    """
    kind = event.get("type")
    values = _VALUES.get(kind) if isinstance(kind, str) else None
    return {} if values is None else values(event)


def _state(event: Mapping[str, Any]) -> dict[str, Value]:
    if event.get("end") is None:
        return {
            "state": str(event["state"]),
            "state_reason": _text(event.get("reason")),
            "mode": _text(event.get("mode")),
        }
    return {"state_duration_s": _seconds(event.get("start"), event.get("end"))}


_SHIFT_NAMES = {"OEE": "oee", "A": "availability", "P": "performance", "Q": "quality"}
"""The shift event's ratio fields and the value names they travel under."""


def _shift(event: Mapping[str, Any]) -> dict[str, Value]:
    out: dict[str, Value] = {"shift": str(event["shift"]), "shift_final": bool(event.get("final"))}
    energy = event.get("energy")
    figures = {**event, **(energy if isinstance(energy, Mapping) else {})}
    for field, name in _SHIFT_NAMES.items():
        if field in figures:
            figures[name] = figures[field]
    for name in _SHIFT_FLOATS:
        value = figures.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[name] = float(value)
    for name in _SHIFT_INTS:
        value = figures.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            out[name] = value
    return out


_VALUES: dict[str, Callable[[Mapping[str, Any]], dict[str, Value]]] = {
    "state": _state,
    "alarm": lambda e: {f"alarm_{e['name']}": bool(e["active"])},
    "count": lambda e: {f"count_{e['counter']}": int(e["total"])},
    "counter_gap": lambda e: {
        f"counter_gap_{e['counter']}_s": _seconds(e.get("from"), e.get("to"))
    },
    "clock": lambda e: {"clock_state": str(e["state"])},
    "shift": _shift,
}


def machine_tags(counters: Sequence[str], alarms: Sequence[str]) -> tuple[TagSpec, ...]:
    """Every value a machine with these counter roles and alarm names can report, typed."""
    tags = [
        TagSpec("state", "String"),
        TagSpec("state_reason", "String"),
        TagSpec("mode", "String"),
        TagSpec("state_duration_s", "Double", "s"),
    ]
    tags += [TagSpec(f"alarm_{name}", "Boolean") for name in alarms]
    tags += [TagSpec(f"count_{role}", "Int64") for role in counters]
    tags += [TagSpec(f"counter_gap_{role}_s", "Double", "s") for role in counters]
    tags += [TagSpec("shift", "String"), TagSpec("shift_final", "Boolean")]
    tags += [TagSpec(n, "Double", "s" if n.endswith("_s") else None) for n in _SHIFT_FLOATS]
    tags += [TagSpec(n, "Int64") for n in _SHIFT_INTS]
    return tuple(tags)


def events_batch(seq: int, payload: bytes) -> Batch:
    """The batch of a stored events message; :class:`ValueError` if it is not one."""
    message = decode_events(payload)
    return batch_of_events(seq, message["source"], message["events"])


def halves(batch: Batch) -> tuple[Batch, Batch]:
    """An events batch of two events or more cut in two by its events (same seq)."""
    half = (len(batch.events) + 1) // 2
    return (
        batch_of_events(batch.seq, batch.device, batch.events[:half]),
        batch_of_events(batch.seq, batch.device, batch.events[half:]),
    )


def batch_of_events(seq: int, source: str, events: Sequence[Mapping[str, Any]]) -> Batch:
    """A batch of ``events`` of ``source``: one reading per event with values."""
    readings = []
    for event in events:
        try:
            values = event_values(event)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"a {event.get('type')} event lacks a field: {exc}") from exc
        if values:
            readings.append(Reading(event["ts"], values))
    return Batch(seq, source, readings, tuple(events))


def machine_attributes(values: Mapping[str, Value]) -> dict[str, Value]:
    """The values that say a machine's current state (ThingsBoard attributes)."""
    return {k: v for k, v in values.items() if k in _ATTRIBUTES or k.startswith("alarm_")}


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _seconds(start: Any, end: Any) -> float:
    if not isinstance(start, int) or not isinstance(end, int):
        raise ValueError("start/end (or from/to) must be epoch milliseconds")
    return (end - start) / 1000
