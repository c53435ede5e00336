"""The Sparkplug B 3.0 Edge Node as a :class:`agent.north.session.Session`: what the publisher asks.

Built on the pure builders of :mod:`agent.north.sparkplug.encode`; the
publisher (:mod:`agent.north.publisher`) owns the connection, the window and
the acks. One agent is one Edge Node ``group_id``/``edge_node_id``; each agent
device is a Sparkplug device.

Per connection:

- the Will is an NDEATH with the bdSeq of the coming CONNECT; the next bdSeq
  is written to ``state_file`` (temporary file, fsync, rename) before the
  CONNECT, so a restart never repeats the bdSeq of the last connection.
- subscriptions: ``NCMD`` of this node and ``DCMD`` of its devices (QoS 1),
  and with ``primary_host`` its ``STATE`` topic.
- with ``primary_host``: nothing is born and no data flows until the host's
  STATE says ``{"online": true, "timestamp": ms}`` on this connection
  (:meth:`SparkplugSession.ready`). A STATE older than the newest one seen is
  a stale copy and is ignored. An offline STATE while born ends the
  connection (``Reaction.reconnect``: NDEATH, DISCONNECT, a new CONNECT with
  the next bdSeq), as the spec wants of an Edge Node whose primary host left;
  the new connection waits for the host again, then births anew.
- ``on_connect``: NBIRTH (seq 0, the connection's bdSeq, ``Node
  Control/Rebirth`` false), then a DBIRTH of every device known and not
  announced offline. An NCMD ``Node Control/Rebirth`` = true sends both again
  (same bdSeq, seq back to 0). Other NCMD metrics and every DCMD are ignored
  with a note: the agent does not write to devices.
- machines (docs/EVENTS.md) are devices of the node: their facts come as
  any device's (``machine_tags``), their events as readings
  (:mod:`agent.north.facts`). The box's own events (source ``_box``: its
  clock) are NDATA of the node metric ``clock_state``, born in every NBIRTH
  with its last value sent (null before the first).
- data: one DDATA per batch (aliases only, ``edge/seq`` = the buffer seq
  first), cut in several DDATA when it would pass ``max_message_size`` (by
  readings, then by tags); the last one finishes the seq. A device not born on
  this connection, or a tag not in its DBIRTH, gets a DBIRTH first (every tag
  with name, alias, datatype, ``engUnit``, last known value). A backlog batch
  (``historical``) has ``is_historical`` on its metrics. Data of a device
  announced offline (a backlog) is followed by its DDEATH again. The reading
  of the failure itself (every tag an error), which reaches the session after
  the DDEATH went out, is acknowledged without a packet: the DDEATH says it,
  and a DBIRTH for it would tell the host the device is back.
- a value the tag's datatype cannot carry (out of width, wrong type) is sent
  as a bad-quality null with the reason, and counted as refused by the
  publisher; a tag with neither a declared datatype nor any value so far
  cannot be born: its error is refused (counted) until its first value.
- goodbye: NDEATH with the connection's bdSeq, before DISCONNECT.

QoS: DBIRTH, DDATA and DDEATH go at ``data_qos``, 1 by default where the spec
says 0: at QoS 0 the broker confirms nothing, and a batch is deleted from the
buffer only once confirmed, so QoS 1 keeps "at least once". The publisher
sends DDATA at the destination's ``mqtt.qos``: the wiring sets it to
``data_qos``. NBIRTH stays at QoS 0 and the NDEATH Will at QoS 1, as specified.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar

from agent.errors import DialectError
from agent.north.destination import SparkplugOptions
from agent.north.dialects.common import Batch, Credentials, Encoded, Packet, Refused
from agent.north.facts import BOX_SOURCE, BOX_TAGS
from agent.north.options import packet_size
from agent.north.session import DeviceFacts, Reaction
from agent.north.sparkplug import sparkplug_b_pb2 as pb
from agent.north.sparkplug.encode import (
    DEVICE_TYPES,
    NAMESPACE,
    EdgeSession,
    Outgoing,
    TagSpec,
    state_topic,
    topic,
)
from agent.north.sparkplug.metrics import datatype_of, value_field
from drivers.base import Reading, Value

__all__ = ["SparkplugSession", "load_next_bd_seq", "store_next_bd_seq"]

log = logging.getLogger("agent.north.sparkplug")

DEFAULT_MAX_MESSAGE_SIZE = 65536
_PAYLOAD_BASE = 96  # payload timestamp, seq and the edge/seq metric, counted generously
_METRIC_BASE = 48  # alias, timestamp, datatype, flags, a numeric value, framing
_ERROR_BASE = 64  # the Quality and edgeError properties around the error text
TOO_LARGE = "value too large for one Sparkplug message"


@dataclass
class _Device:
    specs: dict[str, TagSpec] = field(default_factory=dict)  # every tag known, in order
    values: dict[str, Value] = field(default_factory=dict)  # last known value
    errors: dict[str, str] = field(default_factory=dict)  # tags whose last reading failed
    ts: int = 0  # time of the last reading seen
    edge_seq: int = 0  # buffer seq of the last batch sent
    birth: frozenset[str] = frozenset()  # tags of its DBIRTH on this connection


class SparkplugSession:
    """One Edge Node towards one broker; reused across the publisher's connections."""

    dialect: ClassVar[str] = "sparkplug-b"

    def __init__(
        self,
        options: SparkplugOptions,
        agent_id: str,
        facts: Mapping[str, DeviceFacts],
        *,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> None:
        self._o = options
        self._agent = agent_id
        self._ceiling = self._max = max_message_size
        start = 0 if options.state_file is None else load_next_bd_seq(options.state_file)
        self._edge = EdgeSession(options.group_id, options.edge_node_id, next_bd_seq=start)
        if options.primary_host is not None:
            state_topic(options.primary_host)  # refuses a host id that is no topic level
        self._devices: dict[str, _Device] = {}
        for device, fact in facts.items():
            self._devices[device] = _Device(specs={t.name: t for t in fact.tags})
        self._box = Reading(0, {})  # the box's own metrics (clock_state) as last sent
        self._offline: set[str] = set()
        self._buried: set[str] = set()  # DDEATH sent on this connection, no DBIRTH since
        self._topics: dict[str, str] = {}  # device -> its DDATA topic
        self._big_births: set[str] = set()  # devices whose DBIRTH is above the limit (logged)
        self._host_online = options.primary_host is None
        self._host_ts = -1  # the newest STATE timestamp seen
        self._birthed = False  # NBIRTH published on this connection
        self._ncmd = topic(options.group_id, "NCMD", options.edge_node_id)
        self._dcmd = f"{NAMESPACE}/{options.group_id}/DCMD/{options.edge_node_id}/"
        self._state = None if options.primary_host is None else state_topic(options.primary_host)

    @property
    def bd_seq(self) -> int | None:
        """The bdSeq of the current (or last) connection."""
        return self._edge.bd_seq

    # --- the connection

    def credentials(self, now_ms: int) -> Credentials | None:
        """Sparkplug signs nothing: the destination's configured identity."""
        return None

    def will(self, now_ms: int) -> Outgoing:
        """The NDEATH Will; the next bdSeq is on disk before this CONNECT goes out."""
        will = self._edge.will(now_ms)
        if self._o.state_file is not None:
            try:
                store_next_bd_seq(self._o.state_file, self._edge.next_bd_seq)
            except OSError as exc:
                log.warning("cannot keep the next Sparkplug bdSeq in %s (%s): a restart may "
                            "repeat this one", self._o.state_file, exc)  # fmt: skip
        self._birthed = False
        self._buried.clear()
        if self._state is not None:
            self._host_online = False  # each connection hears the host's STATE again
        for device in self._devices.values():
            device.birth = frozenset()
        return will

    def subscriptions(self) -> Sequence[tuple[str, int]]:
        """NCMD of the node, DCMD of its devices, and the primary host's STATE."""
        topics = [(self._ncmd, 1), (self._dcmd + "+", 1)]
        if self._state is not None:
            topics.append((self._state, 1))
        return topics

    def ready(self) -> bool:
        """False while a configured primary host has not said online on this connection."""
        return self._host_online

    def limit(self, max_message_size: int) -> None:
        """DDATA are cut below ``max_message_size`` from now on (never above the configured)."""
        self._max = min(self._ceiling, max_message_size)

    def on_connect(self, now_ms: int) -> Sequence[Outgoing]:
        """NBIRTH (with the box's own metrics), then a DBIRTH of every device known and
        not announced offline (machines too)."""
        box = self._box if self._box.values else None
        out = [self._edge.nbirth(now_ms, tags=BOX_TAGS, current=box)]
        self._birthed = True
        for name, device in self._devices.items():
            device.birth = frozenset()
            if name not in self._offline and (device.values or _typed(device)):
                born = self._dbirth(name, device, now_ms)
                if born is not None:  # too large: its data is refused until it fits
                    out.append(born)
        return out

    def goodbye(self, now_ms: int) -> Sequence[Outgoing]:
        """The NDEATH of this connection, published before a clean DISCONNECT."""
        self._birthed = False
        return [] if self._edge.bd_seq is None else [self._edge.ndeath(now_ms)]

    # --- inbound

    def on_message(self, topic_name: str, payload: bytes, now_ms: int) -> Reaction:
        """STATE gates the data; NCMD rebirth asks for births; the rest is noted."""
        if topic_name == self._state:
            return self._on_state(payload)
        if topic_name == self._ncmd:
            try:
                command = self._edge.parse_ncmd(payload)
            except DialectError as exc:
                return Reaction(note=f"an NCMD could not be read: {exc}")
            ignored = sorted(command.writes)
            note = f"NCMD metrics ignored (the agent writes nothing): {', '.join(ignored)}"
            return Reaction(rebirth=command.rebirth, note=note if ignored else None)
        if topic_name.startswith(self._dcmd):
            device = topic_name[len(self._dcmd) :]
            return Reaction(note=f"DCMD for {device} ignored: the agent does not write to devices")
        return Reaction(note=f"a message on {topic_name} was not expected")

    def _on_state(self, payload: bytes) -> Reaction:
        host = self._o.primary_host
        try:
            state = json.loads(payload)
            online, ts = state["online"], state["timestamp"]
            if not isinstance(online, bool) or not isinstance(ts, int) or isinstance(ts, bool):
                raise TypeError("online must be a boolean, timestamp an integer")  # noqa: TRY301
        except (ValueError, KeyError, TypeError) as exc:
            return Reaction(note=f"STATE of primary host {host} is not Sparkplug 3.0 JSON: {exc}")
        if ts < self._host_ts:
            return Reaction()  # older than one already seen: a stale copy
        self._host_ts = ts
        if online == self._host_online:
            return Reaction()
        self._host_online = online
        if online:
            return Reaction(ready_changed=True)
        note = f"primary host {host} is offline: data waits in the buffer until it is back"
        return Reaction(ready_changed=True, reconnect=self._birthed, note=note)

    # --- devices

    def device_state(self, device: str, online: bool, now_ms: int) -> Sequence[Outgoing]:
        """DDEATH when a born device stops answering; DBIRTH when it answers again."""
        known = self._devices.setdefault(device, _Device())
        if not online:
            self._offline.add(device)
            if self._birthed and self._edge.is_born(device):
                known.birth = frozenset()
                self._buried.add(device)
                return [self._qos(self._edge.ddeath(device, now_ms))]
            return []
        self._offline.discard(device)
        self._buried.discard(device)
        if self._birthed and not self._edge.is_born(device) and (known.values or _typed(known)):
            born = self._dbirth(device, known, now_ms)
            return [] if born is None else [born]
        return []

    # --- data

    def encode(self, batches: Sequence[Batch], now_ms: int, *, historical: bool) -> Encoded:
        """DBIRTH where needed, then the DDATA of each batch (cut to the size limit)."""
        packets: list[Packet] = []
        refused: list[Refused] = []
        idle: list[int] = []
        for batch in batches:
            if batch.device == BOX_SOURCE and batch.events:
                packets += self._ndata(batch, now_ms, historical, refused, idle)
                continue
            if batch.events and not batch.readings:
                idle.append(batch.seq)  # events without values: nothing to say here
                continue
            try:
                data_topic = self._data_topic(batch.device)
            except DialectError as exc:
                refused.append(Refused(batch.seq, batch.device, None, str(exc)))
                idle.append(batch.seq)
                continue
            device = self._devices.setdefault(batch.device, _Device())
            if batch.device in self._buried and _errors_only(batch):
                self._remember(device, batch.seq, batch.readings)  # its DDEATH already says so
                idle.append(batch.seq)
                continue
            readings = self._learn(batch, device, refused)
            if not self._edge.is_born(batch.device) or not _tags(readings) <= device.birth:
                born = self._dbirth(batch.device, device, now_ms)
                if born is None:  # a DDATA without its DBIRTH is of no use to a host
                    reason = (
                        f"the DBIRTH of {batch.device} is above the {self._max:,}-byte message "
                        "limit: its readings cannot be sent"
                    )
                    refused += [Refused(batch.seq, batch.device, r.ts, reason) for r in readings]
                    idle.append(batch.seq)
                    continue
                packets.append(Packet(born.topic, born.payload, data=False))
            budget = self._max - (1 + 4 + 2 + len(data_topic.encode()) + 2)
            sent, readings = self._ddata(batch, readings, budget, now_ms, historical, refused)
            packets += sent
            last = packets[-1]
            packets[-1] = Packet(last.topic, last.payload, (batch.seq,))
            self._remember(device, batch.seq, readings)
            if batch.device in self._offline:  # backlog of a device gone: it stays gone
                death = self._edge.ddeath(batch.device, now_ms)
                device.birth = frozenset()
                self._buried.add(batch.device)
                packets.append(Packet(death.topic, death.payload, data=False))
        return Encoded(tuple(packets), tuple(refused), tuple(idle))

    def _ndata(
        self, batch: Batch, now_ms: int, historical: bool, refused: list[Refused],
        idle: list[int],
    ) -> list[Packet]:  # fmt: skip
        """The box's own events as NDATA of its node metrics (born in the NBIRTH)."""
        born = self._edge.node_tags()
        readings = []
        for reading in batch.readings:
            values = {}
            for name, value in reading.values.items():
                kind = born.get(name)
                problem = f"{name} is no node metric of the NBIRTH" if kind is None else None
                if kind is not None:
                    try:
                        value_field(kind, value)
                    except DialectError as exc:
                        problem = str(exc)
                if problem is None:
                    values[name] = value
                else:
                    refused.append(Refused(batch.seq, batch.device, reading.ts, problem))
            if values:
                readings.append(Reading(reading.ts, values))
        if not readings:
            idle.append(batch.seq)
            return []
        out = self._edge.ndata(readings, now_ms, historical=historical)
        for reading in readings:
            if reading.ts >= self._box.ts:
                self._box = Reading(reading.ts, {**self._box.values, **reading.values})
        return [Packet(out.topic, out.payload, (batch.seq,))]

    def _data_topic(self, device: str) -> str:
        found = self._topics.get(device)
        if found is None:  # the ids are checked once per device
            found = topic(self._o.group_id, "DDATA", self._o.edge_node_id, device)
            self._topics[device] = found
        return found

    def _ddata(
        self, batch: Batch, readings: list[Reading], budget: int, now_ms: int,
        historical: bool, refused: list[Refused],
    ) -> tuple[list[Packet], list[Reading]]:  # fmt: skip
        """The DDATA of one batch, and its readings as sent (unfit values as errors).

        A batch that makes one DDATA is built at once (the builder refuses an
        unfit value before it takes a seq); only when it refuses one, or when
        the batch is cut or holds a tag too large, is every value checked
        first (:meth:`_fit`). Both ways give the same packets and refusals.
        """
        cut: list[Refused] = []
        chunks = list(_chunks(readings, budget, batch, cut))
        plain = not any(r.errors.keys() & r.values.keys() or None in r.values.values()
                        for r in readings)  # fmt: skip
        if len(chunks) == 1 and plain and not cut:
            try:
                out = self._edge.ddata(batch.device, chunks[0], now_ms, batch.seq,
                                       historical=historical)  # fmt: skip
            except DialectError:
                pass  # a value does not fit its tag: the checked way below
            else:
                return [Packet(out.topic, out.payload)], readings
        readings = self._fit(batch, readings, refused)
        packets = []
        sent: list[Reading] = []  # a tag too large alone went as a bad null: remember that
        for chunk in _chunks(readings, budget, batch, refused):
            out = self._edge.ddata(batch.device, chunk, now_ms, batch.seq, historical=historical)
            packets.append(Packet(out.topic, out.payload))
            sent += chunk
        return packets, sent

    def reply_key(self, packet: Packet) -> str | None:
        """Sparkplug has no application reply: the PUBACK confirms."""
        return None

    def _learn(self, batch: Batch, device: _Device, refused: list[Refused]) -> list[Reading]:
        """New tags take their datatype from their first value; untypable errors are refused."""
        out: list[Reading] = []
        for reading in batch.readings:
            # a tag with a value seen before is known and typed (specs hold every tag seen)
            new = () if reading.values.keys() <= device.values.keys() else reading.values.items()
            for name, value in new:
                if name not in device.specs:
                    device.specs[name] = TagSpec(name, pb.DataType.Name(datatype_of(None, value)))
                elif device.specs[name].datatype is None and name not in device.values:
                    unit = device.specs[name].unit
                    kind = pb.DataType.Name(datatype_of(None, value))
                    device.specs[name] = TagSpec(name, kind, unit)
            errors = dict(reading.errors)
            for name in list(errors):
                known = device.specs.get(name)
                if (known is None or known.datatype is None) and name not in device.values:
                    refused.append(Refused(batch.seq, batch.device, reading.ts,
                                           f"tag {name}: no datatype known yet, its error "
                                           f"({errors.pop(name)}) is not sent"))  # fmt: skip
            out.append(Reading(reading.ts, reading.values, errors, reading.clock))
        return out

    def _fit(self, batch: Batch, readings: list[Reading], refused: list[Refused]) -> list[Reading]:
        """A value its born datatype cannot carry becomes a tag error (and a refusal)."""
        born = self._edge.born_tags(batch.device)
        out: list[Reading] = []
        for reading in readings:
            values: dict[str, Value] = {}
            errors = dict(reading.errors)
            for name, value in reading.values.items():
                try:
                    kind = born.get(name)
                    if kind is not None:
                        value_field(kind, value)
                except DialectError as exc:
                    errors[name] = str(exc)
                    refused.append(Refused(batch.seq, batch.device, reading.ts, f"{name}: {exc}"))
                else:
                    values[name] = value
            out.append(Reading(reading.ts, values, errors, reading.clock))
        return out

    def _remember(self, device: _Device, seq: int, readings: Sequence[Reading]) -> None:
        """What was sent becomes the device's current state (a refused value as its error)."""
        for reading in readings:
            device.values.update(reading.values)
            if device.errors:
                for name in reading.values:
                    device.errors.pop(name, None)
            device.errors.update(reading.errors)
            device.ts = max(device.ts, reading.ts)
        device.edge_seq = seq

    def _dbirth(self, name: str, device: _Device, now_ms: int) -> Outgoing | None:
        """The device's DBIRTH; None (nothing changed, logged) when it is above the limit.

        A DBIRTH is never left out on the way: a host cannot read a DDATA
        without it, and a skipped one would also leave a gap in the seq.
        """
        specs = [
            s for s in device.specs.values() if s.datatype is not None or s.name in device.values
        ]
        current = Reading(device.ts or now_ms, dict(device.values), dict(device.errors))
        mark = self._edge.birth_mark(name)
        out = self._edge.dbirth(name, specs, now_ms, current, edge_seq=device.edge_seq)
        size = packet_size(out.topic, len(out.payload))
        if size > self._max:
            self._edge.unbirth(name, mark)
            if name not in self._big_births:
                self._big_births.add(name)
                log.warning(
                    "the Sparkplug DBIRTH of %s is %s bytes, above the %s-byte message limit: "
                    "its readings are refused until it fits (raise max_message_size)",
                    name, f"{size:,}", f"{self._max:,}",
                )  # fmt: skip
            return None
        self._big_births.discard(name)
        device.birth = frozenset(s.name for s in specs)
        return self._qos(out)

    def _qos(self, out: Outgoing) -> Outgoing:
        kind = out.topic.split("/")[2]
        return replace(out, qos=self._o.data_qos) if kind in DEVICE_TYPES else out


def _errors_only(batch: Batch) -> bool:
    return not any(r.values for r in batch.readings)


def _typed(device: _Device) -> bool:
    return any(s.datatype is not None for s in device.specs.values())


def _tags(readings: Sequence[Reading]) -> set[str]:
    out: set[str] = set()
    for r in readings:
        out.update(r.values)
        out.update(r.errors)
    return out


def _reading_cost(reading: Reading) -> int:
    """The sum of :func:`_cost` over a reading's values and errors."""
    size = _METRIC_BASE * len(reading.values)
    if any(issubclass(kind, str) for kind in set(map(type, reading.values.values()))):
        size += sum(len(v.encode()) for v in reading.values.values() if isinstance(v, str))
    return size + sum(_cost(None, e) for e in reading.errors.values())


def _cost(value: Value | None, error: str | None) -> int:
    size = _METRIC_BASE + (len(value.encode()) if isinstance(value, str) else 0)
    return size + (_ERROR_BASE + len(error.encode()) if error is not None else 0)


def _chunks(
    readings: list[Reading], budget: int, batch: Batch, refused: list[Refused]
) -> Iterator[list[Reading]]:
    """Readings grouped so that each DDATA stays within ``budget`` bytes (an upper estimate)."""
    current: list[Reading] = []
    size = _PAYLOAD_BASE
    emitted = False
    room = budget - _PAYLOAD_BASE
    for reading in readings:
        whole = _reading_cost(reading)
        if whole <= room:
            parts = [(reading, whole)]
        else:
            parts = [(p, _reading_cost(p)) for p in _split_reading(reading, budget, batch, refused)]
        for part, cost in parts:
            if current and size + cost > budget:
                yield current
                emitted = True
                current, size = [], _PAYLOAD_BASE
            current.append(part)
            size += cost
    if current or not emitted:
        yield current


def _split_reading(
    reading: Reading, budget: int, batch: Batch, refused: list[Refused]
) -> Iterator[Reading]:
    """One reading, cut by tags where it alone would pass ``budget``."""
    room = budget - _PAYLOAD_BASE
    if _reading_cost(reading) <= room:
        yield reading
        return
    values: dict[str, Value] = {}
    errors: dict[str, str] = {}
    size = 0
    items: list[tuple[str, Value | None, str | None]] = [
        *((n, v, None) for n, v in reading.values.items()),
        *((n, None, e) for n, e in reading.errors.items()),
    ]
    for name, value, error in items:
        cost = _cost(value, error)
        text = error
        if cost > room:  # one tag alone too large: sent as a bad-quality null, refused
            refused.append(Refused(batch.seq, batch.device, reading.ts, f"{name}: {TOO_LARGE}"))
            text, cost = TOO_LARGE, _cost(None, TOO_LARGE)
        if size + cost > room and (values or errors):
            yield Reading(reading.ts, values, errors, reading.clock)
            values, errors, size = {}, {}, 0
        if text is None and value is not None:
            values[name] = value
        else:
            errors[name] = text or TOO_LARGE
        size += cost
    if values or errors:
        yield Reading(reading.ts, values, errors, reading.clock)


def load_next_bd_seq(path: Path) -> int:
    """The next bdSeq kept in ``path``: 0 if there is none yet (or it is unreadable)."""
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return 0
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("cannot read the Sparkplug bdSeq file %s (%s): starting at 0", path, exc)
        return 0
    if not text.isdigit() or not 0 <= int(text) <= 255:
        log.warning("the Sparkplug bdSeq file %s holds %r, not 0..255: starting at 0", path, text)
        return 0
    return int(text)


def store_next_bd_seq(path: Path, value: int) -> None:
    """Write ``value`` to ``path`` atomically: temporary file, fsync, rename, folder fsync."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, f"{value}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
