"""What does a message on the wire say, and did a counter skip? (pure: no MQTT here).

:class:`Decoder` turns one received payload of any dialect into a
:class:`Decoded`: a one-line summary, the full decode (JSON-able) and the
buffer seqs it carries. :class:`SeqTracker` follows two counters over the
decoded messages and reports each skip or repeat:

- the **buffer seq** of each batch, per (agent or Edge Node or gateway, device):
  edge-json ``seq``, the Sparkplug metric ``edge/seq`` in DDATA, the
  ``edge_seq`` key or property of the cloud dialects. A jump is a batch never
  delivered; a repeat is a batch sent again after a reconnect (the agent
  resends what it cannot prove delivered). The cloud dialects may spread one
  batch over several messages (one per reading or per property chunk), so
  there a repeat is a sample seen twice with the same content, not merely the
  same seq twice.
- the **Sparkplug seq** (0-255) of each Edge Node: every message of the node
  after NBIRTH counts one; a jump means messages lost (DDATA may be QoS 0).

DDATA carries aliases only: the names come from the NBIRTH/DBIRTH the decoder
saw. A listener that starts after the births shows ``alias 7 (no BIRTH seen)``
until the next birth. :mod:`agent.north.listen` is the subscriber that uses it.
"""

from __future__ import annotations

import base64
import dataclasses
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from agent.errors import DialectError
from agent.message import decode_events, decode_message, is_events
from agent.north.dialects.thingsboard import OWN_TELEMETRY
from agent.north.facts import event_values
from agent.north.options import MqttOptions
from agent.north.sparkplug import sparkplug_b_pb2 as pb
from agent.north.sparkplug.encode import (
    BD_SEQ,
    EDGE_SEQ,
    ENG_UNIT,
    ERROR_TEXT,
    NAMESPACE,
    QUALITY,
)
from agent.north.sparkplug.metrics import get_value

DIALECTS: Final = ("edge-json", "sparkplug-b", "thingsboard", "alink", "iotda", "auto")
"""What a listener accepts; ``auto`` guesses each message's dialect from its topic."""

SHOWN: Final = 6
"""Tags (or metrics) a summary names before it says how many more there are."""

# --------------------------------------------------------------------------- filters


def _filter_of(template: str) -> str:
    """A topic template (``edge/{agent}/{device}``) as a filter: each ``{...}`` level is ``+``."""
    return "/".join("+" if "{" in level else level for level in template.split("/"))


def _default_of(name: str) -> str:
    value = next(f.default for f in dataclasses.fields(MqttOptions) if f.name == name)
    assert isinstance(value, str)
    return value


_FILTERS: dict[str, tuple[str, ...]] = {
    "edge-json": (
        _filter_of(_default_of("topic")),
        _filter_of(_default_of("status_topic")),
        _filter_of(_default_of("events_topic")),
    ),
    "sparkplug-b": (f"{NAMESPACE}/#",),
    "thingsboard": ("v1/gateway/#", OWN_TELEMETRY),
    "alink": ("/sys/#",),
    "iotda": ("$oc/devices/#",),
    # '#' never matches a topic that starts with '$' (MQTT 3.1.1, 4.7.2): IoTDA's is asked apart
    "auto": ("#", "$oc/devices/#"),
}


def default_filters(dialect: str) -> tuple[str, ...]:
    """The topic filters a dialect publishes under, without the ones another one covers."""
    return minimal_filters(_FILTERS[dialect])


def covers(wide: str, narrow: str) -> bool:
    """True if every topic ``narrow`` matches is matched by ``wide`` too."""
    w, n = wide.split("/"), narrow.split("/")
    for i, level in enumerate(w):
        if level == "#":
            return not (i == 0 and n[0].startswith("$"))
        if i >= len(n) or (level != n[i] and (level != "+" or n[i] == "#")):
            return False
        if level == "+" and i == 0 and n[0].startswith("$"):
            return False
    return len(w) == len(n)


def minimal_filters(filters: Iterable[str]) -> tuple[str, ...]:
    """``filters`` less repeats and those another one covers (the first of equals is kept).

    A broker may deliver a message once per matching subscription; one filter
    per topic keeps the counters honest.
    """
    kept: list[str] = []
    for f in filters:
        if any(covers(g, f) for g in kept):
            continue
        kept = [g for g in kept if not covers(f, g)]
        kept.append(f)
    return tuple(kept)


def guess_dialect(topic: str) -> str:
    """The dialect whose topics ``topic`` looks like (edge-json for anything else)."""
    if topic.startswith(f"{NAMESPACE}/"):
        return "sparkplug-b"
    if topic.startswith("v1/gateway/") or topic == OWN_TELEMETRY:
        return "thingsboard"
    if topic.startswith("/sys/"):
        return "alink"
    if topic.startswith("$oc/devices/"):
        return "iotda"
    return "edge-json"


# --------------------------------------------------------------------------- decoding


@dataclass(frozen=True)
class Sample:
    """One buffer seq seen for a device; ``key`` tells samples of one batch apart.

    ``key`` is None where a message is a whole batch (edge-json, DDATA): the
    same seq again is a repeat. Otherwise it is the sample's content, and the
    same seq with another content is the same batch going on.
    """

    source: str
    device: str
    seq: int
    key: str | None = None


@dataclass(frozen=True)
class Decoded:
    """One message as the listener understood it."""

    dialect: str
    kind: str
    """edge-json ``data``/``status``; the Sparkplug type (``DDATA``...); ``telemetry``,
    ``pack.post``, ``report``... for the clouds; ``undecodable`` when nothing fits."""
    summary: str
    body: Any
    """The full decode, JSON-able (what ``--json`` prints)."""
    samples: tuple[Sample, ...] = ()
    node: str | None = None
    """Sparkplug ``group/edge_node`` of a node's own message (its seq counts)."""
    sp_seq: int | None = None
    bd_seq: int | None = None
    error: str | None = None


def show(value: Any, limit: int = 40) -> str:
    """A value as a line shows it: JSON-like (strings quoted, true/false), cut at ``limit``."""
    try:
        text = orjson.dumps(value).decode()
    except TypeError:
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _pairs(items: Sequence[tuple[str, Any]]) -> str:
    """``name=value ...`` for the first :data:`SHOWN` items, then how many more."""
    return _shown([(name, show(value)) for name, value in items])


def _shown(items: Sequence[tuple[str, str]]) -> str:
    text = [f"{name}={value}" for name, value in items[:SHOWN]]
    if len(items) > SHOWN:
        text.append(f"… (+{len(items) - SHOWN})")
    return " ".join(text)


def _json(payload: bytes) -> Any:
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None


def _raw(dialect: str, payload: bytes, why: str) -> Decoded:
    """A message none of the decoders understood: its size, its JSON keys if it is JSON."""
    body = _json(payload)
    if isinstance(body, dict):
        summary = f"{why}: JSON with {_pairs(list(body.items()))}"
        return Decoded(dialect, "undecodable", summary, body, error=why)
    preview = payload[:16].hex(" ")
    summary = f"{why}: {len(payload)} bytes {preview}{' …' if len(payload) > 16 else ''}"
    encoded = base64.b64encode(payload).decode()
    return Decoded(dialect, "undecodable", summary, {"base64": encoded}, error=why)


_DATATYPE_NAMES = {v: k for k, v in pb.DataType.items()}


class Decoder:
    """Turns payloads into :class:`Decoded`; never raises on what it is sent.

    Keeps, per Sparkplug Edge Node, the alias -> (name, datatype) tables of the
    births it saw: an NBIRTH starts the node's tables afresh, a DBIRTH its
    device's.
    """

    def __init__(self, dialect: str = "auto", seq_key: str = "edge_seq") -> None:
        if dialect not in DIALECTS:
            raise ValueError(f"unknown dialect {dialect!r} (one of {', '.join(DIALECTS)})")
        self.dialect = dialect
        self.seq_key = seq_key
        # (group/node, device or None) -> alias -> (name, datatype)
        self._aliases: dict[tuple[str, str | None], dict[int, tuple[str, int]]] = {}

    def decode(self, topic: str, payload: bytes) -> Decoded:
        """Decode one message received on ``topic``."""
        dialect = guess_dialect(topic) if self.dialect == "auto" else self.dialect
        decode = {
            "edge-json": self._edge_json,
            "sparkplug-b": self._sparkplug,
            "thingsboard": self._thingsboard,
            "alink": self._alink,
            "iotda": self._iotda,
        }[dialect]
        try:
            return decode(topic, payload)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            return _raw(dialect, payload, f"not a {dialect} message ({exc})")

    # -- edge-json -----------------------------------------------------------
    def _edge_json(self, topic: str, payload: bytes) -> Decoded:
        body = _json(payload)
        if isinstance(body, dict) and "state" in body and "readings" not in body:
            agent, state = body.get("agent"), body.get("state")
            return Decoded("edge-json", "status", f"status {agent}: {state}", body)
        if is_events(payload):
            return self._events(payload)
        try:
            message = decode_message(payload)
        except ValueError as exc:
            return _raw("edge-json", payload, f"not an edge-json message ({exc})")
        agent, device, seq = message["agent"], message["device"], message["seq"]
        readings = message["readings"]
        n = len(readings)
        parts = [f"{agent}/{device} seq={seq} {n} reading{'s' if n != 1 else ''}"]
        if readings:
            first = readings[0]
            items = [(name, show(value)) for name, value in first["values"].items()]
            items += [(name, f"ERROR({text})") for name, text in first.get("errors", {}).items()]
            if items:
                parts.append(_shown(items))
            if "clock" in first:
                parts.append(f"(clock {first['clock']})")
        sample = Sample(agent, device, seq)
        return Decoded("edge-json", "data", " ".join(parts), message, (sample,))

    def _events(self, payload: bytes) -> Decoded:
        """An events message: each event's type and the values it stands for."""
        try:
            message = decode_events(payload)
        except ValueError as exc:
            return _raw("edge-json", payload, f"not an events message ({exc})")
        agent, source, seq = message["agent"], message["source"], message["seq"]
        events = message["events"]
        n = len(events)
        parts = [f"{agent}/{source} seq={seq} {n} event{'s' if n != 1 else ''}:"]
        shown = []
        for event in events[:SHOWN]:
            try:
                values = event_values(event)
            except (KeyError, TypeError, ValueError):
                values = {}
            shown.append(f"{event['type']} {_pairs(list(values.items()))}".rstrip())
        if n > SHOWN:
            shown.append(f"… (+{n - SHOWN})")
        parts.append("; ".join(shown))
        sample = Sample(agent, source, seq)
        return Decoded("edge-json", "events", " ".join(parts), message, (sample,))

    # -- Sparkplug B ---------------------------------------------------------
    def _sparkplug(self, topic: str, payload: bytes) -> Decoded:
        levels = topic.split("/")
        if len(levels) == 3 and levels[:2] == [NAMESPACE, "STATE"]:
            body = _json(payload)
            online = body.get("online") if isinstance(body, dict) else None
            text = f"STATE {levels[2]}: online={show(online)}"
            return Decoded("sparkplug-b", "STATE", text, body)
        if levels[0] != NAMESPACE or len(levels) not in (4, 5):
            return _raw("sparkplug-b", payload, "not a Sparkplug B topic")
        message = pb.Payload()
        try:
            message.ParseFromString(payload)
        except Exception as exc:  # protobuf's DecodeError, or ValueError on bad wire data
            return _raw("sparkplug-b", payload, f"not a Sparkplug B payload ({exc})")
        group, kind, edge_node = levels[1:4]
        device = levels[4] if len(levels) == 5 else None
        node = f"{group}/{edge_node}"
        self._learn(node, device, kind, message)
        metrics = [self._metric(node, device, m) for m in message.metrics]
        seq = message.seq if message.HasField("seq") else None
        named = {m.body["name"]: m.body["value"] for m in metrics if m.body["name"]}
        bd_seq = _int_or_none(named.get(BD_SEQ)) if kind in ("NBIRTH", "NDEATH") else None
        head = [f"{kind} {node if device is None else f'{node}/{device}'}"]
        head += [f"seq={seq}"] if seq is not None else []
        head += [f"bdSeq={bd_seq}"] if bd_seq is not None else []
        head += ["historical"] if any(m.body["is_historical"] for m in metrics) else []
        shown = [(m.label, m.shown) for m in metrics if bd_seq is None or m.body["name"] != BD_SEQ]
        body = {
            "group": group, "type": kind, "edge_node": edge_node, "device": device,
            "timestamp": message.timestamp if message.HasField("timestamp") else None,
            "seq": seq, "metrics": [m.body for m in metrics],
        }  # fmt: skip
        edge_seq = _int_or_none(named.get(EDGE_SEQ))
        samples: tuple[Sample, ...] = ()
        if kind == "DDATA" and device is not None and edge_seq is not None:
            samples = (Sample(node, device, edge_seq),)
        return Decoded(
            "sparkplug-b", kind, " ".join([*head, _shown(shown)]).rstrip(), body, samples,
            # commands come from a host: they do not count in the node's seq
            node=None if kind in ("NCMD", "DCMD") else node, sp_seq=seq, bd_seq=bd_seq,
        )  # fmt: skip

    def _learn(self, node: str, device: str | None, kind: str, message: pb.Payload) -> None:
        """Take the aliases of a birth: an NBIRTH starts the whole node afresh."""
        if kind == "NBIRTH":
            for key in [k for k in self._aliases if k[0] == node]:
                del self._aliases[key]
        if kind not in ("NBIRTH", "DBIRTH"):
            return
        table = self._aliases[(node, device)] = {}
        for m in message.metrics:
            if m.HasField("name") and m.HasField("alias"):
                table[m.alias] = (m.name, m.datatype)

    def _metric(self, node: str, device: str | None, m: pb.Payload.Metric) -> _Metric:
        name: str | None = m.name if m.HasField("name") else None
        if name is None and m.HasField("alias"):
            # aliases are unique over the whole Edge Node: the device's, else the node's
            known = self._aliases.get((node, device), {}).get(m.alias)
            known = known or self._aliases.get((node, None), {}).get(m.alias)
            if known is not None:
                name = known[0]
                if not m.datatype:
                    m.datatype = known[1]
        value = _value(m)
        props = {k: _value(v) for k, v in zip(m.properties.keys, m.properties.values, strict=False)}
        shown = show(value)
        if m.is_null:
            why = props.get(ERROR_TEXT)
            quality = props.get(QUALITY)
            shown = f"null ({why})" if why else f"null (Quality {quality})" if quality else "null"
        if isinstance(props.get(ENG_UNIT), str):
            shown += f" {props[ENG_UNIT]}"
        body = {
            "name": name,
            "alias": m.alias if m.HasField("alias") else None,
            "datatype": _DATATYPE_NAMES.get(m.datatype, str(m.datatype)),
            "value": value,
            "timestamp": m.timestamp if m.HasField("timestamp") else None,
            "is_null": m.is_null,
            "is_historical": m.is_historical,
            "properties": props,
        }
        label = name if name is not None else f"alias {m.alias} (no BIRTH seen)"
        return _Metric(body, label, shown)

    # -- the clouds ----------------------------------------------------------
    def _seq_of(self, holder: Any) -> int | None:
        value = holder.get(self.seq_key) if isinstance(holder, dict) else None
        if isinstance(value, dict):  # Alink: {"value": 42, "time": ...}
            value = value.get("value")
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def _samples_line(self, where: str, entries: list[tuple[dict[str, Any], int | None]]) -> str:
        seqs = sorted({s for _, s in entries if s is not None})
        parts = [where]
        if len(entries) != 1:
            parts.append(f"{len(entries)} samples")
        if seqs:
            span = str(seqs[0]) if len(seqs) == 1 else f"{seqs[0]}..{seqs[-1]}"
            parts.append(f"{self.seq_key}={span}")
        first = {k: v for k, v in entries[0][0].items() if k != self.seq_key} if entries else {}
        if first:
            parts.append(_pairs(list(first.items())))
        return " ".join(parts)

    def _thingsboard(self, topic: str, payload: bytes) -> Decoded:
        body = orjson.loads(payload)
        kind = topic.removeprefix("v1/gateway/") or "gateway"
        if topic == OWN_TELEMETRY:  # the gateway's own: a list of samples (or one)
            body, kind = {"(gateway)": body}, "telemetry"
        if kind == "telemetry" and isinstance(body, dict):
            samples: list[Sample] = []
            lines = []
            for device, data in body.items():
                items = data if isinstance(data, list) else [data]
                entries = []
                for item in items:
                    values = item.get("values", item) if isinstance(item, dict) else {}
                    seq = self._seq_of(values)
                    if seq is not None:
                        samples.append(Sample("v1/gateway", device, seq, _key(item)))
                    entries.append((values, seq))
                lines.append(self._samples_line(device, entries))
            return Decoded(
                "thingsboard", kind, f"telemetry {'; '.join(lines)}", body, tuple(samples)
            )
        if kind in ("connect", "disconnect") and isinstance(body, dict):
            return Decoded("thingsboard", kind, f"{kind} {_pairs(list(body.items()))}", body)
        if isinstance(body, dict):
            text = "; ".join(
                f"{k}: {_pairs(list(v.items())) if isinstance(v, dict) else show(v)}"
                for k, v in body.items()
            )
            return Decoded("thingsboard", kind, f"{kind} {text}", body)
        return Decoded("thingsboard", kind, f"{kind} {show(body)}", body)

    def _alink(self, topic: str, payload: bytes) -> Decoded:
        body = orjson.loads(payload)
        if not isinstance(body, dict):
            raise ValueError("not a JSON object")
        levels = topic.split("/")
        gateway = "/".join(levels[2:4])
        msg_id = body.get("id")
        if topic.endswith("_reply"):
            text = f"reply id={msg_id} code={body.get('code')} {show(body.get('message', ''))}"
            return Decoded("alink", "reply", f"{gateway} {text}", body)
        method = str(body.get("method", "/".join(levels[4:])))
        sub_devices = (body.get("params") or {}).get("subDevices")
        if not isinstance(sub_devices, list):
            return Decoded("alink", method, f"{gateway} {method} id={msg_id}", body)
        samples = []
        lines = []
        params = body.get("params") or {}
        own = [("(gateway)", params)] if params.get("properties") or params.get("events") else []
        for sub in sub_devices:
            ident = sub.get("identity", {})
            own.append((f"{ident.get('productKey')}/{ident.get('deviceName')}", sub))
        for device, holder in own:
            props = holder.get("properties") or {}
            seq = self._seq_of(props)
            if seq is not None:
                samples.append(Sample(gateway, device, seq, _key(props)))
            values = {k: v.get("value") if isinstance(v, dict) else v for k, v in props.items()}
            line = self._samples_line(device, [(values, seq)])
            events = holder.get("events") or {}
            if isinstance(events, dict) and events:
                line += f" events: {', '.join(map(str, events))}"
            lines.append(line)
        text = f"{gateway} {method} id={msg_id} {'; '.join(lines)}"
        return Decoded("alink", method, text, body, tuple(samples))

    def _iotda(self, topic: str, payload: bytes) -> Decoded:
        body = orjson.loads(payload)
        if not isinstance(body, dict):
            raise ValueError("not a JSON object")
        levels = topic.split("/")
        gateway = levels[2] if len(levels) > 2 else "?"
        rest = "/".join(levels[3:])
        if isinstance(body.get("devices"), list):
            samples = []
            lines = []
            for dev in body["devices"]:
                device = str(dev.get("device_id"))
                entries = []
                for service in dev.get("services", []):
                    props = service.get("properties", {})
                    seq = self._seq_of(props)
                    if seq is not None:
                        samples.append(Sample(gateway, device, seq, _key(service)))
                    entries.append((props, seq))
                lines.append(self._samples_line(device, entries))
            return Decoded(
                "iotda", "report", f"{gateway} report {'; '.join(lines)}", body, tuple(samples)
            )
        services = body.get("services")
        if isinstance(services, list):
            kinds = ", ".join(str(s.get("event_type", s.get("service_id"))) for s in services)
            return Decoded("iotda", "event", f"{gateway} {rest}: {kinds}", body)
        return Decoded("iotda", rest, f"{gateway} {rest} {_pairs(list(body.items()))}", body)


@dataclass(frozen=True)
class _Metric:
    body: dict[str, Any]
    label: str
    shown: str


def _key(item: Any) -> str:
    return orjson.dumps(item, option=orjson.OPT_SORT_KEYS).decode()


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _value(holder: pb.Payload.Metric | pb.Payload.PropertyValue) -> Any:
    """A metric's or property's value, signed back to its width; a placeholder for the rest."""
    field_name = holder.WhichOneof("value")
    if field_name is None or holder.is_null:
        return None
    if isinstance(holder, pb.Payload.PropertyValue):
        if field_name not in ("int_value", "long_value", "float_value", "double_value",
                              "boolean_value", "string_value"):  # fmt: skip
            return f"<{field_name}>"
        metric = pb.Payload.Metric(datatype=holder.type)
        setattr(metric, field_name, getattr(holder, field_name))
        holder = metric
    try:
        return get_value(holder)
    except DialectError:
        value = getattr(holder, field_name)
        return value.hex() if isinstance(value, bytes) else f"<{field_name}>"


# --------------------------------------------------------------------------- counters

_REMEMBERED = 4096
"""Seqs remembered per device to tell a repeat from a late arrival (older ones look late)."""


@dataclass(frozen=True)
class SeqWarning:
    """A counter that skipped or repeated: ``kind`` is gap, duplicate, late or bdseq."""

    kind: str
    counter: str
    """``seq`` (the buffer seq) or ``sparkplug`` (the Edge Node's 0-255 seq)."""
    source: str
    device: str | None
    text: str
    missing: int = 0


@dataclass
class DeviceSeqs:
    """The buffer seqs of one device while listening."""

    first: int | None = None
    last: int | None = None
    """The highest seen."""
    samples: int = 0
    gaps: int = 0
    missing: int = 0
    duplicates: int = 0
    late: int = 0
    seen: OrderedDict[int, set[str | None]] = field(default_factory=OrderedDict, repr=False)


@dataclass
class NodeSeqs:
    """The Sparkplug seq of one Edge Node while listening."""

    last: int | None = None
    bd_seq: int | None = None
    messages: int = 0
    gaps: int = 0
    missing: int = 0
    duplicates: int = 0


class SeqTracker:
    """Follows both counters over the decoded messages; see the module docstring."""

    def __init__(self) -> None:
        self.devices: dict[tuple[str, str], DeviceSeqs] = {}
        self.nodes: dict[str, NodeSeqs] = {}

    def observe(self, decoded: Decoded) -> list[SeqWarning]:
        """The warnings this message raises, in order; updates the counters."""
        warnings = self._node(decoded) if decoded.node is not None else []
        for sample in decoded.samples:
            warning = self._sample(sample)
            if warning is not None:
                warnings.append(warning)
        return warnings

    def _sample(self, s: Sample) -> SeqWarning | None:
        d = self.devices.setdefault((s.source, s.device), DeviceSeqs())
        d.samples += 1
        warning = None
        seen = d.seen.get(s.seq)
        if d.last is None:
            d.first = d.last = s.seq
        elif seen is not None and s.key in seen:
            d.duplicates += 1
            again = "again" if s.key is None else "again, same content"
            warning = self._warn("duplicate", s, f"duplicate: seq {s.seq} {again}")
        elif s.seq > d.last:
            if s.seq > d.last + 1:
                lost = s.seq - d.last - 1
                span = str(d.last + 1) if lost == 1 else f"{d.last + 1}..{s.seq - 1}"
                d.gaps += 1
                d.missing += lost
                text = f"gap: seq {span} missing ({lost} batch{'es' if lost != 1 else ''})"
                warning = self._warn("gap", s, text, lost)
            d.last = s.seq
        elif s.seq < d.last and seen is None:
            d.late += 1
            if d.first is not None and s.seq > d.first:
                d.missing -= 1  # it was counted missing when the gap was seen
            warning = self._warn("late", s, f"late: seq {s.seq} arrived after seq {d.last}")
        d.first = s.seq if d.first is None else min(d.first, s.seq)
        d.seen.setdefault(s.seq, set()).add(s.key)
        d.seen.move_to_end(s.seq)
        while len(d.seen) > _REMEMBERED:
            d.seen.popitem(last=False)
        return warning

    @staticmethod
    def _warn(kind: str, s: Sample, text: str, missing: int = 0) -> SeqWarning:
        return SeqWarning(kind, "seq", s.source, s.device, text, missing)

    def _node(self, decoded: Decoded) -> list[SeqWarning]:
        assert decoded.node is not None
        node, kind, seq = decoded.node, decoded.kind, decoded.sp_seq
        n = self.nodes.setdefault(node, NodeSeqs())
        n.messages += 1
        text: str | None = None
        if kind == "NDEATH":
            if n.bd_seq is not None and decoded.bd_seq not in (None, n.bd_seq):
                return [self._spwarn("bdseq", node, (
                    f"NDEATH with bdSeq {decoded.bd_seq}, but the NBIRTH had {n.bd_seq}: "
                    "the Will of an older connection, the node is still alive"
                ))]  # fmt: skip
            n.last = None  # this session is over; the next one starts with an NBIRTH
        elif kind == "NBIRTH":
            n.bd_seq, n.last = decoded.bd_seq, seq
            text = None if seq == 0 else f"NBIRTH with seq {seq} (it must be 0)"
        elif seq is None:
            text = f"{kind} without a seq"
        else:
            return self._next_seq(n, node, seq)
        return [] if text is None else [self._spwarn("gap", node, text)]

    def _next_seq(self, n: NodeSeqs, node: str, seq: int) -> list[SeqWarning]:
        last, n.last = n.last, seq
        if last is None or seq == (last + 1) % 256:
            return []
        if seq == last:
            n.duplicates += 1
            return [self._spwarn("duplicate", node, f"duplicate: Sparkplug seq {seq} again")]
        lost = (seq - last - 1) % 256
        n.gaps += 1
        n.missing += lost
        text = f"gap: Sparkplug seq jumped from {last} to {seq} ({_count(lost, 'message')} missing)"
        return [self._spwarn("gap", node, text, lost)]

    @staticmethod
    def _spwarn(kind: str, node: str, text: str, missing: int = 0) -> SeqWarning:
        return SeqWarning(kind, "sparkplug", node, None, text, missing)


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"
