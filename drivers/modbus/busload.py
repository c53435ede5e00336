"""Pure: how much of an RS-485 line's capacity the configured polls need.

Modbus RTU sends one character per ``1 + data bits + parity + stop bits`` bit
times, and frames are separated by at least 3.5 characters of silence. A read
request is 8 bytes; its reply is 5 bytes plus the data. Everything on one
line shares that capacity, so a site that asks for more than the baud rate
allows gets polls that overrun, whatever the agent does: better to say so at
start-up than to let the cloud see late data.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from drivers.base import LineLoad
from drivers.modbus.config import ModbusOptions, RtuConnection
from drivers.modbus.plan import Request, plan_groups

REQUEST_BYTES = 8  # unit, function, address (2), count (2), CRC (2)
REPLY_OVERHEAD_BYTES = 5  # unit, function, byte count, CRC (2)
FRAME_GAP_CHARS = 3.5


def request_time(request: Request, line: RtuConnection, delay: float = 0.0) -> float:
    """Line time of one read: request, reply, the silences around both, the delay."""
    data = math.ceil(request.count / 8) if request.is_bits else 2 * request.count
    chars = REQUEST_BYTES + REPLY_OVERHEAD_BYTES + data + 2 * FRAME_GAP_CHARS
    return chars * line.char_seconds() + delay


def link_load(options: ModbusOptions, intervals: Mapping[str, float]) -> LineLoad | None:
    """The line time this device needs per second; None for Modbus TCP."""
    line = options.connection.modbus_rtu
    if line is None:
        return None
    delay = options.protocol.inter_request_delay
    busy = 0.0
    for group, reads in plan_groups(options).items():
        per_poll = sum(request_time(r.request, line, delay) for r in reads)
        busy += per_poll / intervals[group]
    return line.load(busy, "modbus_rtu")
