"""Pure PackML state machine and a packaging line that runs on its own.

State numbers are those of PackTags ``StateCurrent`` (ISA-TR88.00.02), which
are also the ``StateNumber`` values of the OPC UA PackML companion spec
(OPC 30050). The line starts itself, produces, gets starved (Suspended),
blocked (Held) and faulted (Aborted, with an alarm), and recovers, all driven
by a seeded ``random.Random`` and explicit time steps, so a test replays it
exactly. No I/O here: ``packaging_line.py`` serves it over OPC UA.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from enum import IntEnum


class State(IntEnum):
    """PackML states (PackTags StateCurrent numbering)."""

    UNDEFINED = 0
    CLEARING = 1
    STOPPED = 2
    STARTING = 3
    IDLE = 4
    SUSPENDED = 5
    EXECUTE = 6
    STOPPING = 7
    ABORTING = 8
    ABORTED = 9
    HOLDING = 10
    HELD = 11
    UNHOLDING = 12
    SUSPENDING = 13
    UNSUSPENDING = 14
    RESETTING = 15
    COMPLETING = 16
    COMPLETE = 17


class Command(IntEnum):
    """PackTags Command.CntrlCmd values."""

    RESET = 1
    START = 2
    STOP = 3
    HOLD = 4
    UNHOLD = 5
    SUSPEND = 6
    UNSUSPEND = 7
    ABORT = 8
    CLEAR = 9
    COMPLETE = 10


class Mode(IntEnum):
    """Unit modes (PackTags UnitModeCurrent)."""

    PRODUCTION = 1
    MAINTENANCE = 2
    MANUAL = 3


S = State
C = Command

# Acting states end by themselves ("state complete") into these.
STATE_COMPLETE: dict[State, State] = {
    S.CLEARING: S.STOPPED,
    S.STARTING: S.EXECUTE,
    S.STOPPING: S.STOPPED,
    S.ABORTING: S.ABORTED,
    S.HOLDING: S.HELD,
    S.UNHOLDING: S.EXECUTE,
    S.SUSPENDING: S.SUSPENDED,
    S.UNSUSPENDING: S.EXECUTE,
    S.RESETTING: S.IDLE,
    S.COMPLETING: S.COMPLETE,
}

_RUNNING = frozenset(
    {S.RESETTING, S.IDLE, S.STARTING, S.EXECUTE, S.COMPLETING, S.COMPLETE, S.HOLDING, S.HELD}
    | {S.UNHOLDING, S.SUSPENDING, S.SUSPENDED, S.UNSUSPENDING}
)
_HOLDABLE = frozenset(
    {S.EXECUTE, S.STARTING, S.SUSPENDING, S.SUSPENDED, S.UNSUSPENDING, S.UNHOLDING}
)


def on_command(state: State, command: Command) -> State | None:
    """The state a command leads to, or ``None`` when PackML does not allow it here."""
    if command is C.ABORT:
        return None if state in (S.ABORTING, S.ABORTED) else S.ABORTING
    if command is C.STOP:
        return S.STOPPING if state in _RUNNING else None
    if command is C.HOLD:
        return S.HOLDING if state in _HOLDABLE else None
    simple = {
        (S.STOPPED, C.RESET): S.RESETTING,
        (S.COMPLETE, C.RESET): S.RESETTING,
        (S.IDLE, C.START): S.STARTING,
        (S.EXECUTE, C.COMPLETE): S.COMPLETING,
        (S.HELD, C.UNHOLD): S.UNHOLDING,
        (S.EXECUTE, C.SUSPEND): S.SUSPENDING,
        (S.SUSPENDED, C.UNSUSPEND): S.UNSUSPENDING,
        (S.ABORTED, C.CLEAR): S.CLEARING,
    }
    return simple.get((state, command))


def legal_transitions() -> frozenset[tuple[State, State]]:
    """Every (from, to) pair PackML allows, by command or by state complete."""
    pairs = set(STATE_COMPLETE.items())
    for state in State:
        for command in Command:
            target = on_command(state, command)
            if target is not None:
                pairs.add((state, target))
    return frozenset(pairs)


@dataclass(frozen=True)
class LineConfig:
    """How the simulated line behaves; rates are per second of Execute."""

    design_speed: float = 120.0  # packs/min
    defect_ratio: float = 0.02
    starve_rate: float = 0.02  # upstream starved -> Suspend
    block_rate: float = 0.015  # downstream blocked -> Hold
    fault_rate: float = 0.008  # -> Abort with an alarm
    complete_rate: float = 0.004  # batch done -> Complete
    acting_time: tuple[float, float] = (0.5, 2.0)  # how long acting states last
    wait_time: tuple[float, float] = (1.0, 5.0)  # how long the line waits before acting again
    recipes: tuple[str, ...] = ("CUP-350ML", "CUP-500ML", "LID-STD", "GIFT-BOX-2")
    alarm_codes: tuple[int, ...] = (101, 102, 205, 310, 412)


@dataclass
class PackagingLine:
    """A packaging line in PackML terms, advanced by :meth:`step`."""

    seed: int = 0
    config: LineConfig = field(default_factory=LineConfig)
    state: State = S.STOPPED
    mode: Mode = Mode.PRODUCTION
    mach_speed: float = 100.0  # setpoint, packs/min
    cur_speed: float = 0.0
    processed: int = 0
    defective: int = 0
    recipe: str = ""
    alarm_active: bool = False
    alarm_code: int = 0
    history: list[tuple[State, State]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._dwell = self._draw(self.config.wait_time)
        self._fraction = 0.0
        self._defect_fraction = 0.0
        self.recipe = self.recipe or self.config.recipes[0]

    def command(self, command: Command) -> bool:
        """Apply a PackML command; False (and no change) when it is not allowed now."""
        target = on_command(self.state, command)
        if target is None:
            return False
        if command is C.ABORT:
            self.alarm_active = True
            self.alarm_code = self._rng.choice(self.config.alarm_codes)
        self._enter(target)
        return True

    def step(self, dt: float) -> None:
        """Advance the line by ``dt`` seconds."""
        if dt <= 0:
            return
        self._produce(dt)
        self._dwell -= dt
        if self._dwell > 0:
            return
        if self.state in STATE_COMPLETE:
            self._complete_state()
        else:
            self._decide()

    def _complete_state(self) -> None:
        if self.state is S.CLEARING:
            self.alarm_active = False
            self.alarm_code = 0
        if self.state is S.COMPLETING:
            self.recipe = self._rng.choice(self.config.recipes)
        self._enter(STATE_COMPLETE[self.state])

    def _decide(self) -> None:
        """A wait state (or Execute) whose dwell ran out: what happens next."""
        cfg = self.config
        automatic = {
            S.STOPPED: C.RESET,
            S.IDLE: C.START,
            S.COMPLETE: C.RESET,
            S.SUSPENDED: C.UNSUSPEND,
            S.HELD: C.UNHOLD,
            S.ABORTED: C.CLEAR,
        }
        if self.state in automatic:
            self.command(automatic[self.state])
            return
        if self.state is S.EXECUTE:
            # One draw per decision slot of 1 s, so rates read as "per second".
            roll = self._rng.random()
            for rate, command in (
                (cfg.fault_rate, C.ABORT),
                (cfg.block_rate, C.HOLD),
                (cfg.starve_rate, C.SUSPEND),
                (cfg.complete_rate, C.COMPLETE),
            ):
                if roll < rate:
                    self.command(command)
                    return
                roll -= rate
            self._dwell = 1.0

    def _produce(self, dt: float) -> None:
        target = min(self.mach_speed, self.config.design_speed) if self.state is S.EXECUTE else 0.0
        # The drive ramps: half the gap per second, so speed never jumps.
        self.cur_speed += (target - self.cur_speed) * min(1.0, dt * 0.5)
        if target == 0.0 and self.cur_speed < 0.5:
            self.cur_speed = 0.0
        packs = self.cur_speed * dt / 60.0 + self._fraction
        made = int(packs)
        self._fraction = packs - made
        if made <= 0:
            return
        self.processed += made
        bad = made * self.config.defect_ratio + self._defect_fraction
        self.defective += int(bad)
        self._defect_fraction = bad - int(bad)

    def _enter(self, target: State) -> None:
        self.history.append((self.state, target))
        del self.history[:-1000]  # bounded: tests read recent transitions only
        self.state = target
        cfg = self.config
        self._dwell = self._draw(cfg.acting_time if target in STATE_COMPLETE else cfg.wait_time)
        if target is S.EXECUTE:
            self._dwell = 1.0

    def _draw(self, bounds: tuple[float, float]) -> float:
        return self._rng.uniform(*bounds)
