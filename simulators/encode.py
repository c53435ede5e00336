"""Engineering values -> Modbus register words, written from first principles.

This module is deliberately independent of the agent's decoder: the
simulators encode with their own code so that a byte-order bug in the driver
shows up as wrong values instead of cancelling out.

Byte orders name the bytes of the big-endian representation ``A B C D ...``
(A = most significant byte) as they appear on the wire:

* ``ABCD`` big-endian bytes in each register, most significant register first
  (the Modbus convention);
* ``BADC`` bytes swapped inside each register, most significant register first;
* ``CDAB`` big-endian bytes, least significant register first ("word swap");
* ``DCBA`` fully little-endian.

The same rule holds for 64-bit types (``ABCD`` = ``AB CD EF GH`` on the wire,
``CDAB`` = ``GH EF CD AB``...). For 16-bit types only the byte swap inside the
register applies: ``BADC`` and ``DCBA`` swap the two bytes, ``ABCD`` and
``CDAB`` leave them alone.
"""

from __future__ import annotations

import math
import struct
from typing import Final

BYTE_ORDERS: Final = ("ABCD", "BADC", "CDAB", "DCBA")

# type name -> (struct format of the big-endian representation, register count)
_FORMATS: Final[dict[str, tuple[str, int]]] = {
    "int16": (">h", 1),
    "uint16": (">H", 1),
    "int32": (">i", 2),
    "uint32": (">I", 2),
    "int64": (">q", 4),
    "uint64": (">Q", 4),
    "float32": (">f", 2),
    "float64": (">d", 4),
}

INTEGER_RANGES: Final[dict[str, tuple[int, int]]] = {
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint64": (0, 2**64 - 1),
}

FLOAT_TYPES: Final = frozenset({"float32", "float64"})
NUMERIC_TYPES: Final = frozenset(_FORMATS)


def register_count(type_name: str, length: int | None = None) -> int:
    """Number of 16-bit registers a value of ``type_name`` occupies.

    ``length`` is the register count of a ``string`` (two characters each).
    ``bool`` occupies one register when it lives in a register.
    """
    if type_name == "string":
        if not length or length < 1:
            raise ValueError("a string needs a length (in registers) of at least 1")
        return length
    if type_name == "bool":
        return 1
    try:
        return _FORMATS[type_name][1]
    except KeyError:
        raise ValueError(f"unknown type {type_name!r}") from None


def _check_order(byte_order: str) -> None:
    if byte_order not in BYTE_ORDERS:
        raise ValueError(f"unknown byte order {byte_order!r}; use one of {BYTE_ORDERS}")


def arrange(big_endian: bytes, byte_order: str) -> list[int]:
    """Split big-endian bytes into register words laid out in ``byte_order``."""
    _check_order(byte_order)
    if len(big_endian) % 2:
        raise ValueError("register data must have an even number of bytes")
    pairs = [big_endian[i : i + 2] for i in range(0, len(big_endian), 2)]
    if byte_order in ("CDAB", "DCBA") and len(pairs) > 1:
        pairs.reverse()
    if byte_order in ("BADC", "DCBA"):
        pairs = [pair[::-1] for pair in pairs]
    return [(pair[0] << 8) | pair[1] for pair in pairs]


def encode_number(raw: int | float, type_name: str, byte_order: str = "ABCD") -> list[int]:
    """Encode one raw (already unscaled) number as register words.

    Integers out of the type's range raise ``ValueError`` instead of wrapping:
    a simulator that silently wrapped would hide its own bugs.
    """
    if type_name not in _FORMATS:
        raise ValueError(f"{type_name!r} is not a numeric register type")
    fmt, _count = _FORMATS[type_name]
    if type_name in FLOAT_TYPES:
        packed = struct.pack(fmt, float(raw))
    else:
        if isinstance(raw, float):
            if not math.isfinite(raw) or raw != int(raw):
                raise ValueError(f"{raw!r} is not an integer for {type_name}")
            raw = int(raw)
        low, high = INTEGER_RANGES[type_name]
        if not low <= raw <= high:
            raise ValueError(f"{raw} is out of range for {type_name} ({low}..{high})")
        packed = struct.pack(fmt, raw)
    return arrange(packed, byte_order)


def encode_string(text: str, length: int, byte_order: str = "ABCD") -> list[int]:
    """Encode ASCII text into ``length`` registers, NUL-padded, two characters each.

    Only the byte swap inside a register applies to strings (``BADC``/``DCBA``);
    characters always run from the first register to the last.
    """
    _check_order(byte_order)
    data = text.encode("ascii")
    if len(data) > 2 * length:
        raise ValueError(f"{text!r} does not fit in {length} registers")
    data = data.ljust(2 * length, b"\0")
    swap = byte_order in ("BADC", "DCBA")
    words = []
    for i in range(0, len(data), 2):
        first, second = (data[i + 1], data[i]) if swap else (data[i], data[i + 1])
        words.append((first << 8) | second)
    return words
