"""Pure: a value as the OPC UA library decoded it -> our engineering value.

Kept apart from ``driver.py`` so coercion and scaling are table-tested without
a server. Objects the library hands over are duck-typed (a LocalizedText is
anything with a ``Text`` attribute), so this module imports no protocol code.
"""

from __future__ import annotations

import datetime as dt
import enum
import math
from typing import Any

from drivers.base import Value, not_finite, plausible_ms
from drivers.opcua.config import OpcuaTag


class ValueProblem(ValueError):
    """The server's value cannot become this tag's value; the message is the reading error."""


def native(raw: Any) -> Value:
    """The library's value as bool/int/float/str, without the tag's type or scaling."""
    if isinstance(raw, bool | str):
        return raw
    if isinstance(raw, enum.Enum):
        return int(raw.value) if isinstance(raw.value, int) else str(raw.name)
    if isinstance(raw, int | float):
        return raw
    if isinstance(raw, dt.datetime):
        stamp = raw if raw.tzinfo else raw.replace(tzinfo=dt.UTC)
        return stamp.isoformat()
    if isinstance(raw, bytes | bytearray):
        return bytes(raw).hex()
    text = getattr(raw, "Text", None)
    if isinstance(text, str) or (text is None and hasattr(raw, "Locale")):
        return text or ""
    if raw is None:
        raise ValueProblem("no value")
    if isinstance(raw, list | tuple):
        raise ValueProblem("arrays are not supported")
    raise ValueProblem(f"unsupported value type {type(raw).__name__}")


def stamp_ms(source: dt.datetime | None, server: dt.datetime | None, now: int) -> int:
    """A value's ``ts``: its source timestamp, else the server's, else ``now`` (epoch ms).

    A timestamp that cannot be a real time counts as none: DateTime.MinValue
    (0001-01-01, or 1601-01-01 when the wire says FILETIME 0), MaxValue, or
    anything before this version's release (a PLC whose clock was never set).
    """
    for stamp in (source, server):
        ms = _epoch_ms(stamp)
        if ms is not None and plausible_ms(ms):
            return ms
    return now


def _epoch_ms(stamp: dt.datetime | None) -> int | None:
    if stamp is None:
        return None
    aware = stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.UTC)
    try:
        return int(aware.timestamp() * 1000)
    except (OverflowError, OSError, ValueError):  # year 1 or 9999 on some platforms
        return None


def coerce(raw: Any, tag: OpcuaTag) -> Value:
    """Convert to the tag's ``type`` (when set), then apply ``scale``/``offset`` to numbers."""
    value = native(raw)
    if isinstance(value, float) and not math.isfinite(value) and tag.type != "int":
        raise ValueProblem(not_finite(value))
    if tag.type is not None:
        value = _to_type(value, tag.type)
    if tag.scale == 1.0 and tag.offset == 0.0:
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueProblem(f"cannot scale a {type(value).__name__} value")
    scaled = value * tag.scale + tag.offset
    if tag.type == "int":
        return round(scaled)
    return float(scaled)


def _to_type(value: Value, kind: str) -> Value:
    if kind == "string":
        return value if isinstance(value, str) else str(value)
    if kind == "bool":
        return _to_bool(value)
    number = _to_number(value)
    if kind == "float":
        return float(number)
    if isinstance(number, float):
        if not math.isfinite(number):
            raise ValueProblem(f"{number} is not an int")
        return round(number)
    return number


def _to_bool(value: Value) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    lowered = value.strip().lower()
    if lowered not in _BOOL_WORDS:
        raise ValueProblem(f"{value!r} is not a bool")
    return _BOOL_WORDS[lowered]


_BOOL_WORDS = {"true": True, "1": True, "on": True, "false": False, "0": False, "off": False}


def _to_number(value: Value) -> int | float:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float):
        return value
    try:
        return int(value)
    except ValueError:
        pass
    try:
        return float(value)
    except ValueError:
        raise ValueProblem(f"{value!r} is not a number") from None
