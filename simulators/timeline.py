"""Scripted timelines: a device follows a list of steps at offsets from a start instant.

A timeline replaces a simulator's random behaviour with a script, so a test
knows exactly what the equipment said and when::

    start: 1767225600            # epoch seconds (optional: the moment it is attached)
    rate: 2/s                    # pieces per running second (default 1/s)
    steps:
      - {at: 0s, run: true, freq: 50}
      - {at: 60s, fault: 2}      # trip: run word "not running", fault word 2
      - {at: 90s, fault: 0}      # fault reset: runs again while run stays true
      - {at: 120s, offline: true}   # no answer (connections kept), reads time out
      - {at: 150s, offline: false}
      - {at: 200s, counter: 65530}  # the piece counter is set near its wrap
      - {at: 210s, counter_reset: true}

The script's state at any instant is a pure function of that instant
(:meth:`Timeline.state_at`): the piece counter reads
``base + floor(rate x running seconds since base was set)``, wrapped into the
counter register's type, where ``base`` is 0 or the last ``counter:`` value. A
run that starts later, or a simulator restarted with the same ``start``, shows
the same values at the same wall-clock instant.

No I/O and no dependency on the agent: :mod:`simulators.run` and
:mod:`simulators.packaging_line` apply the state to their devices.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Final

import yaml

STEP_KEYS: Final = frozenset(
    {"at", "run", "freq", "fault", "offline", "counter", "counter_reset", "rate", "reject_rate"}
    | {"state", "mode"}
)
TIMELINE_KEYS: Final = frozenset(
    {"start", "rate", "reject_rate", "freq", "counter_tag", "reject_tag", "steps"}
)
_DURATION: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_S: Final = {"ms": Fraction(1, 1000), "s": Fraction(1), "m": Fraction(60), "h": Fraction(3600)}
_RATE: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:/\s*(s|m|min|h))?\s*$")
_PER: Final = {"s": Fraction(1), "m": Fraction(60), "min": Fraction(60), "h": Fraction(3600)}

# PackML StateCurrent numbers the script uses when it speaks in run/fault terms.
PACKML_STOPPED: Final = 2
PACKML_EXECUTE: Final = 6
PACKML_ABORTED: Final = 9


class TimelineError(ValueError):
    """A timeline file or step that cannot be followed; the message says where."""


def parse_duration(value: object, where: str) -> Fraction:
    """``"60s"``, ``"2m"``, ``"500ms"``, ``"1h"`` or a number of seconds, exactly."""
    if isinstance(value, bool):
        raise TimelineError(f"{where}: expected a duration, got {value!r}")
    if isinstance(value, int | float):
        if value < 0 or not math.isfinite(value):
            raise TimelineError(f"{where}: a duration cannot be {value!r}")
        return Fraction(str(value))
    match = _DURATION.match(str(value))
    if match is None:
        raise TimelineError(f"{where}: {value!r} is not a duration (60s, 2m, 500ms, 1h)")
    return Fraction(match.group(1)) * _UNIT_S[match.group(2) or "s"]


def parse_rate(value: object, where: str) -> Fraction:
    """``"2/s"``, ``"120/min"``, ``"0.5"`` (per second): pieces per running second, exactly."""
    if isinstance(value, bool):
        raise TimelineError(f"{where}: expected a rate, got {value!r}")
    text = str(value)
    match = _RATE.match(text)
    if match is None:
        raise TimelineError(f"{where}: {value!r} is not a rate (2/s, 120/min, 0.5)")
    return Fraction(match.group(1)) / _PER[match.group(2) or "s"]


def _bool(raw: Mapping[str, Any], key: str, where: str) -> bool | None:
    if key not in raw:
        return None
    value = raw[key]
    if not isinstance(value, bool):
        raise TimelineError(f"{where}.{key}: expected true or false, got {value!r}")
    return value


def _int(raw: Mapping[str, Any], key: str, where: str, low: int = 0) -> int | None:
    if key not in raw:
        return None
    value = raw[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise TimelineError(f"{where}.{key}: expected a whole number >= {low}, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class Step:
    """One scripted change, ``at`` seconds after the start; None = unchanged."""

    at: Fraction
    run: bool | None = None
    """The run command: the drive runs while it is true and no fault is held."""
    freq: float | None = None
    """Output frequency (Hz) while running."""
    fault: int | None = None
    """Trip code (0 = reset): the drive stops and shows it in its fault word."""
    offline: bool | None = None
    """True: the device stops answering (connections are kept, nothing comes back)."""
    counter: int | None = None
    """Set the piece counter to this value (then it counts on from there; rejects stay)."""
    counter_reset: bool = False
    """Set the piece counter (and the reject counter) back to 0."""
    rate: Fraction | None = None
    reject_rate: Fraction | None = None
    state: int | None = None
    """PackML only: this StateCurrent (e.g. 5 Suspended, 11 Held) until a ``run`` step."""
    mode: int | None = None
    """PackML only: this UnitModeCurrent (1 Production, 2 Maintenance, 3 Manual)."""

    @classmethod
    def parse(cls, raw: object, where: str) -> Step:
        """A step from its YAML/JSON mapping; ``where`` prefixes every error."""
        if not isinstance(raw, Mapping):
            raise TimelineError(f"{where}: a step is a mapping, got {raw!r}")
        unknown = sorted(set(raw) - STEP_KEYS)
        if unknown:
            raise TimelineError(f"{where}: unknown key(s) {unknown}; use {sorted(STEP_KEYS)}")
        if "at" not in raw:
            raise TimelineError(f"{where}: a step needs 'at' (an offset from the start)")
        freq = raw.get("freq")
        if freq is not None and (isinstance(freq, bool) or not isinstance(freq, int | float)):
            raise TimelineError(f"{where}.freq: expected a number of Hz, got {freq!r}")
        reset = _bool(raw, "counter_reset", where)
        step = cls(
            at=parse_duration(raw["at"], f"{where}.at"),
            run=_bool(raw, "run", where),
            freq=None if freq is None else float(freq),
            fault=_int(raw, "fault", where),
            offline=_bool(raw, "offline", where),
            counter=_int(raw, "counter", where),
            counter_reset=bool(reset),
            rate=None if "rate" not in raw else parse_rate(raw["rate"], f"{where}.rate"),
            reject_rate=None
            if "reject_rate" not in raw
            else parse_rate(raw["reject_rate"], f"{where}.reject_rate"),
            state=_int(raw, "state", where),
            mode=_int(raw, "mode", where),
        )
        if step.counter is not None and step.counter_reset:
            raise TimelineError(f"{where}: counter and counter_reset in one step")
        return step

    def describe(self) -> str:
        """``+60s fault=2`` for logs and people."""
        parts = [f"+{_seconds(self.at)}s"]
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "at" or value is None or (f.name == "counter_reset" and not value):
                continue
            shown = float(value) if isinstance(value, Fraction) else value
            parts.append(f"{f.name}={json.dumps(shown)}")
        return " ".join(parts)


def _seconds(value: Fraction) -> str:
    return str(int(value)) if value.denominator == 1 else str(float(value))


@dataclass(frozen=True, slots=True)
class Scripted:
    """What the script says the device does at one instant."""

    run: bool = False
    freq: float = 50.0
    fault: int = 0
    offline: bool = False
    pieces: int = 0
    """The piece counter, not wrapped (wrap it with :func:`wrap` for the register)."""
    rejects: int = 0
    state: int | None = None
    mode: int | None = None
    steps_applied: int = 0

    @property
    def running(self) -> bool:
        """True while pieces are made: run is on, no fault, no PackML state holding it."""
        if self.fault or not self.run:
            return False
        return self.state is None or self.state == PACKML_EXECUTE

    @property
    def output_freq(self) -> float:
        """The drive's output frequency: the set frequency while running, else 0."""
        return self.freq if self.running else 0.0

    @property
    def packml_state(self) -> int:
        """The PackML StateCurrent: Aborted on a fault, the scripted state, Execute or Stopped."""
        if self.fault:
            return PACKML_ABORTED
        if self.state is not None:
            return self.state
        return PACKML_EXECUTE if self.run else PACKML_STOPPED


@dataclass(frozen=True, slots=True)
class Applied:
    """A step as the simulator applied it: its index, planned and actual wall time."""

    index: int
    step: Step
    planned: float
    applied: float

    def describe(self) -> str:
        """One line for people: planned offset, what changed, how late it was applied."""
        late = self.applied - self.planned
        return f"step {self.index} {self.step.describe()} applied {late:+.3f}s from plan"


@dataclass
class Timeline:
    """Steps at offsets from ``start`` (epoch seconds; None: the moment it is first used).

    ``rate`` and ``reject_rate`` are pieces per running second (steps may change
    them); ``freq`` is the output frequency of a ``run: true`` without ``freq``.
    ``counter_tag`` / ``reject_tag`` name the register that shows the piece
    (reject) counter; None uses the simulator's default for the device.
    ``clock`` gives the current epoch time (tests may pass their own).
    """

    steps: Sequence[Step]
    start: float | None = None
    rate: Fraction = Fraction(1)
    reject_rate: Fraction = Fraction(0)
    freq: float = 50.0
    counter_tag: str | None = None
    reject_tag: str | None = None
    clock: Callable[[], float] = time.time
    log: list[Applied] = field(default_factory=list)
    """Every step applied so far, in order (a step is logged once, when first applied)."""

    def __post_init__(self) -> None:
        self.steps = sorted(self.steps, key=lambda s: s.at)  # stable: same offset keeps order
        self.rate = Fraction(self.rate)
        self.reject_rate = Fraction(self.reject_rate)

    def begin(self) -> float:
        """Fix the start (now, unless given) and return it."""
        if self.start is None:
            self.start = self.clock()
        return self.start

    def state_at(self, when: float) -> Scripted:
        """The script's state at epoch time ``when`` (a pure function of ``when``)."""
        start = self.begin()
        elapsed = Fraction(when) - Fraction(start)
        now = Scripted(freq=self.freq)
        rate, reject_rate = self.rate, self.reject_rate
        made = rejected = Fraction(0)
        base = 0
        last_at = Fraction(0)
        applied = 0
        for step in self.steps:
            if elapsed < step.at:
                break
            if now.running:
                made += rate * (step.at - last_at)
                rejected += reject_rate * (step.at - last_at)
            last_at = step.at
            applied += 1
            now = _apply(now, step)
            rate = step.rate if step.rate is not None else rate
            reject_rate = step.reject_rate if step.reject_rate is not None else reject_rate
            if step.counter is not None:
                base, made = step.counter, Fraction(0)
            if step.counter_reset:
                base, made, rejected = 0, Fraction(0), Fraction(0)
        if elapsed > last_at and now.running:
            made += rate * (elapsed - last_at)
            rejected += reject_rate * (elapsed - last_at)
        return dataclasses.replace(
            now,
            pieces=base + math.floor(made),
            rejects=math.floor(rejected),
            steps_applied=applied,
        )

    def advance(self, when: float | None = None) -> Scripted:
        """The state now (or at ``when``), logging the steps that became due."""
        when = self.clock() if when is None else when
        state = self.state_at(when)
        start = self.begin()
        for index in range(len(self.log), state.steps_applied):
            step = self.steps[index]
            self.log.append(Applied(index, step, start + float(step.at), when))
        return state

    @classmethod
    def from_data(cls, data: object, where: str = "timeline", **overrides: Any) -> Timeline:
        """A timeline from a parsed file: a list of steps, or a mapping with ``steps``."""
        if isinstance(data, list):
            data = {"steps": data}
        if not isinstance(data, Mapping):
            raise TimelineError(f"{where}: expected a list of steps or a mapping with 'steps'")
        unknown = sorted(set(data) - TIMELINE_KEYS)
        if unknown:
            raise TimelineError(f"{where}: unknown key(s) {unknown}; use {sorted(TIMELINE_KEYS)}")
        steps = data.get("steps")
        if not isinstance(steps, list):
            raise TimelineError(f"{where}.steps: expected a list of steps")
        kwargs: dict[str, Any] = {
            "steps": [Step.parse(s, f"{where}.steps[{i}]") for i, s in enumerate(steps)]
        }
        if data.get("start") is not None:
            kwargs["start"] = parse_start(data["start"], f"{where}.start")
        for key in ("rate", "reject_rate"):
            if key in data:
                kwargs[key] = parse_rate(data[key], f"{where}.{key}")
        if "freq" in data:
            kwargs["freq"] = float(data["freq"])
        for key in ("counter_tag", "reject_tag"):
            if data.get(key) is not None:
                kwargs[key] = str(data[key])
        kwargs.update(overrides)
        return cls(**kwargs)


def parse_start(value: object, where: str) -> float:
    """An absolute start instant: epoch seconds (a number or its text)."""
    if isinstance(value, bool):
        raise TimelineError(f"{where}: expected epoch seconds, got {value!r}")
    try:
        start = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise TimelineError(f"{where}: expected epoch seconds, got {value!r}") from None
    if not math.isfinite(start) or start < 0:
        raise TimelineError(f"{where}: expected epoch seconds, got {value!r}")
    return start


def _apply(now: Scripted, step: Step) -> Scripted:
    changes: dict[str, Any] = {}
    if step.run is not None:
        changes["run"] = step.run
        changes["state"] = None  # a run command leaves a scripted PackML state
    for name in ("freq", "fault", "offline", "state", "mode"):
        value = getattr(step, name)
        if value is not None:
            changes[name] = value
    return dataclasses.replace(now, **changes)


def wrap(value: int, type_name: str) -> int:
    """``value`` as a register of ``type_name`` holds it: uint16 wraps 65535 -> 0, int32
    wraps 2,147,483,647 -> -2,147,483,648 (two's complement)."""
    bits = {"uint16": 16, "int16": 16, "uint32": 32, "int32": 32, "uint64": 64, "int64": 64}
    width = bits.get(type_name)
    if width is None:
        return value
    value %= 1 << width
    if type_name.startswith("int") and value >= 1 << (width - 1):
        value -= 1 << width
    return value


def load_timelines(path: str | Path, start: float | None = None) -> dict[str, Timeline]:
    """Read a timeline file (YAML or JSON): ``devices: {name: timeline}``, one per device.

    A top-level ``start`` applies to every device that does not give its own;
    ``start`` (the argument, e.g. ``--start``) overrides both.
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise TimelineError(f"{path}: not YAML or JSON: {exc}") from None
    if not isinstance(data, Mapping) or not isinstance(data.get("devices"), Mapping):
        raise TimelineError(f"{path}: expected a mapping with 'devices: {{name: timeline}}'")
    unknown = sorted(set(data) - {"start", "devices"})
    if unknown:
        raise TimelineError(f"{path}: unknown key(s) {unknown}; use ['devices', 'start']")
    shared = None if data.get("start") is None else parse_start(data["start"], f"{path}: start")
    timelines = {}
    for name, raw in data["devices"].items():
        where = f"{path}: devices.{name}"
        timeline = Timeline.from_data(raw, where)
        if start is not None:
            timeline.start = start
        elif timeline.start is None:
            timeline.start = shared
        timelines[str(name)] = timeline
    return timelines
