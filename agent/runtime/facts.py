"""Machine facts in the running agent: the machines fed, their events committed with their state.

:class:`Facts` holds one :class:`~agent.compute.engine.Machine` per machine of
the site's ``analytics:`` block. Pollers hand it every raw reading
(:meth:`Facts.reading`, before any deadband); a task ticks the machines every
:data:`TICK_S`, and commits each machine's events with its state in one
transaction (:meth:`agent.buffer.Buffer.put_events`): a restart resumes from
exactly the state that produced the events committed, so a piece is never
counted twice or lost. A machine with nothing new to say still saves its
state every :data:`SAVE_EVERY_S` (a restart then knows its last reads).

The box's own events (source ``_box``): its clock becoming untrusted or
trusted again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

import orjson

from agent.buffer import Buffer, FactRow, FactsSave
from agent.message import BOX_SOURCE
from agent.status.document import MachineStatus, ShiftFigures
from drivers.base import Reading, now_ms

if TYPE_CHECKING:  # the computing modules are imported only by a site with machines
    from agent.compute.engine import Machine
    from agent.compute.plan import MachinePlan

log = logging.getLogger(__name__)

TICK_S: Final = 0.5
SAVE_EVERY_S: Final = 5.0
KEEP_DAYS_DEFAULT: Final = 35
_DAY_MS: Final = 86_400_000
_PRUNE_EVERY_MS: Final = 3_600_000
_UNSEEN: Final = "(not seen yet)"


class Facts:
    """Every machine of the site, fed by the pollers, committed by its own task."""

    def __init__(
        self,
        buffer: Buffer,
        plans: Sequence[MachinePlan],
        *,
        keep_days: int = KEEP_DAYS_DEFAULT,
        tick_s: float = TICK_S,
        save_every_s: float = SAVE_EVERY_S,
    ) -> None:
        self.buffer = buffer
        self.plans = tuple(plans)
        self.keep_ms = keep_days * _DAY_MS
        self.tick_s = tick_s
        self.save_every_ms = int(save_every_s * 1000)
        self.machines: dict[str, Machine] = {}
        self._by_device: dict[str, list[Machine]] = {}
        self._saved_ms: dict[str, int] = {}
        self._clock: str | None = _UNSEEN  # the first reading always tells the clock's state
        self._box_events: list[dict[str, Any]] = []
        self._pruned_ms = 0
        self.errors = 0

    async def start(self) -> None:
        """Build every machine from the state the buffer holds for it (or afresh)."""
        saved = await self.buffer.load_state() if self.plans else {}
        box = saved.get(BOX_SOURCE)
        if box is not None:  # what the box last said of its clock: a change is told
            with contextlib.suppress(orjson.JSONDecodeError, AttributeError):
                told = orjson.loads(box).get("clock")
                self._clock = None if told == "ok" else str(told)
        self._build(saved)

    def _build(self, saved: Mapping[str, bytes]) -> None:
        self.machines = {}
        if not self.plans:
            return
        from agent.compute.engine import Machine

        for plan in self.plans:
            raw = saved.get(plan.name)
            state = None
            if raw is not None:
                try:
                    state = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    log.warning("machine %s: its saved state is unreadable: started afresh",
                                plan.name)  # fmt: skip
            self.machines[plan.name] = Machine(plan, state)
        self._by_device = {}
        for machine in self.machines.values():
            for device in machine.plan.devices:
                self._by_device.setdefault(device, []).append(machine)

    def reading(self, device: str, reading: Reading) -> None:
        """A raw reading of ``device`` (called by its poller; never raises)."""
        machines = self._by_device.get(device)
        if machines:
            for machine in machines:
                try:
                    machine.feed(device, reading, now_ms())
                except Exception:  # one machine's bug must not stop the device's polling
                    self.errors += 1
                    if self.errors == 1:
                        log.exception("machine %s: a reading could not be taken", machine.name)
        if reading.clock != self._clock:
            self._clock_changed(reading.clock, reading.ts)

    def _clock_changed(self, flag: str | None, ts: int) -> None:
        previous, self._clock = self._clock, flag
        if previous in (None, _UNSEEN) and flag is None:
            return  # trusted, and nothing said otherwise before
        state = "ok" if flag is None else flag
        self._box_events.append(
            {"type": "clock", "id": f"{BOX_SOURCE}/clock/{ts}", "ts": ts, "state": state}
        )

    async def run(self) -> None:
        """Tick and commit until cancelled (then :meth:`commit` once more)."""
        while True:
            await asyncio.sleep(self.tick_s)
            try:
                self.commit(now_ms())
            except Exception:
                self.errors += 1
                log.exception("machine facts: a commit could not be queued")

    def commit(self, now: int, *, force: bool = False) -> None:
        """Queue every machine's new events with its state (and the box's events).

        One machine that fails is logged and counted; the others still commit.
        """
        prune = None
        if now - self._pruned_ms >= _PRUNE_EVERY_MS and self._clock in (None, _UNSEEN):
            # only on a trusted clock: a clock a year ahead must not empty the history
            prune, self._pruned_ms = now - self.keep_ms, now
        for name, machine in self.machines.items():
            try:
                prune = self._commit_one(name, machine, now, prune, force=force)
            except Exception:
                self.errors += 1
                log.exception("machine %s: its facts could not be committed", name)
        if self._box_events:
            events, self._box_events = self._box_events, []
            rows = tuple(
                FactRow(BOX_SOURCE, int(e["ts"]), "clock", orjson.dumps(e)) for e in events
            )
            state = orjson.dumps({"clock": events[-1]["state"]})
            self.buffer.put_events(BOX_SOURCE, events, FactsSave(BOX_SOURCE, state, rows))

    def _commit_one(
        self, name: str, machine: Machine, now: int, prune: int | None, *, force: bool
    ) -> int | None:
        """Commit one machine; the prune still to do (it goes with the first commit)."""
        machine.tick(now)
        drained = machine.drain(now)
        due = now - self._saved_ms.get(name, 0) >= self.save_every_ms
        if not drained.events and not (machine.dirty and (due or force)) and prune is None:
            return prune
        save = FactsSave(
            name,
            orjson.dumps(machine.state()),
            tuple(
                FactRow(name, int(e["ts"]), str(e["type"]), orjson.dumps(e))
                for e in drained.history
            ),
            prune,
        )
        self._saved_ms[name] = now
        self.buffer.put_events(name, drained.events, save)
        return None

    def status(self, now: int) -> dict[str, MachineStatus]:
        """Each machine's state, counts and running figure, for ``edge-agent status``."""
        out: dict[str, MachineStatus] = {}
        for name, machine in self.machines.items():
            current = machine.current
            shift = machine.shift_now(now) if machine.plan.oee is not None else None
            figures: ShiftFigures | None = None
            if shift is not None:
                d = shift.to_dict()
                figures = {
                    "shift": d["shift"],
                    "total": d["total"],
                    "good": d["good"],
                    "reject": d["reject"],
                    "A": d["A"],
                    "P": d["P"],
                    "Q": d["Q"],
                    "OEE": d["OEE"],
                    "coverage": d["coverage"],
                }
            out[name] = {
                "state": None if current is None else current.state,
                "reason": None if current is None else current.reason,
                "mode": None if current is None else current.mode,
                "since_ms": None if current is None else current.start_ms,
                "for_s": None if current is None else round((now - current.start_ms) / 1000, 1),
                "totals": machine.totals(),
                "shift": figures,
                "problems": list(machine.problems),
            }
        return out
