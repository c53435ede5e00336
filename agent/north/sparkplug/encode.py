"""The Sparkplug B 3.0 Edge Node side, as pure functions of a session: no I/O.

Each builder returns an :class:`Outgoing` (topic, payload bytes, QoS, retain);
the caller publishes it. The caller also passes the time (``now_ms``), so the
same inputs always give the same bytes.

Session rules kept here (Sparkplug 3.0, chapters 4 and 5):

- ``bdSeq`` ties an NDEATH to its NBIRTH. :meth:`EdgeSession.will` is called
  once per MQTT CONNECT and gives the Will (an NDEATH with the bdSeq for this
  connection: 0 on the first, then +1 each CONNECT, 255 wraps to 0); the
  NBIRTH that follows carries the same bdSeq. The caller may persist
  :attr:`EdgeSession.next_bd_seq` so that a restart does not repeat one.
- ``seq`` counts every message of the node after NBIRTH (DBIRTH, DDATA,
  DDEATH, NDATA): NBIRTH is 0, each next is +1, 255 wraps to 0. NDEATH has
  none.
- Aliases are unique over the whole Edge Node (node and devices), assigned the
  first time a (device, tag) is born and kept for the life of the session
  object, so a rebirth repeats them. DDATA carries aliases only.
- QoS/retain: NBIRTH, NDATA, DBIRTH, DDATA, DDEATH are QoS 0, not retained;
  the NDEATH Will is QoS 1, not retained. (STATE is published by host
  applications, retained at QoS 1; the agent only reads it.)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from agent.errors import DialectError
from agent.north.dialects.common import Outgoing as Outgoing  # noqa: PLC0414 - re-exported
from agent.north.dialects.common import TagSpec as TagSpec  # noqa: PLC0414 - re-exported
from agent.north.sparkplug import sparkplug_b_pb2 as pb
from agent.north.sparkplug.metrics import datatype_of, get_value, set_value, value_field
from agent.north.sparkplug.wire import U64, DdataWriter, Slow, varint
from drivers.base import Reading, Value

NAMESPACE = "spBv1.0"
NODE_TYPES = frozenset({"NBIRTH", "NDEATH", "NDATA", "NCMD"})
DEVICE_TYPES = frozenset({"DBIRTH", "DDEATH", "DDATA", "DCMD"})
REBIRTH = "Node Control/Rebirth"
BD_SEQ = "bdSeq"
EDGE_SEQ = "edge/seq"
"""Device metric carrying the agent buffer's batch seq in every DDATA (UInt64)."""
ENG_UNIT = "engUnit"
QUALITY = "Quality"
QUALITY_GOOD = 192
QUALITY_BAD = -2147483136
"""Ignition 8's QualityCode ``Bad`` (0x80000200, subcode 512). Not in the spec."""
ERROR_TEXT = "edgeError"


@dataclass(frozen=True)
class Command:
    """An NCMD/DCMD: rebirth asked, and the other metrics written (None = null)."""

    rebirth: bool
    writes: dict[str, Value | None]


def topic(group_id: str, message_type: str, edge_node_id: str, device_id: str | None = None) -> str:
    """``spBv1.0/group/TYPE/node[/device]``; a device id goes with D* types only."""
    if message_type in DEVICE_TYPES:
        if not device_id:
            raise DialectError(f"a {message_type} topic needs a device id")
        parts = [group_id, message_type, edge_node_id, device_id]
    elif message_type in NODE_TYPES:
        if device_id is not None:
            raise DialectError(f"a {message_type} topic has no device id")
        parts = [group_id, message_type, edge_node_id]
    else:
        raise DialectError(f"unknown Sparkplug message type {message_type!r}")
    for part in parts:
        _check_id(part)
    return "/".join([NAMESPACE, *parts])


def state_topic(host_id: str) -> str:
    """The topic where a host application keeps its retained STATE."""
    _check_id(host_id)
    return f"{NAMESPACE}/STATE/{host_id}"


def _check_id(part: str) -> None:
    # Sparkplug ids are single topic levels: no separator, no wildcard.
    if not part or any(c in part for c in "/+#"):
        raise DialectError(f"{part!r} cannot be a Sparkplug id (empty, or holds / + #)")


@dataclass
class _Device:
    tags: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (alias, datatype)
    born: bool = False
    writer: DdataWriter | None = None


class EdgeSession:
    """bdSeq, seq and aliases of one Edge Node towards one broker."""

    def __init__(self, group_id: str, edge_node_id: str, next_bd_seq: int = 0) -> None:
        topic(group_id, "NBIRTH", edge_node_id)  # validates both ids
        if not 0 <= next_bd_seq <= 255:
            raise DialectError(f"bdSeq {next_bd_seq} is outside 0..255")
        self.group_id = group_id
        self.edge_node_id = edge_node_id
        self.next_bd_seq = next_bd_seq
        self.bd_seq: int | None = None
        self._seq: int | None = None  # None until NBIRTH
        self._next_alias = 1
        self._node_aliases: dict[str, tuple[int, int]] = {}
        self._devices: dict[str, _Device] = {}
        self._topics: dict[tuple[str, str | None], str] = {}

    # -- node ---------------------------------------------------------------
    def will(self, now_ms: int) -> Outgoing:
        """The NDEATH Will for the next CONNECT; takes the next bdSeq."""
        self.bd_seq = self.next_bd_seq
        self.next_bd_seq = (self.next_bd_seq + 1) % 256
        self._seq = None
        return self.ndeath(now_ms)

    def ndeath(self, now_ms: int) -> Outgoing:
        """NDEATH with this connection's bdSeq (the Will, or sent before a clean disconnect)."""
        payload = pb.Payload(timestamp=now_ms)  # no seq: the spec forbids one here
        payload.metrics.append(self._bd_seq_metric(now_ms))
        return Outgoing(self._topic("NDEATH"), payload.SerializeToString(), 1, False)

    def nbirth(
        self,
        now_ms: int,
        metrics: Mapping[str, Value] | None = None,
        tags: Sequence[TagSpec] = (),
        current: Reading | None = None,
    ) -> Outgoing:
        """NBIRTH: seq 0, bdSeq, ``Node Control/Rebirth`` false, node metrics; unborn devices.

        ``tags`` are node metrics with a declared datatype, born with their
        value in ``current`` (at its ts) or null: what NDATA reports later.
        """
        self._seq = 0
        for device in self._devices.values():
            device.born = False
        payload = pb.Payload(timestamp=now_ms, seq=0)
        payload.metrics.append(self._bd_seq_metric(now_ms))
        values: dict[str, Value] = {REBIRTH: False, **(metrics or {})}
        for name, value in values.items():
            alias, datatype = self._alias(self._node_aliases, name, datatype_of(None, value))
            metric = payload.metrics.add(name=name, alias=alias, timestamp=now_ms)
            metric.datatype = datatype
            set_value(metric, datatype, value)
        known = current.values if current is not None else {}
        for spec in tags:
            alias, datatype = self._alias(
                self._node_aliases, spec.name, datatype_of(spec.datatype, None)
            )
            metric = payload.metrics.add(name=spec.name, alias=alias, datatype=datatype)
            metric.timestamp = current.ts if current is not None else now_ms
            if spec.unit:
                _add_property(metric, ENG_UNIT, pb.String, spec.unit)
            _fill(metric, datatype, known.get(spec.name), None)
        return Outgoing(self._topic("NBIRTH"), payload.SerializeToString(), 0, False)

    def ndata(
        self, readings: Iterable[Reading], now_ms: int, *, historical: bool = False
    ) -> Outgoing:
        """NDATA: node metrics born in the NBIRTH, by alias; DialectError for any other."""
        if self._seq is None:
            raise DialectError("no NBIRTH in this session yet: publish one first")
        payload = pb.Payload(timestamp=now_ms)
        for reading in readings:
            for name, value in reading.values.items():
                known = self._node_aliases.get(name)
                if known is None:
                    raise DialectError(f"node metric {name} was not in the NBIRTH")
                alias, datatype = known
                field_name, wire = value_field(datatype, value)
                metric = payload.metrics.add(alias=alias, datatype=datatype, timestamp=reading.ts)
                setattr(metric, field_name, wire)
                if historical:
                    metric.is_historical = True
        payload.seq = self._next_seq()
        return Outgoing(self._topic("NDATA"), payload.SerializeToString(), 0, False)

    def node_tags(self) -> Mapping[str, int]:
        """Node metric name -> datatype, as born."""
        return {n: kind for n, (_, kind) in self._node_aliases.items()}

    # -- devices ------------------------------------------------------------
    def dbirth(
        self,
        device_id: str,
        tags: Sequence[TagSpec],
        now_ms: int,
        current: Reading | None = None,
        edge_seq: int = 0,
    ) -> Outgoing:
        """DBIRTH: every tag the device will report, with alias, datatype, unit, value or null."""
        device = self._devices.setdefault(device_id, _Device())
        payload = self._payload(now_ms)
        values = current.values if current else {}
        errors = current.errors if current else {}
        for spec in [TagSpec(EDGE_SEQ, "UInt64"), *tags]:
            value: Value | None = edge_seq if spec.name == EDGE_SEQ else values.get(spec.name)
            known = device.tags.get(spec.name)
            if known is not None and spec.datatype is None:
                alias, datatype = known  # reborn: keeps the type of its first birth
            else:
                alias, datatype = self._alias(
                    device.tags, spec.name, datatype_of(spec.datatype, value)
                )
            metric = payload.metrics.add(name=spec.name, alias=alias, datatype=datatype)
            metric.timestamp = current.ts if current and spec.name != EDGE_SEQ else now_ms
            if spec.unit:
                _add_property(metric, ENG_UNIT, pb.String, spec.unit)
            _fill(metric, datatype, value, errors.get(spec.name))
        device.born = True
        return self._out("DBIRTH", device_id, payload)

    def ddata(
        self, device_id: str, readings: Iterable[Reading], now_ms: int, edge_seq: int,
        *, historical: bool = False,
    ) -> Outgoing:  # fmt: skip
        """DDATA of one buffered batch: aliases only, ``edge/seq`` first, backlog marked.

        A value its tag cannot carry raises :class:`DialectError` and leaves the
        session as it was: the seq is taken only once every metric is built.
        The common metrics are written by :class:`~agent.north.sparkplug.wire.DdataWriter`;
        the message is the one :meth:`ddata_pb` builds.
        """
        device = self._born(device_id)
        if self._seq is None:
            raise DialectError("no NBIRTH in this session yet: publish one first")
        if type(now_ms) is not int or not 0 <= now_ms <= U64:
            return self.ddata_pb(device_id, readings, now_ms, edge_seq, historical=historical)
        if device.writer is None:
            device.writer = DdataWriter(device.tags)
        alias, datatype = device.tags[EDGE_SEQ]
        metric = pb.Payload.Metric(alias=alias, datatype=datatype, timestamp=now_ms)
        set_value(metric, datatype, edge_seq)
        body = metric.SerializeToString()
        parts = [b"\x08" + varint(now_ms), b"\x12" + varint(len(body)) + body]
        device.writer.metrics(device_id, readings, historical, _slow_metric(historical), parts)
        parts.append(b"\x18" + varint(self._next_seq()))
        return Outgoing(self._topic("DDATA", device_id), b"".join(parts), 0, False)

    def ddata_pb(
        self, device_id: str, readings: Iterable[Reading], now_ms: int, edge_seq: int,
        *, historical: bool = False,
    ) -> Outgoing:  # fmt: skip
        """:meth:`ddata` built wholly by the protobuf runtime: its reference, same message."""
        device = self._born(device_id)
        if self._seq is None:
            raise DialectError("no NBIRTH in this session yet: publish one first")
        payload = pb.Payload(timestamp=now_ms)
        alias, datatype = device.tags[EDGE_SEQ]
        metric = payload.metrics.add(alias=alias, datatype=datatype, timestamp=now_ms)
        set_value(metric, datatype, edge_seq)
        add, tags = payload.metrics.add, device.tags
        for reading in readings:
            ts, values, errors = reading.ts, reading.values, reading.errors
            for name in [*values, *errors] if errors else values:
                known = tags.get(name)
                if known is None:
                    raise DialectError(f"device {device_id}: tag {name} was not in its DBIRTH")
                alias, datatype = known
                value = values.get(name)
                if value is not None and (not errors or name not in errors):
                    field_name, wire = value_field(datatype, value)  # refused before it is added
                    metric = add(alias=alias, datatype=datatype, timestamp=ts)
                    setattr(metric, field_name, wire)
                else:
                    metric = add(alias=alias, datatype=datatype, timestamp=ts)
                    _fill(metric, datatype, value, errors.get(name))
                if historical:
                    metric.is_historical = True
        payload.seq = self._next_seq()
        return self._out("DDATA", device_id, payload)

    def ddeath(self, device_id: str, now_ms: int) -> Outgoing:
        """DDEATH: the device is gone until its next DBIRTH (its aliases stay reserved)."""
        self._born(device_id).born = False
        return self._out("DDEATH", device_id, self._payload(now_ms))

    def is_born(self, device_id: str) -> bool:
        """True between a DBIRTH of this device and its DDEATH or the next NBIRTH."""
        device = self._devices.get(device_id)
        return bool(device and device.born)

    def born_tags(self, device_id: str) -> Mapping[str, int]:
        """Tag name -> datatype of every tag ``device_id`` was born with (empty if never)."""
        device = self._devices.get(device_id)
        return {} if device is None else {n: kind for n, (_, kind) in device.tags.items()}

    def parse_ncmd(self, data: bytes) -> Command:
        """An NCMD for this node, its aliases resolved against the NBIRTH's."""
        names = {alias: name for name, (alias, _) in self._node_aliases.items()}
        return parse_command(data, names)

    def birth_mark(self, device_id: str) -> tuple[int | None, bool]:
        """What :meth:`unbirth` restores: the session's seq and whether the device is born."""
        device = self._devices.get(device_id)
        return self._seq, device is not None and device.born

    def unbirth(self, device_id: str, mark: tuple[int | None, bool]) -> None:
        """Take back a DBIRTH built but not sent (too large): its seq and its device's state.

        The aliases it gave new tags stay reserved: nobody has seen them.
        """
        self._seq = mark[0]
        device = self._devices.get(device_id)
        if device is not None:
            device.born = mark[1]

    # -- helpers ------------------------------------------------------------
    def _topic(self, kind: str, device_id: str | None = None) -> str:
        key = (kind, device_id)
        found = self._topics.get(key)
        if found is None:  # checked once per message type and device
            found = self._topics[key] = topic(self.group_id, kind, self.edge_node_id, device_id)
        return found

    def _out(self, kind: str, device_id: str, payload: pb.Payload) -> Outgoing:
        return Outgoing(self._topic(kind, device_id), payload.SerializeToString(), 0, False)

    def _payload(self, now_ms: int) -> pb.Payload:
        return pb.Payload(timestamp=now_ms, seq=self._next_seq())

    def _next_seq(self) -> int:
        if self._seq is None:
            raise DialectError("no NBIRTH in this session yet: publish one first")
        self._seq = (self._seq + 1) % 256
        return self._seq

    def _born(self, device_id: str) -> _Device:
        device = self._devices.get(device_id)
        if device is None or not device.born:
            raise DialectError(f"device {device_id} has no DBIRTH in this session")
        return device

    def _bd_seq_metric(self, now_ms: int) -> pb.Payload.Metric:
        if self.bd_seq is None:
            raise DialectError("no Will yet: call will() for the CONNECT first")
        return pb.Payload.Metric(
            name=BD_SEQ, datatype=pb.Int64, long_value=self.bd_seq, timestamp=now_ms
        )

    def _alias(
        self, table: dict[str, tuple[int, int]], name: str, datatype: int
    ) -> tuple[int, int]:
        # A tag keeps its first alias and datatype for the session: a host
        # that cached them from an earlier birth is never misled.
        if name not in table:
            table[name] = (self._next_alias, datatype)
            self._next_alias += 1
        return table[name]


def _fill(metric: pb.Payload.Metric, datatype: int, value: Value | None, error: str | None) -> None:
    if error is not None or value is None:
        metric.is_null = True
        if error is not None:
            _add_property(metric, QUALITY, pb.Int32, QUALITY_BAD)
            _add_property(metric, ERROR_TEXT, pb.String, error)
        return
    set_value(metric, datatype, value)


def _slow_metric(historical: bool) -> Slow:
    """One DDATA metric by the protobuf runtime, checked and filled as ``ddata_pb`` does."""

    def build(alias: int, datatype: int, ts: int, value: Value | None, error: str | None) -> bytes:
        if value is not None and error is None:
            field_name, wire = value_field(datatype, value)  # refused before it is built
            metric = pb.Payload.Metric(alias=alias, datatype=datatype, timestamp=ts)
            setattr(metric, field_name, wire)
        else:
            metric = pb.Payload.Metric(alias=alias, datatype=datatype, timestamp=ts)
            _fill(metric, datatype, value, error)
        if historical:
            metric.is_historical = True
        return metric.SerializeToString()

    return build


def _add_property(metric: pb.Payload.Metric, key: str, datatype: int, value: Value) -> None:
    metric.properties.keys.append(key)
    prop = metric.properties.values.add(type=datatype)
    if datatype == pb.Int32:
        assert isinstance(value, int)
        prop.int_value = value & 0xFFFFFFFF
    else:
        prop.string_value = str(value)


def parse_command(data: bytes, aliases: Mapping[int, str] | None = None) -> Command:
    """Decode an NCMD/DCMD payload; ``Node Control/Rebirth`` = true asks for a rebirth."""
    payload = pb.Payload()
    try:
        payload.ParseFromString(data)
    except Exception as exc:  # protobuf's DecodeError, and ValueError from bad wire data
        raise DialectError(f"not a Sparkplug B payload: {exc}") from exc
    writes: dict[str, Value | None] = {}
    for metric in payload.metrics:
        name = metric.name or (aliases or {}).get(metric.alias)
        if name is None:
            raise DialectError(f"command metric with unknown alias {metric.alias}")
        writes[name] = get_value(metric)
    rebirth = writes.pop(REBIRTH, None) is True
    return Command(rebirth=rebirth, writes=writes)
