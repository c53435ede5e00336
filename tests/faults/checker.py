"""The fault suite's referee: records every message an agent publishes and judges it.

A :class:`Checker` subscribes at QoS 1 to ``edge/{agent}/#`` (through
``tests.support.mosquitto.Subscriber``; give ``session`` for a persistent
session that outlives a broker restart on a broker with persistence) and
records every (seq, device, tag, value). :meth:`Checker.report` then says:

* ``missing``: seqs in ``1..last_seq`` never received; ``lost`` is how many of
  them the buffer's ``dropped_batches`` does not explain;
* ``duplicates``: seqs received more than once, each judged: a legal duplicate
  is a re-send after the agent reconnected (a new "online" birth came between
  the copies), and at most ``window`` (``mqtt.max_inflight``) seqs are re-sent
  per connection: the agent's bound, in flight plus acked but not yet deleted.
  A copy with MQTT's DUP flag is the broker re-sending to the checker's own
  persistent session (after a broker restart): the rig's duplicate, legal,
  and marked ``redelivered``;
* ``reused``: seqs received twice with different content: a seq handed to two
  batches, never legal;
* ``order_violations``: per device, first arrivals whose seq is lower than an
  earlier first arrival;
* ``wrong_tag``: values breaking the counter invariant (``value % 1000`` is the
  index in the tag name ``tN``, see simulators/counter.py);
* ``decode_errors``: payloads that are not a valid message.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import orjson
import paho.mqtt.client as mqtt

from agent.message import decode_message
from tests.support.mosquitto import Subscriber

__all__ = ["Checker", "Duplicate", "Report"]


@dataclass(frozen=True, slots=True)
class Duplicate:
    """A seq received again; ``legal`` when it is a re-send within the window.

    ``redelivered``: the copy carried MQTT's DUP flag, i.e. the broker re-sent
    it to the checker's persistent session after the checker reconnected. That
    is the rig's own duplicate, not the agent's, and always legal.
    """

    seq: int
    births_between: int
    highest_before: int
    legal: bool
    redelivered: bool = False


@dataclass(slots=True)
class Report:
    """What :meth:`Checker.report` found."""

    received: int
    distinct: int
    last_seq: int
    missing: list[int]
    dropped: int
    duplicates: list[Duplicate]
    order_violations: dict[str, list[tuple[int, int]]]
    wrong_tag: list[tuple[int, str, Any]]
    decode_errors: list[str]
    values: int
    births: int
    reused: list[int] = field(default_factory=list)

    @property
    def lost(self) -> int:
        """Missing seqs that the buffer's drop counter does not account for."""
        return max(0, len(self.missing) - self.dropped)

    @property
    def illegal_duplicates(self) -> list[Duplicate]:
        """Duplicates that are not a re-send within the in-flight window."""
        return [d for d in self.duplicates if not d.legal]

    def problems(self) -> list[str]:
        """Every broken promise, as sentences (empty when all is well)."""
        out = []
        if self.lost:
            out.append(f"{self.lost} seqs lost (first: {self.missing[:10]})")
        if self.illegal_duplicates:
            out.append(f"illegal duplicates: {self.illegal_duplicates[:5]}")
        if self.reused:
            out.append(f"seqs reused for other batches: {self.reused[:10]}")
        for device, bad in self.order_violations.items():
            out.append(f"{device}: order broken at {bad[:5]}")
        if self.wrong_tag:
            out.append(f"values on the wrong tag: {self.wrong_tag[:5]}")
        if self.decode_errors:
            out.append(f"undecodable messages: {self.decode_errors[:3]}")
        return out

    def summary(self) -> dict[str, Any]:
        """The figures, for printing."""
        return {
            "received": self.received, "distinct": self.distinct, "last_seq": self.last_seq,
            "missing": len(self.missing), "dropped": self.dropped, "lost": self.lost,
            "duplicates": len(self.duplicates), "illegal_duplicates": len(self.illegal_duplicates),
            "order_violations": sum(map(len, self.order_violations.values())),
            "wrong_tag": len(self.wrong_tag), "decode_errors": len(self.decode_errors),
            "values": self.values, "births": self.births, "reused": len(self.reused),
        }  # fmt: skip


@dataclass(slots=True)
class _Event:
    seq: int | None  # None: a birth ("online" status) of the agent
    device: str = ""
    values: list[dict[str, Any]] = field(default_factory=list)
    redelivered: bool = False  # the broker's DUP flag: a re-send to the checker


class _RecordingSubscriber(Subscriber):
    """The shared subscriber, also handing every message to the checker."""

    def __init__(self, checker: Checker, port: int, topic: str, session: str | None) -> None:
        super().__init__(port, topic, session=session)
        self._checker = checker

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self._checker.record(msg.topic, bytes(msg.payload), bool(msg.retain), bool(msg.dup))
        super()._on_message(client, userdata, msg)


class Checker:
    """Subscribe to one agent's topics and judge what arrives (see the module docstring)."""

    def __init__(
        self, port: int, agent: str, *, session: str | None = None, window: int = 100
    ) -> None:
        self.agent = agent
        self.window = window
        self._status_topic = f"edge/{agent}/status"
        self._events: list[_Event] = []
        self._decode_errors: list[str] = []
        self.sub = _RecordingSubscriber(self, port, f"edge/{agent}/#", session)

    def start(self, timeout: float = 10.0) -> Self:
        """Connect and wait for the SUBACK."""
        self.sub.start(timeout)
        return self

    def stop(self) -> None:
        """Disconnect."""
        self.sub.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- recording (paho's thread)

    def record(self, topic: str, payload: bytes, retain: bool, dup: bool = False) -> None:
        """Note one message (called by the subscriber's network thread)."""
        if topic == self._status_topic:
            if not retain and _state(payload) == "online":
                self._events.append(_Event(None))
            return
        try:
            message = decode_message(payload)
        except ValueError as exc:
            self._decode_errors.append(f"{topic}: {exc}")
            return
        values = [r["values"] for r in message["readings"]]
        self._events.append(_Event(message["seq"], message["device"], values, dup))

    # --- queries (any thread)

    def seqs(self) -> set[int]:
        """Distinct seqs received so far."""
        return {e.seq for e in list(self._events) if e.seq is not None}

    def count(self) -> int:
        """Data messages received so far (duplicates included)."""
        return sum(1 for e in list(self._events) if e.seq is not None)

    def ticks(self, tag: str = "t10") -> dict[str, list[int]]:
        """Per device, the distinct simulator ticks (``value // 1000`` of ``tag``) received.

        The counter simulator steps every tick whatever is polled, so a run of
        batches lost before they got a seq (RAM) shows as a gap here, where the
        seqs show none. ``t10`` is a uint32: it does not wrap in a test's time.
        """
        found: dict[str, set[int]] = defaultdict(set)
        for event in list(self._events):
            for values in event.values:
                value = values.get(tag)
                if isinstance(value, int | float) and not isinstance(value, bool):
                    found[event.device].add(int(value) // 1000)
        return {device: sorted(ks) for device, ks in found.items()}

    def wait_for_seqs(self, last_seq: int, timeout: float = 60.0, allowed_missing: int = 0) -> bool:
        """Wait until all of ``1..last_seq`` but ``allowed_missing`` arrived; False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.seqs()
            if sum(1 for s in range(1, last_seq + 1) if s not in got) <= allowed_missing:
                return True
            time.sleep(0.1)
        return False

    def wait_for_count(self, n: int, timeout: float = 30.0) -> bool:
        """Wait until ``n`` data messages arrived; False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.count() >= n:
                return True
            time.sleep(0.05)
        return False

    def report(self, last_seq: int | None = None, dropped: int = 0) -> Report:
        """Judge everything received; ``last_seq`` defaults to the highest seq seen."""
        events = list(self._events)
        data = [e for e in events if e.seq is not None]
        seen = {e.seq for e in data if e.seq is not None}
        last = last_seq if last_seq is not None else max(seen, default=0)
        missing = [s for s in range(1, last + 1) if s not in seen]
        return Report(
            received=len(data), distinct=len(seen), last_seq=last, missing=missing,
            dropped=dropped, duplicates=self._duplicates(events),
            order_violations=_order_violations(data), wrong_tag=_wrong_tags(data),
            decode_errors=list(self._decode_errors),
            values=sum(len(v) for e in data for v in e.values),
            births=sum(1 for e in events if e.seq is None), reused=_reused(data),
        )  # fmt: skip

    def _duplicates(self, events: list[_Event]) -> list[Duplicate]:
        first_at: dict[int, tuple[int, int]] = {}  # seq -> (births so far, index)
        births, highest, resent = 0, 0, 0  # resent: agent re-sends since the last birth
        found = []
        for event in events:
            if event.seq is None:
                births, resent = births + 1, 0
                continue
            if event.seq in first_at:
                between = births - first_at[event.seq][0]
                resent += 0 if event.redelivered else 1
                legal = event.redelivered or (between > 0 and resent <= self.window)
                found.append(Duplicate(event.seq, between, highest, legal, event.redelivered))
            else:
                first_at[event.seq] = (births, 0)
            highest = max(highest, event.seq)
        return found


def _state(payload: bytes) -> str | None:
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    return doc.get("state") if isinstance(doc, dict) else None


def _reused(data: list[_Event]) -> list[int]:
    """Seqs whose copies differ in device or values: one seq given to two batches."""
    first: dict[int, tuple[str, list[dict[str, Any]]]] = {}
    bad = []
    for event in data:
        assert event.seq is not None
        content = (event.device, event.values)
        if first.setdefault(event.seq, content) != content:
            bad.append(event.seq)
    return sorted(set(bad))


def _order_violations(data: list[_Event]) -> dict[str, list[tuple[int, int]]]:
    """Per device, (previous first arrival, this one) where the seq went backwards."""
    seen: set[int] = set()
    last: dict[str, int] = {}
    bad: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for event in data:
        assert event.seq is not None
        if event.seq in seen:
            continue  # a duplicate, judged elsewhere
        seen.add(event.seq)
        previous = last.get(event.device, 0)
        if event.seq < previous:
            bad[event.device].append((previous, event.seq))
        last[event.device] = max(previous, event.seq)
    return dict(bad)


def _wrong_tags(data: list[_Event]) -> list[tuple[int, str, Any]]:
    """Values whose ``% 1000`` is not the index in their tag's name ``tN``."""
    bad = []
    for event in data:
        for values in event.values:
            for tag, value in values.items():
                if not (tag.startswith("t") and tag[1:].isdigit()):
                    continue  # not a counter tag
                if not _identifies(value, int(tag[1:])):
                    bad.append((event.seq or 0, tag, value))
    return bad


def _identifies(value: Any, index: int) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return int(value) % 1000 == index
