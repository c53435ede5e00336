"""Sparkplug B DDATA bytes written directly, without the protobuf runtime, per metric.

A backlog drain builds one metric per value; through the protobuf runtime that
is most of the agent's time. :class:`DdataWriter` writes the protobuf wire
format of ``Payload`` itself (``sparkplug_b.proto``: timestamp = 1 varint,
metrics = 2 length-delimited, seq = 3 varint; in a Metric alias = 2,
timestamp = 3, datatype = 4, is_historical = 5, int_value = 10 and
long_value = 11 varints, float_value = 12 fixed32, double_value = 13 fixed64,
boolean_value = 14 varint, string_value = 15 length-delimited), in field
number order as the protobuf runtime does, so the bytes are the runtime's.

Written here: an ``int`` of an integer tag in its declared range (the same
range and two's complement as :func:`~agent.north.sparkplug.metrics.value_field`),
a finite ``float`` of a Float or Double tag, a ``bool`` of a Boolean tag, a
``str`` of a String/Text/UUID tag. Anything else (nulls, errors with their
properties, a value of another Python type, an out-of-range number, a
timestamp that is not a uint64) is built as before, by the protobuf runtime,
one metric, and refused there exactly as before.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Iterable

from agent.errors import DialectError
from agent.north.sparkplug import sparkplug_b_pb2 as pb
from agent.north.sparkplug.metrics import INT_FIELDS
from drivers.base import Reading, Value

U64 = 2**64 - 1
_SMALL = [bytes((n,)) for n in range(128)]
_HEAD = [b"\x12" + bytes((n,)) for n in range(128)]  # metrics (2), a body under 128 bytes
_FLOAT = struct.Struct("<f").pack
_DOUBLE = struct.Struct("<d").pack
_ISFINITE = math.isfinite

# How a tag's value is written; _OTHER goes through the protobuf runtime.
_INT, _FLOATK, _DOUBLEK, _BOOL, _STR, _OTHER = range(6)
_STRINGS = frozenset({pb.String, pb.Text, pb.UUID})

Slow = Callable[[int, int, int, "Value | None", "str | None"], bytes]
"""(alias, datatype, ts, value, error) -> a metric's serialised body, by the runtime."""

_Entry = tuple[bytes, bytes, int, int, int, int, int]
"""alias field, datatype (+ is_historical) and value tag, kind, low, high, mask, fixed length."""


_TABLE = 1 << 14
_TABLE_BYTES: list[bytes] = []


def _varints() -> list[bytes]:
    """The varints of 0 .. 2**14 - 1 (one or two bytes), made on first use."""
    if not _TABLE_BYTES:
        _TABLE_BYTES.extend(_SMALL)
        _TABLE_BYTES.extend(bytes(((n & 0x7F) | 0x80, n >> 7)) for n in range(128, _TABLE))
    return _TABLE_BYTES


def varint(n: int) -> bytes:
    """``n`` (0 <= n < 2**64, the caller's check) as a protobuf base-128 varint."""
    if n < 0x80:
        return _SMALL[n]
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _entry(alias: int, datatype: int, historical: bool) -> _Entry:
    """The bytes of a tag that never change in a session, and how its value is checked."""
    low = high = mask = 0
    if datatype in INT_FIELDS:
        low, high, name, mask = INT_FIELDS[datatype]
        kind, tag = _INT, (0x50 if name == "int_value" else 0x58)
    elif datatype == pb.Float:
        kind, tag = _FLOATK, 0x65
    elif datatype == pb.Double:
        kind, tag = _DOUBLEK, 0x69
    elif datatype == pb.Boolean:
        kind, tag = _BOOL, 0x70
    elif datatype in _STRINGS:
        kind, tag = _STR, 0x7A
    else:
        kind, tag = _OTHER, 0
    head = b"\x10" + varint(alias)
    rest = b"\x20" + varint(datatype) + (b"\x28\x01" if historical else b"") + bytes((tag,))
    return head, rest, kind, low, high, mask, len(head) + len(rest)


class DdataWriter:
    """One device's DDATA bytes; keeps each tag's constant bytes for the session.

    ``tags`` is the device's name -> (alias, datatype) table (aliases and
    datatypes never change once given, so what is derived from them is kept).
    """

    def __init__(self, tags: dict[str, tuple[int, int]]) -> None:
        self._tags = tags
        self._cache: tuple[dict[str, _Entry], dict[str, _Entry]] = ({}, {})  # live, historical

    def metrics(
        self, device_id: str, readings: Iterable[Reading], historical: bool, slow: Slow,
        parts: list[bytes],
    ) -> None:  # fmt: skip
        """Append the metrics fields (2) of ``readings`` to ``parts``, one per value, in order.

        A tag not in ``tags`` raises :class:`DialectError`; a value the runtime
        refuses raises what it raised before.
        """
        cache = self._cache[historical]
        # locals, not globals: this loop runs once per value
        small, heads, table, uvarint = _varints(), _HEAD, _TABLE, varint
        int_kind, double_kind, bool_kind = _INT, _DOUBLEK, _BOOL
        double, isfinite = _DOUBLE, _ISFINITE
        for reading in readings:
            ts, values = reading.ts, reading.values
            if reading.errors or type(ts) is not int or not 0 <= ts <= U64:
                self._mixed(device_id, reading, historical, slow, parts)
                continue
            stamp = b"\x18" + varint(ts)
            ls = len(stamp)
            for name, value in values.items():
                entry = cache.get(name)
                if entry is None:
                    entry = self._entry(device_id, name, historical)
                head, rest, kind, low, high, mask, fixed = entry
                if kind == int_kind and type(value) is int and low <= value <= high:
                    wire = value & mask
                    data = small[wire] if wire < table else uvarint(wire)
                elif kind == double_kind and type(value) is float and isfinite(value):
                    data = double(value)
                elif kind == bool_kind and type(value) is bool:
                    data = b"\x01" if value else b"\x00"
                else:
                    data = _other(kind, value)
                    if not data:
                        alias, datatype = self._tags[name]
                        body = slow(alias, datatype, ts, value, None)
                        parts += (b"\x12", varint(len(body)), body)
                        continue
                size = fixed + ls + len(data)
                parts += (heads[size] if size < 128 else b"\x12" + uvarint(size),
                          head, stamp, rest, data)  # fmt: skip

    def _mixed(
        self, device_id: str, reading: Reading, historical: bool, slow: Slow, parts: list[bytes]
    ) -> None:
        """A reading with errors (or an odd timestamp): metrics in ``ddata_pb``'s order."""
        cache = self._cache[historical]
        ts, values, errors = reading.ts, reading.values, reading.errors
        plain = type(ts) is int and 0 <= ts <= U64
        stamp = b"\x18" + varint(ts) if plain else b""
        for name in [*values, *errors] if errors else values:
            entry = cache.get(name)
            if entry is None:
                entry = self._entry(device_id, name, historical)
            head, rest, *_, fixed = entry
            value = values.get(name)
            error = errors.get(name)
            data = b""
            if plain and value is not None and error is None:
                data = _one(entry, value)
            if data:
                size = fixed + len(stamp) + len(data)
                parts += (b"\x12", varint(size), head, stamp, rest, data)
            else:
                alias, datatype = self._tags[name]
                body = slow(alias, datatype, ts, value, error)
                parts += (b"\x12", varint(len(body)), body)

    def _entry(self, device_id: str, name: str, historical: bool) -> _Entry:
        known = self._tags.get(name)
        if known is None:
            raise DialectError(f"device {device_id}: tag {name} was not in its DBIRTH")
        entry = self._cache[historical][name] = _entry(*known, historical)
        return entry


def _one(entry: _Entry, value: Value) -> bytes:
    """A value's bytes after its field tag; b"" where the runtime decides."""
    kind, low, high, mask = entry[2:6]
    if kind == _INT:
        if type(value) is int and low <= value <= high:
            return varint(value & mask)
        return b""
    if kind == _DOUBLEK:
        return _DOUBLE(value) if type(value) is float and _ISFINITE(value) else b""
    if kind == _BOOL:
        if type(value) is bool:
            return b"\x01" if value else b"\x00"
        return b""
    return _other(kind, value)


def _other(kind: int, value: Value) -> bytes:
    """A Float's or a string's bytes after its field tag; b"" where the runtime decides."""
    if kind == _FLOATK:
        if type(value) is float and _ISFINITE(value):
            try:
                return _FLOAT(value)
            except OverflowError:  # beyond float32: left to the runtime, as before
                return b""
    elif kind == _STR and type(value) is str:
        try:
            text = value.encode()
        except UnicodeEncodeError:  # a lone surrogate: the runtime's verdict
            return b""
        return varint(len(text)) + text
    return b""
