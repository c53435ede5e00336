"""The DL/T 645 driver: the only module of the package that imports pyserial.

Several meters on one RS-485 line share one port through a :class:`SharedLine`
(one per port and event loop), which runs one exchange at a time: a request,
then its reply or the timeout. pyserial blocks, so each exchange runs on the
line's own one-thread executor. A meter that does not answer costs the line
one timeout, then its read fails with ``DeviceUnavailable`` at once (the
scheduler backs it off), so a silent meter never holds up the others for
more than one exchange per poll. A port that fails is closed, and reopened by
the next exchange of any meter on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import weakref
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import serial

from drivers.base import (
    BaseDriver,
    ConfigError,
    ConfigProblem,
    DeviceUnavailable,
    Reading,
    now_ms,
)
from drivers.dlt645.config import Dlt645Line, Dlt645Options, Dlt645Tag
from drivers.dlt645.frame import (
    FROM_METER,
    Frame,
    Refused,
    address_matches,
    decode_bcd,
    encode_read,
    find_frame,
    read_reply,
)

log = logging.getLogger(__name__)

_SLICE = 0.05  # longest single blocking read
_MARGIN = 2.0  # our asyncio timeout = the reply timeout + this
_PARITY = {"N": serial.PARITY_NONE, "E": serial.PARITY_EVEN, "O": serial.PARITY_ODD}
_STOP_BITS = {1: serial.STOPBITS_ONE, 2: serial.STOPBITS_TWO}
_BYTE_SIZE = {7: serial.SEVENBITS, 8: serial.EIGHTBITS}
BAD_FRAME = "no valid reply frame (checksum or framing)"


@dataclass(slots=True)
class MeterStats:
    """Counters of one meter, for status. Updated on the event loop only."""

    exchanges: int = 0
    timeouts: int = 0
    bad_frames: int = 0
    refusals: int = 0
    address_seen: str | None = None
    """The address the meter answers with (its real one, also behind a wildcard)."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one exchange got: a frame for us, bytes that made none, or nothing."""

    frame: Frame | None
    junk: bytes
    ts: int


class SharedLine:
    """One serial port shared by every meter on it: opened lazily, one exchange at a time."""

    def __init__(self, line: Dlt645Line) -> None:
        self.line = line
        self.users = 0
        self.lock = asyncio.Lock()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"dlt645-{line.port}")
        self._port: Any = None
        self._last_end = 0.0

    async def open(self) -> None:
        """Open the port now (``connect`` reports an unreachable line)."""
        async with self.lock:
            await self._run(self._ensure_open)

    async def exchange(self, request: bytes, address: str, delay: float) -> Outcome:
        """Send ``request``; the first frame from a meter at ``address``, or what came instead."""
        async with self.lock:
            loop = asyncio.get_running_loop()
            wait = self._last_end + delay - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                outcome: Outcome = await self._run(self._transact, request, address)
                return outcome
            finally:
                self._last_end = loop.time()

    def close(self) -> None:
        """Close the port and stop the thread once pending work is done. Never raises."""
        self._executor.submit(self._drop)
        self._executor.shutdown(wait=False)

    async def _run(self, func: Any, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, func, *args)
        try:
            async with asyncio.timeout(self.line.timeout + _MARGIN):
                return await future
        except TimeoutError:
            # The thread is stuck in the port: the next exchange queues behind it.
            raise DeviceUnavailable(f"{self.line.port}: port stuck") from None

    # ----------------------------------------------------------------- thread side

    def _ensure_open(self) -> Any:
        if self._port is not None:
            return self._port
        line = self.line
        try:
            port = serial.serial_for_url(line.port, do_not_open=True)
            port.baudrate = line.baud
            port.parity = _PARITY[line.parity]
            port.stopbits = _STOP_BITS[line.stop_bits]
            port.bytesize = _BYTE_SIZE[line.byte_size]
            port.timeout = _SLICE
            port.write_timeout = line.timeout
            port.open()
        except Exception as exc:  # SerialException, OSError, ValueError for a bad URL
            raise DeviceUnavailable(f"serial port {line.port} cannot be opened: {exc}") from exc
        self._port = port
        return port

    def _transact(self, request: bytes, address: str) -> Outcome:
        port = self._ensure_open()
        buffer = bytearray()
        try:
            port.reset_input_buffer()  # a late reply to an earlier request is not this one's
            port.write(request)
            deadline = time.monotonic() + self.line.timeout
            while time.monotonic() < deadline:
                chunk = port.read(max(1, port.in_waiting))
                if not chunk:
                    continue
                buffer += chunk
                frame = _take_reply(buffer, address)
                if frame is not None:
                    return Outcome(frame, b"", now_ms())
        except Exception as exc:  # SerialException, OSError, termios.error: the port is gone
            self._drop()
            raise DeviceUnavailable(f"serial port {self.line.port} failed: {exc}") from exc
        return Outcome(None, bytes(buffer), now_ms())

    def _drop(self) -> None:
        port, self._port = self._port, None
        if port is not None:
            with contextlib.suppress(Exception):
                port.close()


def _take_reply(buffer: bytearray, address: str) -> Frame | None:
    """The first meter frame from ``address`` in ``buffer``; consumed bytes are removed.

    Frames sent by a master (an adapter echoing our own request) and frames
    from other addresses are skipped.
    """
    while True:
        frame, used = find_frame(buffer)
        if frame is None:
            return None
        del buffer[:used]
        if frame.control & FROM_METER and address_matches(address, frame.address):
            return frame


_LINES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, SharedLine]] = (
    weakref.WeakKeyDictionary()
)


def _acquire(line: Dlt645Line) -> SharedLine:
    lines = _LINES.setdefault(asyncio.get_running_loop(), {})
    shared = lines.get(line.port)
    if shared is None:
        shared = lines[line.port] = SharedLine(line)
    elif _framing(shared.line) != _framing(line):
        raise ConfigError(
            [
                ConfigProblem(
                    ("connection", "dlt645"),
                    f"{line.port} is already open by another meter with other line settings "
                    "(baud, parity, stop_bits, byte_size must match)",
                )
            ]
        )
    shared.users += 1
    return shared


def _release(shared: SharedLine) -> None:
    shared.users -= 1
    if shared.users > 0:
        return
    shared.close()
    with contextlib.suppress(RuntimeError):
        lines = _LINES.get(asyncio.get_running_loop(), {})
        if lines.get(shared.line.port) is shared:
            del lines[shared.line.port]


def _framing(line: Dlt645Line) -> tuple[object, ...]:
    return (line.baud, line.parity, line.stop_bits, line.byte_size)


# --------------------------------------------------------------------------- driver


@dataclass(frozen=True, slots=True)
class RawRead:
    """What ``inspect`` found for one tag: the frames on the wire and the value."""

    tag: str
    di: str
    request: str
    reply: str
    value: float | int | None
    error: str | None = None


class Dlt645Driver(BaseDriver):
    """One DL/T 645 meter (one address) on a serial line or a TCP serial server."""

    def __init__(self, device_id: str, options: Dlt645Options) -> None:
        self.device_id = device_id
        self.options = options
        self.stats = MeterStats()
        proto = options.protocol
        self._address = proto.address
        self._requests = {
            name: encode_read(proto.address, tag.di_value, proto.preamble)
            for name, tag in options.tags.items()
        }
        self._groups: dict[str, list[str]] = {}
        for name, tag in options.tags.items():
            self._groups.setdefault(tag.group, []).append(name)
        self._line: SharedLine | None = None

    def counters(self) -> dict[str, object]:
        """The meter's counters (``stats``) by name, for status and metrics."""
        return dataclasses.asdict(self.stats)

    async def connect(self) -> None:
        """Join (or open) the shared line; DeviceUnavailable when the port cannot be opened."""
        if self._line is None:
            self._line = _acquire(self.options.connection.dlt645)
        try:
            await self._line.open()
        except DeviceUnavailable:
            await self.close()
            raise

    async def close(self) -> None:
        """Leave the shared line (closed with its last meter). Never raises."""
        line, self._line = self._line, None
        if line is not None:
            _release(line)

    async def read(self, group: str) -> Reading:
        """One exchange per tag of ``group``; DeviceUnavailable at the first silence."""
        reading = Reading(ts=now_ms())
        for name in self._groups.get(group, ()):
            value = await self._read_tag(name)
            if isinstance(value, str):
                reading.errors[name] = value
            else:
                reading.values[name] = value
        return reading

    async def inspect(self, tags: Sequence[str]) -> list[RawRead]:
        """Read ``tags`` one by one for commissioning: request and reply bytes, value."""
        unknown = [t for t in tags if t not in self.options.tags]
        if unknown:
            raise ConfigError([ConfigProblem(("tags", t), "no such tag") for t in unknown])
        out = []
        for name in tags:
            outcome = await self._exchange(name)
            value = self._value(name, outcome)
            frame = outcome.frame
            reply = f"{frame.control:02X} {frame.data.hex(' ')}" if frame else outcome.junk.hex(" ")
            ok = not isinstance(value, str)
            out.append(
                RawRead(
                    name,
                    self.options.tags[name].di,
                    self._requests[name].hex(" "),
                    reply,
                    value if ok and not isinstance(value, str) else None,
                    None if ok else str(value),
                )
            )
        return out

    async def _read_tag(self, name: str) -> float | int | str:
        return self._value(name, await self._exchange(name))

    async def _exchange(self, name: str) -> Outcome:
        line = self._line
        if line is None:
            raise DeviceUnavailable(f"{self.device_id}: not connected")
        delay = self.options.protocol.inter_request_delay
        outcome = await line.exchange(self._requests[name], self._address, delay)
        self.stats.exchanges += 1
        if outcome.frame is None and not outcome.junk:
            self.stats.timeouts += 1
            raise DeviceUnavailable(
                f"timeout: meter {self._address} did not answer within {line.line.timeout:g} s"
            )
        return outcome

    def _value(self, name: str, outcome: Outcome) -> float | int | str:
        tag = self.options.tags[name]
        frame = outcome.frame
        if frame is None:
            self.stats.bad_frames += 1
            log.debug("meter %s: %s: %s", self._address, BAD_FRAME, outcome.junk[:40].hex(" "))
            return BAD_FRAME
        self.stats.address_seen = frame.address
        try:
            raw = read_reply(frame, tag.di_value)
        except ValueError as exc:
            self.stats.bad_frames += 1
            return str(exc)
        if isinstance(raw, Refused):
            self.stats.refusals += 1
            return raw.text()
        return _decode(tag, raw)


def _decode(tag: Dlt645Tag, raw: bytes) -> float | int | str:
    if len(raw) != tag.size:
        return f"reply has {len(raw)} value bytes, format {tag.format} needs {tag.size}"
    try:
        value = decode_bcd(raw, tag.decimals, tag.signed)
    except ValueError as exc:
        return str(exc)
    if tag.scale != 1.0:
        return value * tag.scale
    return value
