"""A profile's test vectors through the driver's own decoder (``edge-agent profile test``).

The registers of a vector go through the same :func:`~drivers.modbus.plan.layout_of`
and :mod:`drivers.modbus.decode` as a live poll: byte order, scale, offset, the
float32 shortest form, NaN as an error. No pymodbus, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from drivers.base import VectorOutcome
from drivers.modbus.config import BIT_FUNCTIONS, parse_options
from drivers.modbus.decode import decode_bits, decode_registers
from drivers.modbus.plan import layout_of

# Options need a connection; a vector needs none. A reserved name (RFC 2606), never dialled.
_NO_CONNECTION = {"modbus_tcp": {"host": "vector.invalid"}}


def decode_vector(
    profile: Mapping[str, Any], tag: str | None, raw: Sequence[int] | str
) -> VectorOutcome:
    """The value of ``tag`` held in the registers (or bits) ``raw``, as a poll decodes it."""
    if isinstance(raw, str):
        raise ValueError("a Modbus vector gives registers, not a line")
    options = parse_options({**profile, "connection": _NO_CONNECTION})
    if tag is None or tag not in options.tags:
        raise ValueError(f"no tag {tag!r} in this profile")
    spec = options.tags[tag]
    if len(raw) != spec.width:
        what = "bit" if spec.function in BIT_FUNCTIONS else f"{spec.type} register"
        raise ValueError(f"{tag} is {spec.width} {what}(s), the vector gives {len(raw)}")
    if spec.function in BIT_FUNCTIONS:
        decoded = decode_bits([bool(word) for word in raw], [layout_of(tag, spec, 0, options)])
    else:
        decoded = decode_registers(list(raw), [layout_of(tag, spec, 0, options)])
    return VectorOutcome(decoded.values, decoded.errors)
