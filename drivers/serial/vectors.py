"""A profile's test vectors through the driver's own line parser (``edge-agent profile test``).

A vector's ``line`` (without its terminator) goes through the same
:class:`~drivers.serial.parse.LineParser` as a received line: the regex, each
tag's conversion and scale, ``fail_when``. No pyserial, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from drivers.base import VectorOutcome
from drivers.serial.config import parse_options
from drivers.serial.parse import Garbage, LineParser

# Options need a port; a vector opens none (loop:// is pyserial's loopback, never used here).
_NO_CONNECTION = {"serial": {"port": "loop://"}}
LINE = "(line)"
"""The key of the error when the whole line yields nothing (no match, bad encoding)."""


def decode_vector(
    profile: Mapping[str, Any], tag: str | None, raw: Sequence[int] | str
) -> VectorOutcome:
    """Every tag's value from one line (only ``tag``'s when one is named)."""
    if not isinstance(raw, str):
        raise ValueError("a serial vector gives a line, not registers")
    options = parse_options({**profile, "connection": _NO_CONNECTION})
    if tag is not None and tag not in options.tags:
        raise ValueError(f"no tag {tag!r} in this profile")
    parsed = LineParser(options).parse(raw.encode(options.protocol.encoding))
    if isinstance(parsed, Garbage):
        return VectorOutcome({}, {LINE: str(parsed)})
    if tag is None:
        return VectorOutcome(parsed.values, parsed.errors)
    keep = {tag}
    return VectorOutcome(
        {k: v for k, v in parsed.values.items() if k in keep},
        {k: v for k, v in parsed.errors.items() if k in keep},
    )
