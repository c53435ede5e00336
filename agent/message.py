"""The default MQTT message: one buffered batch of one device, as compact JSON.

::

    {"v":1,"agent":"line-a-box-1","device":"motor-01","seq":42,
     "readings":[{"ts":1764270000123,"values":{"speed_rpm":1480},"errors":{"temp_c":"timeout"}}]}

A machine's facts (state intervals, alarms, counts, counter gaps, shift
summaries) and the box's own events travel in an *events message* of the
same envelope (:func:`encode_event_parts`)::

    {"kind":"events","v":1,"agent":"line-a-box-1","source":"press-01","seq":43,
     "events":[{"type":"state","id":"press-01/state/1764270000000","ts":1764270000000,...}]}

``source`` is a machine named in the site's ``analytics:`` block, or
:data:`BOX_SOURCE` for the box itself; docs/EVENTS.md lists every event type
and its fields. :func:`is_events` tells the two kinds apart by their first
bytes.

``errors`` is left out of a reading when it is empty; ``clock`` (``"unset"`` or
``"unsynced"``) is written only on a reading taken while the agent's clock could
not be trusted (``agent/clock.py``). A NaN or infinite float is never a value:
JSON has no such number, and orjson would write ``null``. ``seq`` is assigned by the
buffer when the batch is committed, so the buffer encodes a batch in two parts
(:func:`encode_parts`) before it knows the seq and splices the number in at
commit time; :func:`encode_message` is built on the same parts, so the two can
never disagree.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from drivers.base import Reading, not_finite

VERSION = 1
"""The message format version, the ``v`` field."""

_SEQ_KEY = b',"seq":'
_EVENTS_PREFIX = b'{"kind":"events",'
BOX_SOURCE = "_box"
"""The events source of the box itself (clock): not a valid device or machine id."""
EVENT_TYPES = ("state", "alarm", "count", "counter_gap", "clock", "shift")


def encode_parts(agent: str, device: str, readings: Sequence[Reading]) -> tuple[bytes, bytes]:
    """Encode a batch without its seq: ``head + str(seq).encode() + tail`` is the message.

    Raise :class:`ValueError` when a reading holds something JSON cannot carry
    (a non-string key, an integer above 64 bits, a NaN or infinite float...).
    """
    try:
        head = orjson.dumps({"v": VERSION, "agent": agent, "device": device})
        body = orjson.dumps([_reading_dict(r) for r in readings])
    except orjson.JSONEncodeError as exc:
        raise ValueError(f"device {device}: readings cannot be encoded as JSON: {exc}") from exc
    # orjson writes NaN and infinity as null, and values never hold None: only
    # a body with a null in it (rare: a tag or text named "null") is scanned.
    if b"null" in body:
        _refuse_non_finite(device, readings)
    # head ends with "}": reopen the object to append seq, then the readings.
    return head[:-1] + _SEQ_KEY, b',"readings":' + body + b"}"


def encode_event_parts(
    agent: str, source: str, events: Sequence[Mapping[str, Any]]
) -> tuple[bytes, bytes]:
    """Encode an events message without its seq (see :func:`encode_parts`).

    Raise :class:`ValueError` when an event cannot be encoded as JSON or has no
    known ``type``, integer ``ts`` and string ``id``.
    """
    for event in events:
        _check_event(source, event)
    try:
        head = orjson.dumps({"kind": "events", "v": VERSION, "agent": agent, "source": source})
        body = orjson.dumps(list(events))
    except orjson.JSONEncodeError as exc:
        raise ValueError(f"events of {source}: cannot be encoded as JSON: {exc}") from exc
    if b"null" in body:
        _refuse_non_finite_events(source, events)
    return head[:-1] + _SEQ_KEY, b',"events":' + body + b"}"


def is_events(payload: bytes) -> bool:
    """True for an events message (:func:`encode_event_parts`), False for readings."""
    return payload.startswith(_EVENTS_PREFIX)


def decode_events(data: bytes) -> dict[str, Any]:
    """Parse and check an events message; :class:`ValueError` says what is wrong."""
    try:
        message = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"message is not valid JSON: {exc}") from exc
    if not isinstance(message, dict) or message.get("kind") != "events":
        raise ValueError('not an events message (no "kind": "events")')
    if message.get("v") != VERSION:
        raise ValueError(f"unsupported message version v={message.get('v')!r}, expected {VERSION}")
    for key, kind in (("agent", str), ("source", str), ("seq", int), ("events", list)):
        if not isinstance(message.get(key), kind) or isinstance(message.get(key), bool):
            raise ValueError(f"message field {key!r} must be a {kind.__name__}")
    for event in message["events"]:
        _check_event(message["source"], event)
    return message


def _check_event(source: str, event: Any) -> None:
    if not isinstance(event, Mapping):
        raise ValueError(f"events of {source}: an event must be an object, got {event!r}")
    if event.get("type") not in EVENT_TYPES:
        raise ValueError(f"events of {source}: unknown event type {event.get('type')!r}")
    ts = event.get("ts")
    if not isinstance(ts, int) or isinstance(ts, bool):
        raise ValueError(f"events of {source}: event ts must be an integer (epoch ms)")
    if not isinstance(event.get("id"), str):
        raise ValueError(f"events of {source}: event id must be a string")


def _refuse_non_finite_events(source: str, events: Sequence[Mapping[str, Any]]) -> None:
    def walk(value: Any) -> None:
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"events of {source}: {not_finite(value)}")
        if isinstance(value, Mapping):
            for v in value.values():
                walk(v)
        elif isinstance(value, list | tuple):
            for v in value:
                walk(v)

    for event in events:
        walk(event)


def encode_message(agent: str, device: str, seq: int, readings: Sequence[Reading]) -> bytes:
    """Encode one batch as the compact JSON message published over MQTT."""
    head, tail = encode_parts(agent, device, readings)
    return splice_seq(head, seq, tail)


def splice_seq(head: bytes, seq: int, tail: bytes) -> bytes:
    """Join the two parts from :func:`encode_parts` around ``seq``."""
    return b"%s%d%s" % (head, seq, tail)


def _reading_dict(reading: Reading) -> dict[str, Any]:
    out: dict[str, Any] = {"ts": reading.ts, "values": reading.values}
    if reading.errors:
        out["errors"] = reading.errors
    if reading.clock is not None:
        out["clock"] = reading.clock
    return out


def _refuse_non_finite(device: str, readings: Sequence[Reading]) -> None:
    for reading in readings:
        for name, value in reading.values.items():
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"device {device}: tag {name}: {not_finite(value)}")


def decode_message(data: bytes) -> dict[str, Any]:
    """Parse and check a message made by :func:`encode_message` (for tests and tools).

    Raise :class:`ValueError` naming what is wrong: not JSON, not an object, an
    unknown version ``v``, or a missing or mistyped field.
    """
    try:
        message = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"message is not valid JSON: {exc}") from exc
    if not isinstance(message, dict):
        raise ValueError(f"message must be a JSON object, got {type(message).__name__}")
    if message.get("v") != VERSION:
        raise ValueError(f"unsupported message version v={message.get('v')!r}, expected {VERSION}")
    for key, kind in (("agent", str), ("device", str), ("seq", int), ("readings", list)):
        if not isinstance(message.get(key), kind) or isinstance(message.get(key), bool):
            raise ValueError(f"message field {key!r} must be a {kind.__name__}")
    for index, reading in enumerate(message["readings"]):
        _check_reading(index, reading)
    return message


def _check_reading(index: int, reading: Any) -> None:
    where = f"message readings[{index}]"
    if not isinstance(reading, dict):
        raise ValueError(f"{where} must be an object")
    if not isinstance(reading.get("ts"), int) or isinstance(reading.get("ts"), bool):
        raise ValueError(f"{where}.ts must be an integer (epoch milliseconds)")
    if not isinstance(reading.get("values"), dict):
        raise ValueError(f"{where}.values must be an object")
    if not isinstance(reading.get("errors", {}), dict):
        raise ValueError(f"{where}.errors must be an object")
    if not isinstance(reading.get("clock", ""), str):
        raise ValueError(f"{where}.clock must be a string")


UNENCODABLE = "value cannot be encoded"
"""The tag error of a value the message format refuses (an integer above 64 bits...).

A NaN or infinite float gets :func:`drivers.base.not_finite` instead
(``not a number (nan)``), the text every driver uses for it.
"""


def encodable(reading: Reading) -> Reading:
    """``reading`` with every value the message format refuses moved to ``errors``.

    Called before a reading is put into the buffer, so that a batch committed
    is a batch that can be sent: one bad value becomes one tag error, never a
    batch the publisher cannot encode.
    """
    if _fits(reading):
        return reading
    values = {n: v for n, v in reading.values.items() if _fits(Reading(0, {n: v}))}
    errors = {
        n: e if _fits(Reading(0, {}, {n: e})) else UNENCODABLE for n, e in reading.errors.items()
    }
    for name in reading.values.keys() - values.keys():
        errors[name] = _refusal(reading.values[name])
    return Reading(reading.ts, values, errors, reading.clock)


def _refusal(value: object) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return not_finite(value)
    return UNENCODABLE


def _fits(reading: Reading) -> bool:
    try:
        encode_parts("", "", [reading])
    except ValueError:
        return False
    return True
