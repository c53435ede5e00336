"""What one machine is made of: the inputs, state, counters, alarms, shifts and meter it uses.

A :class:`MachinePlan` is built by the runtime from the site's ``analytics:``
block and the ``machine:`` blocks of the profiles (``agent/runtime/machines.py``)
and run by :class:`agent.compute.engine.Machine`. Pure data: every part is
already checked (conditions parsed, widths known, calendar valid).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from agent.compute.counters import CounterSpec
from agent.compute.energy import Register
from agent.compute.oee import OeeConfig
from agent.compute.shifts import Calendar
from agent.compute.state import Condition, StateSpec

CounterRole = Literal["total", "good", "reject"]
COUNTER_ROLES: tuple[CounterRole, ...] = ("total", "good", "reject")


@dataclass(frozen=True, slots=True)
class Source:
    """One tag of one device."""

    device: str
    tag: str

    def __str__(self) -> str:
        return f"{self.device}/{self.tag}"


@dataclass(frozen=True, slots=True)
class CounterPlan:
    """A piece counter: its role, where it is read, how (width, max_rate), its reset signal."""

    role: CounterRole
    source: Source
    spec: CounterSpec
    reset: Source | None = None
    """A tag of the same device that is non-zero (true) when the device reset the counter."""


@dataclass(frozen=True, slots=True)
class AlarmPlan:
    """An alarm: raised while ``condition`` holds over the machine's inputs."""

    name: str
    condition: Condition
    severity: int = 500
    message: str = ""
    min_repeat_ms: int = 0
    """An alarm raised again sooner than this after it cleared is the same alarm, still active."""


@dataclass(frozen=True, slots=True)
class EnergyPlan:
    """The meter's cumulative energy register (kWh) that feeds this machine."""

    source: Source
    register: Register = "float32"
    poll_ms: int = 1000
    """The meter's poll interval (boundary reads further apart than twice it are flagged)."""


@dataclass(frozen=True, slots=True)
class MachinePlan:
    """One machine: everything :class:`~agent.compute.engine.Machine` needs to run it."""

    name: str
    inputs: Mapping[str, Source] = field(default_factory=dict)
    """Condition names (state rules, mode, alarms) and the tag each reads. State
    inputs all come from one device (the state device); the mode and alarms may
    read other devices of the site (their latest value is used)."""
    state: StateSpec | None = None
    """Where the state comes from; None: no state (counts only, no OEE times)."""
    counters: tuple[CounterPlan, ...] = ()
    """At most one counter per role; OEE needs two roles (good = total - reject)."""
    alarms: tuple[AlarmPlan, ...] = ()
    calendar: Calendar | None = None
    """The shifts; None: no shift summaries (state and counts still flow)."""
    oee: OeeConfig | None = None
    """None without a calendar or an ideal cycle: summaries then carry times and counts only."""
    energy: EnergyPlan | None = None
    publish_every_ms: int = 300_000
    """How often a running shift figure is sent (0: only at the shift's end)."""

    @property
    def devices(self) -> frozenset[str]:
        """Every device whose readings this machine reads."""
        found = {s.device for s in self.inputs.values()}
        found |= {c.source.device for c in self.counters}
        found |= {c.reset.device for c in self.counters if c.reset is not None}
        if self.energy is not None:
            found.add(self.energy.source.device)
        return frozenset(found)
