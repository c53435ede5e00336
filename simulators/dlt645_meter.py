"""Emulated DL/T 645-2007 energy meters on one line: a pty, or raw frames over TCP.

Its own frame code (never the driver's): a request ``68 A0..A5 68 11 04 DI
CS 16`` (after any ``FE`` wake-up bytes) gets ``91`` with the value, or ``D1``
with error byte ``02`` (no such data) for an identifier it does not know.
Several meters share one line; each answers only its own address (``AA``
pairs are wildcards). Nothing answers the broadcast address.

The values identify themselves, so a test can check exact decoding: voltages
of phase n are ``230.n`` V, currents ``n.234`` A, phase powers ``-0.n234``
kW (negative: exporting), and the energy total is the meter's last four
address digits in kWh plus ``0.25``. With ``baud`` set, each reply is held for
the wire time the two frames would take at that rate, plus the 20 ms turnaround.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import tty
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

TURNAROUND_S = 0.020
NO_SUCH_DATA = 0x02


@dataclass(frozen=True, slots=True)
class Item:
    """One data identifier the meter knows: its BCD width, decimals, sign bit, and value."""

    digits: int
    decimals: int
    signed: bool
    value: Callable[[str], float]


def _fixed(value: float) -> Callable[[str], float]:
    return lambda address: value


def _energy(address: str) -> float:
    return int(address[-4:]) + 0.25


ITEMS: dict[int, Item] = {
    0x00000000: Item(8, 2, False, _energy),  # combined active energy total, kWh
    0x00010000: Item(8, 2, False, _energy),  # forward active energy total
    0x00020000: Item(8, 2, False, _fixed(12.5)),  # reverse active energy total
    **{0x02010000 | n << 8: Item(4, 1, False, _fixed(230 + n / 10)) for n in (1, 2, 3)},
    **{0x02020000 | n << 8: Item(6, 3, True, _fixed(n + 0.234)) for n in (1, 2, 3)},
    0x02030000: Item(6, 4, True, _fixed(-0.6702)),  # total active power, kW
    **{0x02030000 | n << 8: Item(6, 4, True, _fixed(-(n / 10 + 0.0234))) for n in (1, 2, 3)},
    0x02040000: Item(6, 4, True, _fixed(0.1234)),  # total reactive power, kvar
    0x02060000: Item(4, 3, True, _fixed(0.987)),  # total power factor
    0x02800002: Item(4, 2, False, _fixed(50.01)),  # frequency, Hz
}


def bcd(value: float, item: Item) -> bytes:
    """``value`` as the meter sends it: BCD, low byte first, sign in the top bit."""
    number = round(abs(value) * 10**item.decimals)
    text = f"{number:0{item.digits}d}"[-item.digits :]
    raw = bytearray(bytes.fromhex(text))
    if item.signed and value < 0:
        raw[0] |= 0x80
    return bytes(reversed(raw))


def _frame(address: bytes, control: int, data: bytes, preamble: int) -> bytes:
    body = bytes([0x68, *address, 0x68, control, len(data), *((b + 0x33) & 0xFF for b in data)])
    return b"\xfe" * preamble + body + bytes([sum(body) & 0xFF, 0x16])


@dataclass
class Meter:
    """One simulated meter: its address (12 digits, high first) and faults."""

    address: str
    silent: bool = False
    requests: int = 0

    @property
    def wire_address(self) -> bytes:
        """The address as sent: low byte first."""
        return bytes.fromhex(self.address)[::-1]

    def answers(self, wire: bytes) -> bool:
        """Whether a request to ``wire`` is for this meter (``AA`` bytes match anything)."""
        return all(w in (0xAA, m) for w, m in zip(wire, self.wire_address, strict=True))

    def reply(self, di: int, preamble: int) -> bytes:
        """The reply frame to a read of ``di``."""
        item = ITEMS.get(di)
        if item is None:
            return _frame(self.wire_address, 0xD1, bytes([NO_SUCH_DATA]), preamble)
        data = di.to_bytes(4, "little") + bcd(item.value(self.address), item)
        return _frame(self.wire_address, 0x91, data, preamble)


@dataclass
class MeterLine:
    """Meters sharing one line: bytes in, reply frames out."""

    meters: list[Meter]
    reply_preamble: int = 2
    baud: int | None = None
    frames_seen: int = 0
    _buffer: bytearray = field(default_factory=bytearray)
    _wake: int = 0  # FE bytes before the request now being read: wire time too

    def feed(self, data: bytes) -> list[tuple[float, bytes]]:
        """Bytes from the master -> (seconds to hold, reply) for every request now complete."""
        self._buffer += data
        out = []
        while (request := self._next_request()) is not None:
            wire, control, payload = request
            self.frames_seen += 1
            reply = self._answer(wire, control, payload)
            if reply is not None:
                out.append((self._hold(self._wake + len(payload) + 12, len(reply)), reply))
            self._wake = 0
        return out

    def _next_request(self) -> tuple[bytes, int, bytes] | None:
        buf = self._buffer
        while True:
            start = buf.find(b"\x68")
            self._wake += buf[: len(buf) if start < 0 else start].count(0xFE)
            if start < 0:
                buf.clear()
                return None
            del buf[:start]
            if len(buf) < 12:
                return None
            if buf[7] != 0x68:
                del buf[:1]
                continue
            end = 12 + buf[9]
            if len(buf) < end:
                return None
            frame = bytes(buf[:end])
            if frame[-1] != 0x16 or frame[-2] != sum(frame[:-2]) & 0xFF:
                del buf[:1]
                continue
            del buf[:end]
            return frame[1:7], frame[8], bytes((b - 0x33) & 0xFF for b in frame[10:-2])

    def _answer(self, wire: bytes, control: int, payload: bytes) -> bytes | None:
        if control != 0x11 or len(payload) < 4 or wire == b"\x99" * 6:
            return None  # only reads; a broadcast gets no answer
        for meter in self.meters:
            if meter.answers(wire):
                meter.requests += 1
                if meter.silent:
                    return None
                return meter.reply(int.from_bytes(payload[:4], "little"), self.reply_preamble)
        return None

    def _hold(self, request_bytes: int, reply_bytes: int) -> float:
        if not self.baud:
            return 0.0
        return (request_bytes + reply_bytes) * 11 / self.baud + TURNAROUND_S


# --------------------------------------------------------------------------- transports


class PtyMeters:
    """The meters of one line behind a pty; the agent opens :attr:`path`."""

    def __init__(self, line: MeterLine, *, link: Path | None = None) -> None:
        self.line = line
        self._tmpdir: str | None = None
        if link is None:
            self._tmpdir = tempfile.mkdtemp(prefix="edge-sim-dlt645-")
            link = Path(self._tmpdir) / "tty"
        self.link = link
        self._master: int | None = None
        self._slave: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def path(self) -> str:
        """A symlink to the terminal side of the pty."""
        return str(self.link)

    async def __aenter__(self) -> Self:
        self._loop = asyncio.get_running_loop()
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo of requests, no byte translation
        os.set_blocking(master, False)
        self._master, self._slave = master, slave
        tmp = self.link.with_name(self.link.name + ".new")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(os.ttyname(slave))
        tmp.replace(self.link)
        self._loop.add_reader(master, self._readable)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._master is not None and self._loop is not None:
            self._loop.remove_reader(self._master)
        for fd in (self._master, self._slave):
            if fd is not None:
                os.close(fd)
        self._master = self._slave = None
        with contextlib.suppress(FileNotFoundError):
            self.link.unlink()
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)

    def _readable(self) -> None:
        if self._master is None or self._loop is None:
            return
        try:
            data = os.read(self._master, 4096)
        except OSError:
            return
        for hold, reply in self.line.feed(data):
            self._loop.call_later(hold, self._write, reply)

    def _write(self, data: bytes) -> None:
        if self._master is None:
            return
        with contextlib.suppress(OSError):  # nobody reads: lost, like on a real wire
            os.write(self._master, data)


class TcpMeters:
    """The meters of one line behind a TCP serial server (raw bytes, like ``socket://``)."""

    def __init__(self, line: MeterLine, port: int = 0) -> None:
        self.line = line
        self.port = port
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        """What the driver opens."""
        return f"socket://127.0.0.1:{self.port}"

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while data := await reader.read(4096):
                for hold, reply in self.line.feed(data):
                    if hold:
                        await asyncio.sleep(hold)
                    writer.write(reply)
                    await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
