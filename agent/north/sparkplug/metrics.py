"""Sparkplug B metric values: our Python values <-> a typed ``Payload.Metric``.

Our tags hold ``bool | int | float | str`` (:data:`drivers.base.Value`). A tag
either declares a Sparkplug datatype (``Int16``, ``Float``...) or takes the
default for its Python type: bool -> Boolean, int -> Int64, float -> Double,
str -> String. The datatype fixes which field of the value ``oneof`` carries
the value:

- Int8/16/32 and UInt8/16/32 -> ``int_value`` (uint32). Negative signed
  values travel as their two's complement in 32 bits (Int16 -87 becomes
  0xFFFFFFA9), as Tahu's decoders read them back.
- Int64, UInt64, DateTime -> ``long_value`` (uint64), negatives as 64-bit two's
  complement.
- Float -> ``float_value``, Double -> ``double_value``, Boolean ->
  ``boolean_value``, String/Text/UUID -> ``string_value``.

A value that does not fit its declared width is refused (:class:`DialectError`),
never truncated: a wrapped number would be a wrong reading that looks right.
"""

from __future__ import annotations

import math

from agent.errors import DialectError
from agent.north.sparkplug import sparkplug_b_pb2 as pb
from drivers.base import Value

Metric = pb.Payload.Metric

INT_RANGES: dict[int, tuple[int, int]] = {
    pb.Int8: (-(2**7), 2**7 - 1),
    pb.Int16: (-(2**15), 2**15 - 1),
    pb.Int32: (-(2**31), 2**31 - 1),
    pb.Int64: (-(2**63), 2**63 - 1),
    pb.UInt8: (0, 2**8 - 1),
    pb.UInt16: (0, 2**16 - 1),
    pb.UInt32: (0, 2**32 - 1),
    pb.UInt64: (0, 2**64 - 1),
    pb.DateTime: (0, 2**63 - 1),
}
"""The integer datatypes and the values each can carry."""
_IN_INT_VALUE = frozenset({pb.Int8, pb.Int16, pb.Int32, pb.UInt8, pb.UInt16, pb.UInt32})
_STRINGS = frozenset({pb.String, pb.Text, pb.UUID})
SCALARS = frozenset(INT_RANGES) | _STRINGS | {pb.Float, pb.Double, pb.Boolean}
"""The datatypes a tag may declare (no arrays, datasets or templates)."""


def datatype_of(name: str | None, value: Value | None) -> int:
    """The datatype number for a tag: its declared ``name``, else from ``value``'s type."""
    if name is not None:
        try:
            number = pb.DataType.Value(name)
        except ValueError:
            raise DialectError(f"unknown Sparkplug datatype {name!r}") from None
        if number not in SCALARS:
            raise DialectError(f"Sparkplug datatype {name} is not a scalar the agent can send")
        return number
    if isinstance(value, bool):
        return pb.Boolean
    if isinstance(value, int):
        return pb.Int64
    if isinstance(value, float):
        return pb.Double
    if isinstance(value, str):
        return pb.String
    raise DialectError("a tag without a value needs a declared Sparkplug datatype")


def set_value(metric: Metric, datatype: int, value: Value) -> None:
    """Put ``value`` into the ``oneof`` field that ``datatype`` uses."""
    name, wire = value_field(datatype, value)
    setattr(metric, name, wire)


_INT_FIELDS: dict[int, tuple[int, int, str, int]] = {
    kind: (low, high, "int_value", 0xFFFFFFFF)
    if kind in _IN_INT_VALUE
    else (low, high, "long_value", 0xFFFFFFFFFFFFFFFF)
    for kind, (low, high) in INT_RANGES.items()
}
INT_FIELDS = _INT_FIELDS
"""Integer datatype -> (low, high, its ``oneof`` field, the two's complement mask)."""


def value_field(datatype: int, value: Value) -> tuple[str, Value]:
    """The ``oneof`` field ``datatype`` uses and what goes in it; refused as :func:`set_value`.

    Checks without touching a metric, so a value can be tried before one is
    built. An ``int`` in range of an integer datatype (the common case) is
    answered first; everything else takes the full checks.
    """
    fast = _INT_FIELDS.get(datatype)
    if fast is not None and type(value) is int:
        low, high, name, mask = fast
        if low <= value <= high:
            return name, value & mask
    return _checked_field(datatype, value)


def _checked_field(datatype: int, value: Value) -> tuple[str, Value]:
    if datatype == pb.Boolean:
        if not isinstance(value, bool):
            raise DialectError(f"{value!r} is not a Boolean")
        return "boolean_value", value
    if datatype in INT_RANGES:
        scratch = Metric()
        metric_int(scratch, datatype, value)
        name = str(scratch.WhichOneof("value"))
        wire: int = getattr(scratch, name)
        return name, wire
    if datatype in (pb.Float, pb.Double):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise DialectError(f"{value!r} is not a number")
        if not math.isfinite(value):
            raise DialectError(f"{value!r} is not a finite number")
        return ("float_value" if datatype == pb.Float else "double_value"), float(value)
    if datatype in _STRINGS:
        if not isinstance(value, str):
            raise DialectError(f"{value!r} is not a string")
        return "string_value", value
    raise DialectError(f"datatype {datatype} is not a scalar the agent can send")


def metric_int(metric: Metric, datatype: int, value: Value) -> None:
    """An integer in its width, two's complement into the 32- or 64-bit field."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise DialectError(f"{value!r} is not an integer")
    low, high = INT_RANGES[datatype]
    if not low <= value <= high:
        name = pb.DataType.Name(datatype)
        raise DialectError(f"{value} does not fit {name} ({low}..{high})")
    if datatype in _IN_INT_VALUE:
        metric.int_value = value & 0xFFFFFFFF
    else:
        metric.long_value = value & 0xFFFFFFFFFFFFFFFF


def get_value(metric: Metric) -> Value | None:
    """The value a metric carries, signed back to its width; None when it is null."""
    if metric.is_null or metric.WhichOneof("value") is None:
        return None
    datatype = metric.datatype
    if datatype in INT_RANGES:
        raw = metric.int_value if datatype in _IN_INT_VALUE else metric.long_value
        low, high = INT_RANGES[datatype]
        bits = (high - low).bit_length()
        raw &= (1 << bits) - 1
        return raw - (1 << bits) if low < 0 and raw > high else raw
    field = metric.WhichOneof("value")
    value = getattr(metric, str(field))
    if isinstance(value, bool | int | float | str):
        return value
    raise DialectError(f"metric {metric.name or metric.alias}: a {field} is not a scalar")
