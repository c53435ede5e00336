"""A lean Modbus responder for the benchmark, so the simulator is never the bottleneck.

It answers FC03 and FC04 reads from one static register image (register ``a``
holds ``a % 1000``) and refuses everything else with exception 01; any unit
id is served. Two modes, run as a subprocess::

    python -m bench.lean_modbus tcp --devices 10          # one Modbus TCP port per device
    python -m bench.lean_modbus rtu --baud 19200          # RTU framing on one TCP port

It prints ``{"ports": [...]}`` on its first stdout line, serves until SIGTERM,
then writes its counters as JSON to ``--stats`` (if given).

The RTU mode stands for one RS-485 bus reached through ``socket://``: it delays
each reply by the time the request and the reply take on a wire at ``--baud``
(10 or 11 bits per character) plus the 3.5-character silences that end each
frame, and serves one exchange at a time, so the agent sees the timing a real
bus allows. Its counters include the bus busy time (utilisation).

It shares no code with ``drivers/`` (own framing, own CRC), like the simulators.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import struct
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

IMAGE = b"".join(struct.pack(">H", a % 1000) for a in range(65536))
_READS = (3, 4)


@dataclass
class Counters:
    """What the responder did, written to the stats file on exit."""

    requests: int = 0
    exceptions: int = 0
    bad_frames: int = 0
    bus_busy_s: float = 0.0
    started: float = 0.0
    stopped: float = 0.0


def _registers(address: int, count: int) -> bytes | None:
    if not 1 <= count <= 125 or address + count > 65536:
        return None
    return IMAGE[2 * address : 2 * (address + count)]


# --------------------------------------------------------------------------- TCP


class TcpResponder(asyncio.Protocol):
    """One Modbus TCP connection: MBAP frames in, replies out, pipelined."""

    def __init__(self, counters: Counters) -> None:
        self._counters = counters
        self._buf = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        out = []
        while len(buf) >= 8:
            end = 6 + int.from_bytes(buf[4:6], "big")
            if len(buf) < end:
                break
            out.append(self._answer(bytes(buf[:end])))
            del buf[:end]
        if out and self._transport is not None:
            self._transport.write(b"".join(out))

    def _answer(self, frame: bytes) -> bytes:
        self._counters.requests += 1
        tid, unit, fc = frame[0:2], frame[6], frame[7]
        data = None
        if fc in _READS and len(frame) == 12:
            address, count = struct.unpack_from(">HH", frame, 8)
            data = _registers(address, count)
        if data is None:
            self._counters.exceptions += 1
            return tid + b"\x00\x00\x00\x03" + bytes((unit, fc | 0x80, 1))
        return tid + b"\x00\x00" + struct.pack(">HBBB", 3 + len(data), unit, fc, len(data)) + data


# --------------------------------------------------------------------------- RTU


def crc16(frame: bytes) -> int:
    """Modbus RTU CRC-16 (polynomial 0xA001, initial 0xFFFF)."""
    crc = 0xFFFF
    for byte in frame:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def with_crc(body: bytes) -> bytes:
    """``body`` followed by its CRC, low byte first."""
    return body + struct.pack("<H", crc16(body))


class RtuBus(asyncio.Protocol):
    """One RS-485 bus over TCP: 8-byte read requests in, replies after the wire time."""

    def __init__(
        self,
        counters: Counters,
        baud: int,
        bits_per_char: int,
        silent: frozenset[int] = frozenset(),
    ) -> None:
        self._counters = counters
        self._silent = silent  # units that never answer: a dead drive on the bus
        self._char_s = bits_per_char / baud
        self._buf = bytearray()
        self._transport: asyncio.Transport | None = None
        self._bus_free = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._buf += data
        while len(self._buf) >= 8:
            frame = bytes(self._buf[:8])
            if crc16(frame[:6]) != struct.unpack_from("<H", frame, 6)[0]:
                self._counters.bad_frames += 1
                self._buf.clear()  # noise: resynchronise on the next request
                return
            del self._buf[:8]
            self._schedule(frame)

    def _schedule(self, frame: bytes) -> None:
        self._counters.requests += 1
        unit, fc = frame[0], frame[1]
        if unit in self._silent:
            # the request still occupies the wire; nobody answers it
            loop = asyncio.get_running_loop()
            self._bus_free = max(loop.time(), self._bus_free) + (len(frame) + 3.5) * self._char_s
            return
        address, count = struct.unpack_from(">HH", frame, 2)
        data = _registers(address, count) if fc in _READS else None
        if data is None:
            self._counters.exceptions += 1
            reply = with_crc(bytes((unit, fc | 0x80, 1)))
        else:
            reply = with_crc(bytes((unit, fc, len(data))) + data)
        gap = 3.5 * self._char_s
        wire = (len(frame) + len(reply)) * self._char_s + 2 * gap
        loop = asyncio.get_running_loop()
        start = max(loop.time(), self._bus_free)
        self._bus_free = start + wire
        self._counters.bus_busy_s += wire
        # the reply is complete on the wire one silence before the bus is free again
        loop.call_at(self._bus_free - gap, self._send, reply)

    def _send(self, reply: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(reply)


# --------------------------------------------------------------------------- main


async def _serve(args: argparse.Namespace, counters: Counters) -> None:
    loop = asyncio.get_running_loop()
    servers: list[asyncio.Server] = []
    if args.mode == "tcp":
        servers += [
            await loop.create_server(lambda: TcpResponder(counters), "127.0.0.1", 0)
            for _ in range(args.devices)
        ]
    else:
        bits = 1 + 8 + (0 if args.parity == "N" else 1) + args.stop_bits
        servers.append(
            await loop.create_server(
                lambda: RtuBus(counters, args.baud, bits, frozenset(args.silent_units)),
                "127.0.0.1",
                0,
            )
        )
    ports = [s.sockets[0].getsockname()[1] for s in servers]
    counters.started = time.monotonic()
    print(json.dumps({"ports": ports}), flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    counters.stopped = time.monotonic()
    for server in servers:
        server.close()


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m bench.lean_modbus``."""
    parser = argparse.ArgumentParser(prog="python -m bench.lean_modbus")
    parser.add_argument("mode", choices=("tcp", "rtu"))
    parser.add_argument("--devices", type=int, default=1, help="TCP ports to open (tcp mode)")
    parser.add_argument("--baud", type=int, default=19200)
    parser.add_argument("--parity", choices=("N", "E", "O"), default="N")
    parser.add_argument("--stop-bits", type=int, choices=(1, 2), default=1)
    parser.add_argument(
        "--silent-units",
        type=int,
        nargs="*",
        default=[],
        help="RTU unit ids that never answer (a dead unit on the bus)",
    )
    parser.add_argument("--stats", type=Path, help="write counters here as JSON on exit")
    args = parser.parse_args(argv)
    counters = Counters()
    asyncio.run(_serve(args, counters))
    if args.stats is not None:
        args.stats.write_text(json.dumps(asdict(counters)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
