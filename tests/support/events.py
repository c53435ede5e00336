"""Events messages into a real buffer, and events as docs/EVENTS.md writes them.

:func:`put_events` stores one events message of a source in a real
:class:`agent.buffer.Buffer` (``Buffer.put_events``, no state with it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from agent.buffer import Buffer
from agent.compute.counters import CounterSpec
from agent.compute.plan import AlarmPlan, CounterPlan, MachinePlan, Source
from agent.compute.state import parse_condition
from agent.message import BOX_SOURCE

T0 = 1764270000000


def put_events(buffer: Buffer, source: str, events: Sequence[Mapping[str, Any]]) -> None:
    """Queue one events message of ``source`` for the buffer's next commit."""
    buffer.put_events(source, events)


def state(
    source: str,
    start: int,
    name: str,
    *,
    end: int | None = None,
    reason: str | None = None,
    mode: str | None = "production",
) -> dict[str, Any]:
    """A state event: opening (``end`` None) or closing."""
    return {
        "type": "state", "id": f"{source}/state/{start}", "ts": start if end is None else end,
        "state": name, "reason": reason, "mode": mode, "planned_downtime": False,
        "start": start, "end": end,
    }  # fmt: skip


def alarm(source: str, name: str, start: int, *, active: bool, ts: int) -> dict[str, Any]:
    """An alarm event: raised (``active``) or cleared."""
    return {
        "type": "alarm", "id": f"{source}/alarm/{name}/{start}", "ts": ts, "name": name,
        "active": active, "severity": 700, "message": name, "start": start,
        "end": None if active else ts, "quality": "good",
    }  # fmt: skip


def count(source: str, counter: str, total: int, delta: int, frm: int, to: int) -> dict[str, Any]:
    """A count event of one counter."""
    return {
        "type": "count", "id": f"{source}/count/{counter}/{to}", "ts": to, "counter": counter,
        "delta": delta, "total": total, "from": frm, "to": to, "kinds": ["normal"],
    }  # fmt: skip


def clock(ts: int, value: str) -> dict[str, Any]:
    """A clock event of the box itself."""
    return {"type": "clock", "id": f"_box/clock/{ts}", "ts": ts, "state": value}


MACHINE = "press-01"


def machine_plan() -> MachinePlan:
    """The machine of :func:`scenario`: a total counter and an overcurrent alarm."""
    return MachinePlan(
        name=MACHINE,
        counters=(CounterPlan("total", Source("drive", "count_total"), CounterSpec("uint16")),),
        alarms=(AlarmPlan("overcurrent", parse_condition("fault == 2", ["fault"])),),
    )


SCENARIO: list[tuple[str, list[dict[str, Any]]]] = [
    (MACHINE, [state(MACHINE, T0, "running"), count(MACHINE, "total", 5, 5, T0 - 1000, T0 + 1000)]),
    (BOX_SOURCE, [clock(T0 + 500, "unsynced")]),
    (MACHINE, [
        alarm(MACHINE, "overcurrent", T0 + 2000, active=True, ts=T0 + 2000),
        state(MACHINE, T0, "running", end=T0 + 3000),
        state(MACHINE, T0 + 3000, "fault", reason="fault"),
    ]),
    (MACHINE, [alarm(MACHINE, "overcurrent", T0 + 2000, active=False, ts=T0 + 4000)]),
]  # fmt: skip
"""Batches of events, in the order they are put: (source, events)."""

MACHINE_VALUES: list[tuple[int, dict[str, Any]]] = [
    (T0, {"state": "running", "state_reason": "", "mode": "production"}),
    (T0 + 1000, {"count_total": 5}),
    (T0 + 2000, {"alarm_overcurrent": True}),
    (T0 + 3000, {"state_duration_s": 3.0}),
    (T0 + 3000, {"state": "fault", "state_reason": "fault", "mode": "production"}),
    (T0 + 4000, {"alarm_overcurrent": False}),
]
"""What the machine's events of :data:`SCENARIO` are as values, in order (docs/EVENTS.md)."""

BOX_VALUES = [(T0 + 500, {"clock_state": "unsynced"})]


def put_scenario(buffer: Buffer) -> None:
    """Every batch of :data:`SCENARIO`, in order."""
    for source, events in SCENARIO:
        put_events(buffer, source, events)
