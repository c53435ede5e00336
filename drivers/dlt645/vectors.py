"""A profile's test vectors through the driver's own decoding (``edge-agent profile test``).

A vector's ``data`` is the value part of a read reply as it is on the wire (low
byte first, every byte +0x33), the bytes a frame capture or the standard's
worked example shows after the data identifier. It is decoded exactly as a
live reply is: the offset removed, the BCD read with the tag's format, sign and
scale. No pyserial, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from drivers.base import VectorOutcome
from drivers.dlt645.config import parse_options
from drivers.dlt645.frame import OFFSET, decode_bcd

# Options need a port; a vector opens none (loop:// is pyserial's loopback, never used here).
_NO_CONNECTION = {"dlt645": {"port": "loop://"}}


def decode_vector(
    profile: Mapping[str, Any], tag: str | None, raw: Sequence[int] | str | bytes
) -> VectorOutcome:
    """``tag``'s value from the reply bytes ``raw``."""
    if not isinstance(raw, bytes):
        raise ValueError("a DL/T 645 vector gives data (reply bytes in hex)")
    options = parse_options({**profile, "connection": _NO_CONNECTION})
    if tag is None or tag not in options.tags:
        raise ValueError(f"no tag {tag!r} in this profile")
    spec = options.tags[tag]
    if len(raw) != spec.size:
        raise ValueError(f"{len(raw)} bytes; format {spec.format} takes {spec.size}")
    plain = bytes((b - OFFSET) & 0xFF for b in raw)
    try:
        value = decode_bcd(plain, spec.decimals, spec.signed)
    except ValueError as exc:
        return VectorOutcome({}, {tag: str(exc)})
    return VectorOutcome({tag: value * spec.scale if spec.scale != 1.0 else value}, {})
