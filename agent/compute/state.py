"""Machine state over time: from tag values to closed state intervals.

A machine's state is read from its tags in one of two ways:

* :class:`Rules`: ordered rules, each a state and a condition in a small
  comparison grammar (:func:`parse_condition`); the first rule whose
  condition holds gives the state.
* :class:`StateMap`: a state tag (PackML ``StateCurrent``, a drive's status
  code) whose values map to a state and a reason (:data:`PACKML`).

An optional mode tag (:class:`ModeSpec`) says the intent (production, setup,
maintenance); a planned-downtime mode marks its intervals as planned.

:class:`StateMachine` turns reads into :class:`~agent.compute.facts.StateInterval`
records (decision 14):

* An input in error never yields a confident state. Conditions use
  three-valued logic: a comparison with a tag in error (or missing, NaN, or not
  a number) is unknown; ``and``/``or``/``not`` propagate it only where it
  could change the result. Rules are taken in order: a rule that is false is
  passed over, a rule that is unknown stops the search (an earlier rule
  outranks the later ones, so a later match would be a guess), a true rule
  decides. No rule true, a value the map does not name, a mode unknown: the
  read is not confident either.
* ``debounce``: a new state (or reason, or mode) is accepted once it has held
  that long, counted from the first read that showed it, and its interval is
  back-dated to that read. A candidate that does not last leaves the time to
  the state before it. A read that is not confident neither confirms nor
  breaks a candidate. The first state, and the first after offline, is
  accepted at once: there is no known state to protect from a blip.
* ``offline_after``: with no confident read that long since the last one, the
  machine is offline, back-dated to the first read that was not confident, or
  when nothing arrived, to when the next read was due (``poll_ms`` after the
  last good one; the last good read itself without ``poll_ms``). A
  ``tick(now_ms)`` notices silence; a read also does.

Times are epoch milliseconds; reads come in time order; a read not newer than
the last one is a replay and changes nothing, unless it is fed as ``late``: new
values under a time not newer (a device that stamps each value with its own
change time, read one poll group at a time), judged as of the last read's time.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, TypeAlias

from agent.compute.facts import MACHINE_STATES, MachineState, StateInterval
from drivers.base import Value

Truth: TypeAlias = bool | None
"""True, False, or None for "not known" (an input in error)."""
Values: TypeAlias = Mapping[str, Value]

MAX_CONDITION: Final = 200
_STATE_VERSION: Final = 1


class StateConfigError(ValueError):
    """A state rule, map or mode is wrong; the message says where and how."""


# -- the condition grammar ---------------------------------------------------
#
#   expr    := or
#   or      := and ("or" and)*
#   and     := not ("and" not)*
#   not     := "not" not | compare
#   compare := "(" expr ")" | operand (("==" | "!=" | "<" | "<=" | ">" | ">=") operand)?
#   operand := NAME | NUMBER | "-" NUMBER | "true" | "false"
#
# A bare operand is the condition "is not 0"; true and false are 1 and 0.
# Names are the declared inputs only; there are no strings, attributes, calls
# or arithmetic, and a comparison does not chain.

_TOKEN: Final = re.compile(
    r"\s*(?:(?P<num>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<op>==|!=|<=|>=|<|>|\(|\)|-))"
)
_KEYWORDS: Final = frozenset({"and", "or", "not", "true", "false"})
_COMPARE: Final[dict[str, Callable[[float, float], bool]]] = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}

_Number: TypeAlias = Callable[[Values], float | None]
_Test: TypeAlias = Callable[[Values], Truth]


@dataclass(frozen=True, slots=True)
class Condition:
    """A parsed condition: ``holds(values)`` is True, False or None (not known)."""

    text: str
    names: frozenset[str]
    holds: _Test = field(repr=False, compare=False)


def parse_condition(text: str, names: Collection[str]) -> Condition:
    """Parse ``text`` using only the tag ``names`` declared; refuse anything else."""
    if len(text) > MAX_CONDITION:
        raise StateConfigError(f"condition longer than {MAX_CONDITION} characters")
    parser = _Parser(text, frozenset(names))
    test = parser.parse()
    return Condition(text, frozenset(parser.used), test)


class _Parser:
    def __init__(self, text: str, names: frozenset[str]) -> None:
        self.text = text
        self.names = names
        self.used: set[str] = set()
        self.tokens = self._tokenize()
        self.pos = 0

    def _tokenize(self) -> list[tuple[str, str]]:
        tokens: list[tuple[str, str]] = []
        pos, text = 0, self.text
        while pos < len(text):
            if text[pos:].strip() == "":
                break
            match = _TOKEN.match(text, pos)
            if match is None or match.lastgroup is None:
                bad = text[pos:].lstrip()[:1]
                raise self.error(f"{bad!r} is not part of the grammar{_hint(bad)}")
            tokens.append((match.lastgroup, match.group(match.lastgroup)))
            pos = match.end()
        return tokens

    def error(self, message: str) -> StateConfigError:
        return StateConfigError(f"condition {self.text!r}: {message}")

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, word: str) -> bool:
        token = self.peek()
        if token is not None and token[1] == word and token[0] != "num":
            self.pos += 1
            return True
        return False

    def parse(self) -> _Test:
        if not self.tokens:
            raise self.error("empty (write true for a rule that always holds)")
        test = self.or_()
        token = self.peek()
        if token is not None:
            raise self.error(f"unexpected {token[1]!r}{_after(token[1])}")
        return test

    def or_(self) -> _Test:
        parts = [self.and_()]
        while self.take("or"):
            parts.append(self.and_())
        return parts[0] if len(parts) == 1 else _any(parts)

    def and_(self) -> _Test:
        parts = [self.not_()]
        while self.take("and"):
            parts.append(self.not_())
        return parts[0] if len(parts) == 1 else _all(parts)

    def not_(self) -> _Test:
        if self.take("not"):
            return _negate(self.not_())
        return self.compare()

    def compare(self) -> _Test:
        token = self.peek()
        if token is not None and token[1] == "(":
            # A parenthesised condition, or a parenthesised operand: both read as a test.
            self.pos += 1
            inner = self.or_()
            self.expect(")")
            return self._maybe_compared(inner)
        left = self.operand()
        token = self.peek()
        if token is None or token[1] not in _COMPARE:
            return _nonzero(left)
        self.pos += 1
        right = self.operand()
        after = self.peek()
        if after is not None and after[1] in _COMPARE:
            raise self.error("chained comparison: join the two with 'and'")
        return _compared(_COMPARE[token[1]], left, right)

    def _maybe_compared(self, inner: _Test) -> _Test:
        token = self.peek()
        if token is not None and token[1] in _COMPARE:
            raise self.error("a parenthesised condition cannot be compared")
        return inner

    def expect(self, word: str) -> None:
        if not self.take(word):
            token = self.peek()
            found = "the end" if token is None else repr(token[1])
            raise self.error(f"expected {word!r}, found {found}")

    def operand(self) -> _Number:
        token = self.peek()
        if token is None:
            raise self.error("ends where a tag name or number is expected")
        kind, word = token
        self.pos += 1
        if kind == "num":
            return _constant(float(word))
        if word == "-":
            nxt = self.peek()
            if nxt is None or nxt[0] != "num":
                raise self.error("'-' must be followed by a number")
            self.pos += 1
            return _constant(-float(nxt[1]))
        if word in ("true", "false"):
            return _constant(1.0 if word == "true" else 0.0)
        if kind == "name" and word not in _KEYWORDS:
            nxt = self.peek()
            if nxt is not None and nxt[1] == "(":
                raise self.error(f"{word}(...): calls are not part of the grammar")
            if word not in self.names:
                known = ", ".join(sorted(self.names)) or "none"
                raise self.error(f"unknown tag {word!r} (the inputs are: {known})")
            self.used.add(word)
            return _tag(word)
        raise self.error(f"unexpected {word!r} where a tag name or number is expected")


def _hint(char: str) -> str:
    if char == ".":
        return ": no attribute access, name an input instead"
    if char in "\"'":
        return ": no strings, compare numbers"
    if char == "=":
        return ": compare with '=='"
    return ""


def _after(word: str) -> str:
    return ": calls are not part of the grammar" if word == "(" else ""


def _constant(number: float) -> _Number:
    return lambda values: number


def _tag(name: str) -> _Number:
    def read(values: Values) -> float | None:
        value = values.get(name)
        if isinstance(value, bool):
            return 1.0 if value else 0.0
        if isinstance(value, int | float) and not (isinstance(value, float) and math.isnan(value)):
            return float(value)
        return None  # missing (in error), NaN or text: not a number we can compare

    return read


def _compared(op: Callable[[float, float], bool], left: _Number, right: _Number) -> _Test:
    def test(values: Values) -> Truth:
        a, b = left(values), right(values)
        return None if a is None or b is None else op(a, b)

    return test


def _nonzero(operand: _Number) -> _Test:
    def test(values: Values) -> Truth:
        a = operand(values)
        return None if a is None else a != 0

    return test


def _negate(inner: _Test) -> _Test:
    def test(values: Values) -> Truth:
        a = inner(values)
        return None if a is None else not a

    return test


def _all(parts: Sequence[_Test]) -> _Test:
    def test(values: Values) -> Truth:
        result: Truth = True
        for part in parts:
            a = part(values)
            if a is False:
                return False
            if a is None:
                result = None
        return result

    return test


def _any(parts: Sequence[_Test]) -> _Test:
    def test(values: Values) -> Truth:
        result: Truth = False
        for part in parts:
            a = part(values)
            if a is True:
                return True
            if a is None:
                result = None
        return result

    return test


# -- where the state comes from -----------------------------------------------


@dataclass(frozen=True, slots=True)
class Verdict:
    """What one read says: a state and reason, or why it says nothing (``unknown``)."""

    state: MachineState | None
    reason: str | None = None
    unknown: str | None = None
    """Why the read is not confident (an input in error, a value not mapped)."""


@dataclass(frozen=True, slots=True)
class Rule:
    """One ordered rule: ``state`` when ``when`` holds."""

    state: MachineState
    when: str
    reason: str | None = None


class Rules:
    """Ordered rules over declared inputs; the first rule that holds gives the state."""

    def __init__(self, inputs: Collection[str], rules: Sequence[Rule]) -> None:
        if not rules:
            raise StateConfigError("state rules: at least one rule (the last often 'true')")
        self.inputs = frozenset(inputs)
        self.rules = tuple(rules)
        compiled: list[tuple[Rule, Condition]] = []
        for i, rule in enumerate(rules, start=1):
            where = f"rule {i} ({rule.state})"
            _check_state(rule.state, where)
            try:
                compiled.append((rule, parse_condition(rule.when, self.inputs)))
            except StateConfigError as exc:
                raise StateConfigError(f"{where}: {exc}") from None
        self._compiled = tuple(compiled)

    def judge(self, values: Values) -> Verdict:
        """The verdict of one read (``values`` holds only the good values)."""
        for i, (rule, condition) in enumerate(self._compiled, start=1):
            holds = condition.holds(values)
            if holds:
                return Verdict(rule.state, rule.reason)
            if holds is None:
                missing = sorted(n for n in condition.names if _tag(n)(values) is None)
                return Verdict(None, unknown=f"rule {i} not known: {', '.join(missing)}")
        return Verdict(None, unknown="no rule holds")


StateEntry: TypeAlias = MachineState | tuple[MachineState, str | None]
"""A map's entry: a state, or a state and its reason."""
StateTable: TypeAlias = Mapping[int, StateEntry] | Mapping[str, StateEntry]
"""A state tag's values (numbers, bits, or text) and their entries."""


class StateMap:
    """A state tag whose values name the state (and a reason)."""

    def __init__(self, tag: str, states: StateTable) -> None:
        if not states:
            raise StateConfigError(f"state map of {tag!r}: no value is mapped")
        self.tag = tag
        self.inputs = frozenset({tag})
        table: dict[Value, tuple[MachineState, str | None]] = {}
        for value, entry in states.items():
            state, reason = (entry, None) if isinstance(entry, str) else entry
            _check_state(state, f"state map of {tag!r}, value {value!r}")
            table[value] = (state, reason)
        self._table = table

    def judge(self, values: Values) -> Verdict:
        """The verdict of one read: the mapped state, or not known."""
        value = values.get(self.tag)
        if value is None:
            return Verdict(None, unknown=f"{self.tag} not read")
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        entry = self._table.get(value)
        if entry is None:
            return Verdict(None, unknown=f"{self.tag}={value!r} not mapped")
        return Verdict(entry[0], entry[1])


PACKML: Final[Mapping[int, StateEntry]] = {
    # StateCurrent -> state. Execute is the only running state; each acting
    # state joins the wait state it belongs to (decision 14).
    1: "fault",  # Clearing: the end of an abort
    2: "stopped",  # Stopped
    3: "idle",  # Starting
    4: "idle",  # Idle
    5: ("idle", "external"),  # Suspended: starved or blocked
    6: "running",  # Execute
    7: "stopped",  # Stopping
    8: "fault",  # Aborting
    9: "fault",  # Aborted
    10: ("idle", "internal"),  # Holding
    11: ("idle", "internal"),  # Held: paused from inside the machine
    12: ("idle", "internal"),  # Unholding
    13: ("idle", "external"),  # Suspending
    14: ("idle", "external"),  # Unsuspending
    15: "idle",  # Resetting
    16: "idle",  # Completing
    17: "idle",  # Complete
}
"""PackML ``StateCurrent`` numbers (ISA-TR88.00.02); 0 (Undefined) is not a state."""


class ModeSpec:
    """An intent tag: its values' names, and which names are planned downtime."""

    def __init__(
        self,
        tag: str,
        names: Mapping[int, str] | Mapping[str, str],
        planned_downtime: Collection[str] = (),
    ) -> None:
        self.tag = tag
        self.names: dict[object, str] = dict(names.items())
        self.planned_downtime = frozenset(planned_downtime)
        unknown = self.planned_downtime - set(self.names.values())
        if unknown:
            raise StateConfigError(
                f"mode {tag!r}: planned downtime {sorted(unknown)} not among the modes"
                f" {sorted(set(self.names.values()))}"
            )

    def name(self, values: Values) -> str | None:
        """The mode a read shows, None when not known."""
        value = values.get(self.tag)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        return None if value is None else self.names.get(value)


def _check_state(state: str, where: str) -> None:
    if state not in MACHINE_STATES or state == "offline":
        usable = ", ".join(s for s in MACHINE_STATES if s != "offline")
        raise StateConfigError(f"{where}: state {state!r}, use {usable} (offline is derived)")


# -- the state machine ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StateSpec:
    """One machine's state configuration."""

    source: Rules | StateMap
    offline_after_ms: int
    debounce_ms: int = 0
    poll_ms: int | None = None
    """The poll interval: when reads stop coming, the first missing one was due then."""
    mode: ModeSpec | None = None

    def __post_init__(self) -> None:
        if self.offline_after_ms <= 0:
            raise StateConfigError("offline_after must be positive")
        if self.debounce_ms < 0 or (self.poll_ms is not None and self.poll_ms <= 0):
            raise StateConfigError("debounce must not be negative, poll_ms must be positive")
        if self.poll_ms is not None and self.offline_after_ms <= self.poll_ms:
            raise StateConfigError("offline_after must be longer than the poll interval")
        if self.mode is not None and self.mode.tag in self.source.inputs:
            raise StateConfigError(f"mode tag {self.mode.tag!r} is also a state input")

    @property
    def inputs(self) -> frozenset[str]:
        """Every tag the machine reads (state inputs and the mode tag)."""
        extra = frozenset() if self.mode is None else frozenset({self.mode.tag})
        return self.source.inputs | extra


@dataclass(frozen=True, slots=True)
class _Held:
    """A state (with reason and mode) and when it began."""

    state: MachineState
    reason: str | None
    mode: str | None
    since_ms: int

    def same(self, other: _Held) -> bool:
        return (self.state, self.reason, self.mode) == (other.state, other.reason, other.mode)

    def dump(self) -> list[object]:
        return [self.state, self.reason, self.mode, self.since_ms]


class StateMachine:
    """One machine's state: feed it reads in time order, get closed intervals."""

    def __init__(self, spec: StateSpec) -> None:
        self.spec = spec
        self._held: _Held | None = None
        self._candidate: _Held | None = None
        self._last_good_ms: int | None = None
        self._bad: tuple[int, str] | None = None
        """The first read since the last good one that was not confident, and why."""
        self._last_ts: int | None = None

    @property
    def current(self) -> StateInterval | None:
        """The state now and since when (``end_ms`` None); None before any state is known."""
        held = self._held
        if held is None:
            return None
        return self._interval(held, None)

    def feed(
        self,
        ts_ms: int,
        values: Values,
        errors: Collection[str] | Mapping[str, str] = (),
        *,
        late: bool = False,
    ) -> list[StateInterval]:
        """Take one read (the tags in ``errors`` failed); the intervals it closed.

        ``late``: the values are new even if ``ts_ms`` is not newer than the last read
        (an OPC UA read carries its values' change time, and a read of another poll
        group may carry an older one); they are then judged as of the last read.
        """
        if self._last_ts is not None and ts_ms <= self._last_ts:
            if not late:
                return []
            held = self._held
            ts_ms = self._last_ts if held is None else max(self._last_ts, held.since_ms)
        self._last_ts = ts_ms
        good = {k: v for k, v in values.items() if k not in errors} if errors else values
        verdict = self.spec.source.judge(good)
        mode: str | None = None
        if verdict.state is not None and self.spec.mode is not None:
            mode = self.spec.mode.name(good)
            if mode is None:
                verdict = Verdict(None, unknown=f"mode {self.spec.mode.tag} not known")
        if verdict.state is None:
            if self._bad is None:
                reason = verdict.unknown or "not known"
                failed = sorted(set(errors) & self.spec.inputs)
                if failed and isinstance(errors, Mapping):
                    reason = f"{failed[0]}: {errors[failed[0]]}"
                self._bad = (ts_ms, reason)
            return self._check_offline(ts_ms)
        closed = self._check_offline(ts_ms)
        self._last_good_ms = ts_ms
        self._bad = None
        seen = _Held(verdict.state, verdict.reason, mode, ts_ms)
        held = self._held
        if held is None or held.state == "offline":
            self._accept(seen, closed)
        elif seen.same(held):
            self._candidate = None
        else:
            if self._candidate is None or not self._candidate.same(seen):
                self._candidate = seen
            if ts_ms - self._candidate.since_ms >= self.spec.debounce_ms:
                self._accept(self._candidate, closed)
        return closed

    def tick(self, now_ms: int) -> list[StateInterval]:
        """Notice silence up to ``now_ms``; the interval it closed, if it went offline."""
        if self._last_ts is not None and now_ms < self._last_ts:
            return []
        return self._check_offline(now_ms)

    def _accept(self, new: _Held, closed: list[StateInterval]) -> None:
        held = self._held
        if held is not None and new.since_ms > held.since_ms:
            closed.append(self._interval(held, new.since_ms))
        self._held = new
        self._candidate = None

    def _check_offline(self, now_ms: int) -> list[StateInterval]:
        closed: list[StateInterval] = []
        held = self._held
        if held is not None and held.state == "offline":
            return closed
        limit = self.spec.offline_after_ms
        if self._last_good_ms is not None:
            if now_ms - self._last_good_ms < limit:
                return closed
            if self._bad is not None:
                start, reason = self._bad
            else:
                start, reason = self._last_good_ms + (self.spec.poll_ms or 0), "no read"
        elif self._bad is not None and now_ms - self._bad[0] >= limit:
            start, reason = self._bad  # never a good read: offline from the first read
        else:
            return closed
        start = min(start, now_ms)
        self._accept(_Held("offline", reason, None, start), closed)
        return closed

    def _interval(self, held: _Held, end_ms: int | None) -> StateInterval:
        mode = self.spec.mode
        planned = mode is not None and held.mode in mode.planned_downtime
        return StateInterval(
            held.since_ms, end_ms, held.state, held.mode, held.reason, planned_downtime=planned
        )

    def state(self) -> dict[str, object]:
        """What a restart needs, as a small JSON-able dict."""
        return {
            "v": _STATE_VERSION,
            "held": None if self._held is None else self._held.dump(),
            "candidate": None if self._candidate is None else self._candidate.dump(),
            "last_good_ms": self._last_good_ms,
            "bad": None if self._bad is None else list(self._bad),
            "last_ts_ms": self._last_ts,
        }

    @classmethod
    def from_state(cls, spec: StateSpec, state: Mapping[str, object]) -> StateMachine:
        """A machine continuing from ``state`` (as :meth:`state` gave it) under ``spec``."""
        if state.get("v") != _STATE_VERSION:
            raise StateConfigError(f"machine state version {state.get('v')!r}: expected 1")
        machine = cls(spec)
        machine._held = _load_held(state.get("held"), "held")
        machine._candidate = _load_held(state.get("candidate"), "candidate")
        machine._last_good_ms = _opt_ms(state.get("last_good_ms"), "last_good_ms")
        machine._last_ts = _opt_ms(state.get("last_ts_ms"), "last_ts_ms")
        bad = state.get("bad")
        if bad is not None:
            if not (isinstance(bad, list) and len(bad) == 2 and isinstance(bad[1], str)):
                raise StateConfigError("machine state: bad must be [ts_ms, reason]")
            machine._bad = (_ms(bad[0], "bad"), bad[1])
        return machine


def _load_held(raw: object, key: str) -> _Held | None:
    if raw is None:
        return None
    if not (isinstance(raw, list) and len(raw) == 4):
        raise StateConfigError(f"machine state: {key} must be [state, reason, mode, since_ms]")
    state, reason, mode, since = raw
    if state not in MACHINE_STATES:
        raise StateConfigError(f"machine state: {key} state {state!r} unknown")
    if not (reason is None or isinstance(reason, str)) or not (
        mode is None or isinstance(mode, str)
    ):
        raise StateConfigError(f"machine state: {key} reason and mode are text or null")
    found: MachineState = next(s for s in MACHINE_STATES if s == state)
    return _Held(found, reason, mode, _ms(since, key))


def _opt_ms(raw: object, key: str) -> int | None:
    return None if raw is None else _ms(raw, key)


def _ms(raw: object, key: str) -> int:
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    raise StateConfigError(f"machine state: {key} {raw!r} is not a time in ms")
