"""The fault suite's referee for a Sparkplug B destination: loss, order, duplicates, session rules.

A :class:`SparkplugChecker` subscribes at QoS 1 to ``spBv1.0/{group}/#`` with a
persistent session (like :class:`tests.faults.checker.Checker`, so that what
the broker accepted while the checker was away still reaches it) and decodes
every message with the project's generated schema (the format itself is
checked against Eclipse Tahu elsewhere). It judges two things:

* **the batches**, by the buffer seq each DDATA carries in its ``edge/seq``
  metric (aliases resolved from the device's last DBIRTH): the same
  :class:`~tests.faults.checker.Report` as the edge-json checker: seqs never
  received, first arrivals out of order per device, duplicates (legal only
  after a new connection, an NBIRTH with a new bdSeq, and at most ``window``
  re-sent per connection), a seq carrying two different contents, values on
  the wrong counter tag;
* **the Sparkplug session rules**, by feeding every message to the host
  application written from the specification
  (:class:`tests.agent.north.sparkplug.host.Host`): NBIRTH seq 0 with an
  Int64 bdSeq, seq 0-255 continuity within a session, DDATA only after its
  DBIRTH, known aliases, nothing from a node after its NDEATH; plus a bdSeq
  never reused by a new connection. Each rule broken is one sentence in
  :attr:`SparkplugReport.violations`; the host is then resynchronised so one
  break is reported once.

A copy carrying MQTT's DUP flag that is byte for byte a message already
received is the broker re-sending to the checker's own session (after a
broker restart): the rig's duplicate, marked ``redelivered`` and not fed to
the host again.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import paho.mqtt.client as mqtt

from agent.north.sparkplug import sparkplug_b_pb2 as pb
from agent.north.sparkplug.encode import BD_SEQ, EDGE_SEQ
from tests.agent.north.sparkplug.host import Host, RebirthNeeded
from tests.faults.checker import (
    Duplicate,
    Report,
    _Event,
    _order_violations,
    _reused,
    _wrong_tags,
)
from tests.support.mosquitto import Subscriber

__all__ = ["Arrival", "SparkplugChecker", "SparkplugReport"]


@dataclass(frozen=True, slots=True)
class Arrival:
    """One message as it arrived: its type, device, seqs and the monotonic time."""

    kind: str
    device: str | None
    at: float
    seq: int | None = None  # the Sparkplug seq (None: NDEATH)
    bd_seq: int | None = None  # NBIRTH, NDEATH
    edge_seq: int | None = None  # DDATA
    redelivered: bool = False
    historical: bool = False  # a DDATA of the backlog (its tag metrics are ``is_historical``)


@dataclass(slots=True)
class SparkplugReport:
    """What :meth:`SparkplugChecker.report` found."""

    edge: Report
    violations: list[str]
    births: list[int]  # bdSeq of every NBIRTH, in arrival order (a rebirth repeats it)
    deaths: list[int]  # bdSeq of every NDEATH, in arrival order
    stale_deaths: list[int]  # NDEATHs not matching the live NBIRTH (ignored by a host)

    @property
    def missing(self) -> list[int]:
        """Seqs of ``1..last_seq`` no DDATA carried."""
        return self.edge.missing

    @property
    def duplicates(self) -> list[Duplicate]:
        """Every seq received again, judged."""
        return self.edge.duplicates

    def unmatched_births(self) -> list[int]:
        """bdSeqs of NBIRTHs no NDEATH ever matched (a connection whose end went unannounced)."""
        return sorted(set(self.births) - set(self.deaths))

    def problems(self) -> list[str]:
        """Every broken promise, as sentences (empty when all is well)."""
        return [*self.edge.problems(), *(f"Sparkplug: {v}" for v in self.violations[:10])]

    def summary(self) -> dict[str, Any]:
        """The figures, for printing."""
        return {
            **self.edge.summary(), "violations": len(self.violations),
            "nbirths": len(self.births), "ndeaths": len(self.deaths),
            "stale_deaths": len(self.stale_deaths),
        }  # fmt: skip


class _RecordingSubscriber(Subscriber):
    """The shared subscriber, handing every message to the checker instead of a list."""

    def __init__(self, checker: SparkplugChecker, port: int, topic: str, session: str) -> None:
        super().__init__(port, topic, session=session)
        self._checker = checker

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self._checker.record(msg.topic, bytes(msg.payload), bool(msg.dup))


class SparkplugChecker:
    """Subscribe to one Edge Node's topics and judge what arrives (see the module docstring)."""

    def __init__(
        self, port: int, group: str, node: str, *, session: str = "sp-checker",
        window: int = 100,
    ) -> None:  # fmt: skip
        self.group = group
        self.node = node
        self.window = window
        self._lock = threading.Lock()
        self._host = Host()
        self._arrivals: list[Arrival] = []
        self._events: list[_Event] = []  # None seq: an NBIRTH of a new connection
        self._seen: set[tuple[str, bytes]] = set()
        self._aliases: dict[str, dict[int, str]] = {}  # device -> alias -> name, any birth
        self._violations: list[str] = []
        self._stale: list[int] = []
        self._bd_seqs: list[int] = []  # bdSeq of each new connection's NBIRTH
        self._decode_errors: list[str] = []
        self.sub = _RecordingSubscriber(self, port, f"spBv1.0/{group}/#", session)

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

    def record(self, topic: str, data: bytes, dup: bool = False) -> None:
        """Note one message (called by the subscriber's network thread)."""
        at = time.monotonic()
        parts = topic.split("/")
        if len(parts) not in (4, 5) or parts[3] != self.node:
            return  # another Edge Node of the group
        kind, device = parts[2], (parts[4] if len(parts) == 5 else None)
        payload = pb.Payload()
        try:
            payload.ParseFromString(data)
        except Exception as exc:  # protobuf's DecodeError
            with self._lock:
                self._decode_errors.append(f"{topic}: {exc}")
            return
        with self._lock:
            if dup and (topic, data) in self._seen:
                self._redelivered(kind, device, payload, at)
                return
            self._seen.add((topic, data))
            new_connection = self._judge_rules(topic, data, kind, payload)
            self._record(kind, device, payload, at, new_connection)

    def _redelivered(self, kind: str, device: str | None, payload: pb.Payload, at: float) -> None:
        seq = payload.seq if payload.HasField("seq") else None
        edge_seq = None
        if kind == "DDATA" and device is not None:
            edge_seq, readings = self._ddata(device, payload)
            if edge_seq is not None:
                self._events.append(_Event(edge_seq, device, readings, redelivered=True))
        self._arrivals.append(Arrival(kind, device, at, seq, None, edge_seq, redelivered=True))

    def _judge_rules(self, topic: str, data: bytes, kind: str, payload: pb.Payload) -> bool:
        """Feed the spec-written host; a rule it refuses is a violation, then resync.

        True for the NBIRTH of a new connection (not a rebirth on the live one).
        """
        key = (self.group, self.node)
        live = self._host.nodes.get(key)
        new_connection = False
        if kind == "NBIRTH":
            bd = _bd_seq(payload)
            rebirth = live is not None and live.online and bd == live.bd_seq
            if bd is not None and not rebirth:
                new_connection = True
                if bd in self._bd_seqs:
                    self._violations.append(f"NBIRTH of a new connection reuses bdSeq {bd}")
                self._bd_seqs.append(bd)
        elif kind == "NDEATH":
            bd = _bd_seq(payload)
            if live is None or not live.online or bd != live.bd_seq:
                self._stale.append(-1 if bd is None else bd)
        try:
            self._host.receive(topic, data)
        except RebirthNeeded as exc:
            self._violations.append(f"{topic}: {exc}")
            state = self._host.nodes.get(key)
            if state is not None and payload.HasField("seq") and "seq gap" in str(exc):
                state.seq = payload.seq  # one gap is one violation, not one per message
        device = topic.rsplit("/", maxsplit=1)[-1]
        if kind in ("DBIRTH", "DDATA") and not any(
            self._name(device, m) == EDGE_SEQ for m in payload.metrics
        ):
            self._violations.append(f"{topic}: no {EDGE_SEQ} metric")
        if kind == "DDATA" and len({m.is_historical for m in self._tags(device, payload)}) > 1:
            self._violations.append(f"{topic}: is_historical on some of its metrics only")
        return new_connection

    def _record(
        self, kind: str, device: str | None, payload: pb.Payload, at: float, new_connection: bool
    ) -> None:
        seq = payload.seq if payload.HasField("seq") else None
        bd = _bd_seq(payload) if kind in ("NBIRTH", "NDEATH") else None
        edge_seq = None
        if new_connection:
            self._events.append(_Event(None))
        elif kind == "DBIRTH" and device is not None:
            table = self._aliases.setdefault(device, {})
            for m in payload.metrics:
                if m.name and m.HasField("alias"):
                    table[m.alias] = m.name
        elif kind == "DDATA" and device is not None:
            edge_seq, readings = self._ddata(device, payload)
            if edge_seq is None:
                self._decode_errors.append(f"DDATA of {device} without a readable {EDGE_SEQ}")
            else:
                self._events.append(_Event(edge_seq, device, readings))
        historical = (
            kind == "DDATA"
            and device is not None
            and any(m.is_historical for m in self._tags(device, payload))
        )
        self._arrivals.append(Arrival(kind, device, at, seq, bd, edge_seq, False, historical))

    def _name(self, device: str, m: pb.Payload.Metric) -> str | None:
        return m.name or self._aliases.get(device, {}).get(m.alias)

    def _tags(self, device: str, payload: pb.Payload) -> list[pb.Payload.Metric]:
        """The metrics of a DDATA that carry tag values (all but ``edge/seq``)."""
        return [m for m in payload.metrics if self._name(device, m) != EDGE_SEQ]

    def _ddata(self, device: str, payload: pb.Payload) -> tuple[int | None, list[dict[str, Any]]]:
        """The edge/seq of a DDATA and its values grouped by reading time (name -> value)."""
        edge_seq = None
        by_ts: dict[int, dict[str, Any]] = {}
        for m in payload.metrics:
            name = self._name(device, m)
            if name == EDGE_SEQ:
                edge_seq = int(m.long_value)
            elif name is not None and not m.is_null:
                kind = m.WhichOneof("value")
                by_ts.setdefault(m.timestamp, {})[name] = getattr(m, str(kind))
        return edge_seq, [by_ts[ts] for ts in sorted(by_ts)]

    # --- queries (any thread)

    def arrivals(self) -> list[Arrival]:
        """Every message so far, in arrival order."""
        with self._lock:
            return list(self._arrivals)

    def seqs(self) -> set[int]:
        """Distinct buffer seqs received in DDATA so far."""
        with self._lock:
            return {e.seq for e in self._events if e.seq is not None}

    def count(self) -> int:
        """DDATA messages received so far (duplicates included)."""
        with self._lock:
            return sum(1 for e in self._events if e.seq is not None)

    def births(self) -> list[int]:
        """bdSeq of every NBIRTH so far, in arrival order."""
        return [a.bd_seq for a in self.arrivals() if a.kind == "NBIRTH" and a.bd_seq is not None]

    def deaths(self) -> list[int]:
        """bdSeq of every NDEATH so far, in arrival order."""
        return [a.bd_seq for a in self.arrivals() if a.kind == "NDEATH" and a.bd_seq is not None]

    def wait_for_seqs(self, last_seq: int, timeout: float = 60.0, allowed_missing: int = 0) -> bool:
        """Wait until all of ``1..last_seq`` but ``allowed_missing`` arrived; False on timeout."""

        def arrived() -> bool:
            got = self.seqs()
            return sum(1 for s in range(1, last_seq + 1) if s not in got) <= allowed_missing

        return _wait(arrived, timeout)

    def wait_for_count(self, n: int, timeout: float = 30.0) -> bool:
        """Wait until ``n`` DDATA messages arrived; False on timeout."""
        return _wait(lambda: self.count() >= n, timeout)

    def wait_for_death(self, bd_seq: int, timeout: float = 15.0) -> bool:
        """Wait for an NDEATH carrying ``bd_seq``; False on timeout."""
        return _wait(lambda: bd_seq in self.deaths(), timeout)

    def wait_for_birth(self, after: int, timeout: float = 30.0) -> int | None:
        """Wait for an NBIRTH beyond the first ``after`` ones; its bdSeq, None on timeout."""
        if _wait(lambda: len(self.births()) > after, timeout):
            return self.births()[after]
        return None

    def first_ddata_after_birth(self, bd_seq: int, timeout: float = 20.0) -> Arrival | None:
        """The first DDATA after the NBIRTH with ``bd_seq``; None if none came in ``timeout``."""

        def find() -> Arrival | None:
            arrivals = self.arrivals()
            born = [i for i, a in enumerate(arrivals) if a.kind == "NBIRTH" and a.bd_seq == bd_seq]
            if born:
                return next((a for a in arrivals[born[0] :] if a.kind == "DDATA"), None)
            return None

        _wait(lambda: find() is not None, timeout)
        return find()

    def report(self, last_seq: int | None = None, dropped: int = 0) -> SparkplugReport:
        """Judge everything received; ``last_seq`` defaults to the highest seq seen."""
        with self._lock:
            events = list(self._events)
            violations = list(self._violations)
            stale = list(self._stale)
            decode_errors = list(self._decode_errors)
        data = [e for e in events if e.seq is not None]
        seen = {e.seq for e in data if e.seq is not None}
        last = last_seq if last_seq is not None else max(seen, default=0)
        edge = Report(
            received=len(data), distinct=len(seen), last_seq=last,
            missing=[s for s in range(1, last + 1) if s not in seen], dropped=dropped,
            duplicates=_duplicates(events, self.window),
            order_violations=_order_violations(data), wrong_tag=_wrong_tags(data),
            decode_errors=decode_errors, values=sum(len(v) for e in data for v in e.values),
            births=sum(1 for e in events if e.seq is None), reused=_reused(data),
        )  # fmt: skip
        return SparkplugReport(edge, violations, self.births(), self.deaths(), stale)


def _bd_seq(payload: pb.Payload) -> int | None:
    found = [m.long_value for m in payload.metrics if m.name == BD_SEQ]
    return int(found[0]) if len(found) == 1 else None


def _duplicates(events: list[_Event], window: int) -> list[Duplicate]:
    """Each seq received again: legal after a new connection, ``window`` re-sends at most."""
    first_at: dict[int, int] = {}  # seq -> connections so far at its first arrival
    connections, highest, resent = 0, 0, 0
    found = []
    for event in events:
        if event.seq is None:
            connections, resent = connections + 1, 0
            continue
        if event.seq in first_at:
            between = connections - first_at[event.seq]
            resent += 0 if event.redelivered else 1
            legal = event.redelivered or (between > 0 and resent <= window)
            found.append(Duplicate(event.seq, between, highest, legal, event.redelivered))
        else:
            first_at[event.seq] = connections
        highest = max(highest, event.seq)
    return found


def _wait(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())
