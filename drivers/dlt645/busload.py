"""Pure: how much of an RS-485 line the configured meter reads need, and one read's wire time.

Each tag is one exchange: a read request (the ``FE`` wake-up bytes, 12 bytes
of frame, 4 of data identifier), the meter's turnaround, then the reply (12
bytes of frame, 4 of identifier, the value). A character is ``1 + data bits
+ parity + stop bits`` bit times: 11 at the standard's 8E1. Meters often put
``FE`` bytes before their reply too; the estimate counts as many as the
request sends, so it errs on the busy side. The result shares one estimate
with Modbus RTU devices on the same port (``agent/site/loader.py`` sums them).
"""

from __future__ import annotations

from collections.abc import Mapping

from drivers.base import LineLoad
from drivers.dlt645.config import Dlt645Line, Dlt645Options, Dlt645Tag
from drivers.dlt645.frame import FRAME_OVERHEAD

DI_BYTES = 4
TURNAROUND_S = 0.020
"""The shortest wait before a meter answers (20 ms in the standard; many take longer)."""


def exchange_bytes(tag: Dlt645Tag, preamble: int) -> tuple[int, int]:
    """Bytes of the request and of the reply of one tag's read."""
    request = preamble + FRAME_OVERHEAD + DI_BYTES
    reply = preamble + FRAME_OVERHEAD + DI_BYTES + tag.size
    return request, reply


def exchange_time(tag: Dlt645Tag, line: Dlt645Line, preamble: int, delay: float = 0.0) -> float:
    """Line time of one tag's read: both frames, the turnaround, the configured delay."""
    request, reply = exchange_bytes(tag, preamble)
    return (request + reply) * line.char_seconds() + TURNAROUND_S + delay


def poll_times(options: Dlt645Options) -> dict[str, float]:
    """Wire time of one poll of each group."""
    line, proto = options.connection.dlt645, options.protocol
    out: dict[str, float] = {}
    for tag in options.tags.values():
        cost = exchange_time(tag, line, proto.preamble, proto.inter_request_delay)
        out[tag.group] = out.get(tag.group, 0.0) + cost
    return out


def link_load(options: Dlt645Options, intervals: Mapping[str, float]) -> LineLoad:
    """The line time this meter's polls need per second of wall time."""
    line = options.connection.dlt645
    busy = sum(t / intervals[g] for g, t in poll_times(options).items() if g in intervals)
    return line.load(busy, "dlt645")
