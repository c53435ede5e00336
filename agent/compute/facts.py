"""The records machine facts are made of: states over time, counted pieces, gaps.

Pure data, shared by the modules that compute them (``state``, ``counters``)
and those that roll them up (``shifts``, ``oee``, ``energy``). Times are epoch
milliseconds (UTC); a calendar turns them into local shifts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

MachineState = Literal["running", "idle", "stopped", "fault", "offline"]
"""What a machine does: ``offline`` is "not known" (no good read), never downtime."""

MACHINE_STATES: tuple[MachineState, ...] = ("running", "idle", "stopped", "fault", "offline")

CountClass = Literal["normal", "wrap", "reset", "declared", "gap", "first"]
"""How a counter step was read: ``gap`` has no delta (never a guessed number);
``first`` is the first read of a counter with no state to compare with."""


@dataclass(frozen=True, slots=True)
class StateInterval:
    """A machine was in ``state`` from ``start_ms`` to ``end_ms`` (``end_ms`` None: still is)."""

    start_ms: int
    end_ms: int | None
    state: MachineState
    mode: str | None = None
    """Intent, e.g. production / setup / maintenance (planned downtime modes)."""
    reason: str | None = None
    planned_downtime: bool = False
    """The mode is one of the machine's planned-downtime modes (maintenance, setup...)."""


@dataclass(frozen=True, slots=True)
class CountStep:
    """What one read of a piece counter added: ``delta`` None for a gap."""

    ts_ms: int
    prev_ts_ms: int | None
    delta: int | None
    kind: CountClass
    raw: int
    """The read value as the counter's width gives it (a signed value reinterpreted)."""
