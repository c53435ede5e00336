"""The serial line driver: the only module of ``drivers/`` that imports pyserial.

pyserial blocks, so every port call runs off the event loop: request/reply
exchanges in a one-thread executor per device (which also keeps them in
order), and in listen mode a reader thread per device that hands complete
lines to the loop with ``call_soon_threadsafe``. Parsing, counters and the
stream queue live on the loop thread only, so nothing there needs a lock.
Every wait is bounded by our own timeout on top of the port's.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import serial

from drivers.base import BaseDriver, DeviceUnavailable, DriverError, Reading, now_ms
from drivers.serial.config import SerialOptions
from drivers.serial.parse import Frame, Garbage, LineParser, LineSplitter

log = logging.getLogger(__name__)

_SLICE = 0.1  # longest single blocking read, so threads notice a stop request quickly
_MARGIN = 2.0  # our asyncio timeout = the port timeout + this
_QUEUE_MAX = 1024  # stream readings held for a slow consumer before the oldest are dropped
UNPARSEABLE = "unparseable line"
NO_LINE_YET = "no line received yet"

_PARITY = {"N": serial.PARITY_NONE, "E": serial.PARITY_EVEN, "O": serial.PARITY_ODD}
_STOP_BITS = {1: serial.STOPBITS_ONE, 2: serial.STOPBITS_TWO}
_BYTE_SIZE = {7: serial.SEVENBITS, 8: serial.EIGHTBITS}


@dataclass(slots=True)
class SerialStats:
    """Counters of one device's lines, for status. Updated on the event loop only."""

    lines: int = 0
    """Lines that matched the regex."""
    garbage_lines: int = 0
    """Lines that did not match, overran max_line, failed to decode or were cut short."""
    failed_lines: int = 0
    """Matched lines the device marked as failed (``fail_when``), e.g. a NOK tightening."""
    dropped_lines: int = 0
    """Listen mode: readings dropped because the stream consumer fell behind."""
    last_garbage: str | None = None
    """Why the last garbage line was refused, and its first bytes."""
    last_line_ms: int | None = None
    """Receive time of the last good line."""


@dataclass(frozen=True, slots=True)
class _Lost:
    message: str


class _Closed:
    """Queue marker: the driver was closed, the stream ends."""


@dataclass(frozen=True, slots=True)
class _Received:
    ts: int
    frames: list[Frame]


_Item = Reading | _Lost | _Closed


class SerialDriver(BaseDriver):
    """One ASCII-line device on a serial port (or a pyserial URL).

    Request mode: ``read(group)`` sends ``protocol.request`` and parses the one
    reply line. Listen mode: ``streams`` is true and ``stream()`` yields one
    :class:`Reading` per good line (``ts`` = receive time); ``read(group)``
    returns the most recent good line's values.
    """

    def __init__(self, device_id: str, options: SerialOptions) -> None:
        self.device_id = device_id
        self.stats = SerialStats()
        self._options = options
        conn = options.connection.serial
        self._name = conn.port
        self._timeout = conn.timeout
        self._request = options.request_bytes
        self._terminator = options.terminator_bytes
        self._max_line = options.protocol.max_line
        self._parser = LineParser(options)
        self._group_tags: dict[str, list[str]] = {}
        for name, tag in options.tags.items():
            self._group_tags.setdefault(tag.group, []).append(name)
        self._port: Any = None
        self._executor: ThreadPoolExecutor | None = None
        self._reader: threading.Thread | None = None
        self._stop = threading.Event()
        self._generation = 0
        self._queue: asyncio.Queue[_Item] | None = None
        self._latest: Reading | None = None
        self._lost: str | None = None
        self._news = asyncio.Event()  # set when a first good line arrives or the port is lost

    @property
    def streams(self) -> bool:
        """True in listen mode: the agent should consume :meth:`stream`."""
        return self._options.protocol.mode == "listen"

    def counters(self) -> dict[str, object]:
        """The line counters (``stats``) by name, for status and metrics."""
        return dataclasses.asdict(self.stats)

    @property
    def garbage_lines(self) -> int:
        """Lines refused so far (same as ``stats.garbage_lines``)."""
        return self.stats.garbage_lines

    # ----------------------------------------------------------------- lifecycle

    async def connect(self) -> None:
        """Open the port; in listen mode start the reader thread."""
        if self._port is not None:
            return
        loop = asyncio.get_running_loop()
        executor = ThreadPoolExecutor(1, thread_name_prefix=f"serial-{self.device_id}")
        future = executor.submit(self._open)
        try:
            async with asyncio.timeout(self._timeout + _MARGIN):
                port = await asyncio.wrap_future(future)
        except BaseException as exc:
            # Timed out or cancelled: the open may still finish in its thread, so close
            # whatever it opens then.
            future.add_done_callback(_close_late)
            executor.shutdown(wait=False)
            if isinstance(exc, TimeoutError):
                raise DeviceUnavailable(f"serial port {self._name}: opening timed out") from None
            raise
        self._port, self._executor = port, executor
        self._generation += 1
        self._latest, self._lost = None, None
        self._news = asyncio.Event()
        if self.streams:
            self._start_reader(loop, port)

    async def close(self) -> None:
        """Stop the reader, close the port; never raises."""
        port, executor, reader = self._port, self._executor, self._reader
        self._port, self._executor, self._reader = None, None, None
        self._generation += 1
        self._stop.set()
        if self._queue is not None:
            self._put(_Closed())
            self._queue = None
        if port is None or executor is None:
            return
        with contextlib.suppress(Exception):
            port.cancel_read()  # wakes a reader blocked in select at once (POSIX ports)
        loop = asyncio.get_running_loop()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self._timeout + _MARGIN):
                await loop.run_in_executor(executor, _shutdown, port, reader)
        executor.shutdown(wait=False)

    # ----------------------------------------------------------------- reading

    async def read(self, group: str) -> Reading:
        """One poll of ``group``: a request/reply exchange, or the latest line in listen mode."""
        if self._port is None:
            raise DeviceUnavailable(f"serial port {self._name}: not connected")
        if self.streams:
            return await self._latest_for(group)
        return await self._exchange(group)

    async def stream(self) -> AsyncGenerator[Reading, None]:
        """Listen mode: one reading per good line until :meth:`close`.

        Garbage lines are counted and skipped. Raise :class:`DeviceUnavailable`
        when the port goes away (USB unplugged, link closed).
        """
        if not self.streams:
            raise DriverError("stream() needs protocol.mode: listen")
        queue = self._queue
        if queue is None:
            raise DeviceUnavailable(f"serial port {self._name}: not connected")
        if self._lost is not None:
            raise DeviceUnavailable(self._lost)
        while True:
            item = await queue.get()
            if isinstance(item, _Lost):
                raise DeviceUnavailable(item.message)
            if isinstance(item, _Closed):
                return
            yield item

    async def _latest_for(self, group: str) -> Reading:
        if self._latest is None and self._lost is None:
            # Just connected (e.g. `edge-agent read`): give the device one timeout to speak.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._timeout):
                    await self._news.wait()
        if self._lost is not None:
            raise DeviceUnavailable(self._lost)
        names = self._group_tags.get(group, [])
        latest = self._latest
        if latest is None:
            return Reading(now_ms(), {}, dict.fromkeys(names, NO_LINE_YET))
        return _only(latest, names)

    async def _exchange(self, group: str) -> Reading:
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, self._transact, self._port)
        try:
            async with asyncio.timeout(self._timeout + _MARGIN):
                outcome = await future
        except TimeoutError:
            raise DeviceUnavailable(
                f"timeout: serial port {self._name} stuck for {self._timeout + _MARGIN:g} s"
            ) from None
        names = self._group_tags.get(group, [])
        if outcome is None:
            raise DeviceUnavailable(
                f"timeout: no reply on serial port {self._name} within {self._timeout:g} s"
            )
        result = self._accept(*outcome) if isinstance(outcome, tuple) else self._garbage(outcome)
        if isinstance(result, Garbage):
            return Reading(now_ms(), {}, dict.fromkeys(names, UNPARSEABLE))
        return _only(result, names)

    # ----------------------------------------------------------------- loop-side handling

    def _accept(self, ts: int, frame: Frame) -> Reading | Garbage:
        result = self._parser.parse(frame)
        if isinstance(result, Garbage):
            return self._garbage(result)
        stats = self.stats
        stats.lines += 1
        stats.last_line_ms = ts
        if result.failed:
            stats.failed_lines += 1
        return Reading(ts, result.values, result.errors)

    def _garbage(self, garbage: Garbage) -> Garbage:
        self.stats.garbage_lines += 1
        self.stats.last_garbage = str(garbage)
        log.debug("device %s: garbage line: %s", self.device_id, garbage)
        return garbage

    def _on_event(self, generation: int, item: _Received | _Lost) -> None:
        if generation != self._generation:
            return  # from a connection already closed
        if isinstance(item, _Lost):
            self._lost = item.message
            self._news.set()
            self._put(item)
            return
        for frame in item.frames:
            reading = self._accept(item.ts, frame)
            if isinstance(reading, Reading):
                self._latest = reading
                self._news.set()
                self._put(reading)

    def _put(self, item: _Item) -> None:
        queue = self._queue
        if queue is None:
            return
        if queue.full():
            dropped = queue.get_nowait()
            if isinstance(dropped, Reading):
                self.stats.dropped_lines += 1
        queue.put_nowait(item)

    # ----------------------------------------------------------------- threads

    def _open(self) -> Any:
        conn = self._options.connection.serial
        try:
            port = serial.serial_for_url(conn.port, do_not_open=True)
            port.baudrate = conn.baud
            port.parity = _PARITY[conn.parity]
            port.stopbits = _STOP_BITS[conn.stop_bits]
            port.bytesize = _BYTE_SIZE[conn.byte_size]
            port.timeout = _SLICE
            port.write_timeout = conn.timeout
            port.open()
        except Exception as exc:  # same leaks as in _transact, plus ValueError for bad URLs
            raise DeviceUnavailable(f"serial port {conn.port} cannot be opened: {exc}") from exc
        return port

    def _transact(self, port: Any) -> tuple[int, Frame] | Garbage | None:
        """Send the request, return the first reply line, a cut-short line, or None (silence)."""
        assert self._request is not None  # config refuses request mode without a request
        splitter = LineSplitter(self._terminator, self._max_line)
        try:
            # Drop whatever a late reply to an earlier poll left, so it is never
            # taken for this poll's answer.
            port.reset_input_buffer()
            port.write(self._request)
            deadline = time.monotonic() + self._timeout
            while time.monotonic() < deadline:
                data = _read_some(port)
                frames = splitter.feed(data) if data else []
                if frames:
                    return now_ms(), frames[0]
        except serial.SerialTimeoutException as exc:
            raise DeviceUnavailable(f"serial port {self._name}: write timed out") from exc
        except Exception as exc:
            # pyserial raises SerialException, but also lets termios.error (not an
            # OSError) and ValueError through when the device is gone.
            raise DeviceUnavailable(f"serial port {self._name} failed: {exc}") from exc
        if splitter.pending:
            return Garbage("no terminator before timeout", repr(splitter.pending[:60])[2:-1])
        return None

    def _start_reader(self, loop: asyncio.AbstractEventLoop, port: Any) -> None:
        self._stop = threading.Event()
        self._queue = asyncio.Queue(_QUEUE_MAX)
        generation = self._generation

        def post(item: _Received | _Lost) -> bool:
            try:
                loop.call_soon_threadsafe(self._on_event, generation, item)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                return False
            return True

        self._reader = threading.Thread(
            target=self._listen,
            args=(port, self._stop, post),
            name=f"serial-reader-{self.device_id}",
            daemon=True,
        )
        self._reader.start()

    def _listen(
        self, port: Any, stop: threading.Event, post: Callable[[_Received | _Lost], bool]
    ) -> None:
        splitter = LineSplitter(self._terminator, self._max_line)
        while not stop.is_set():
            try:
                data = _read_some(port)
            except Exception as exc:  # any failure of the port ends this connection
                if not stop.is_set():
                    post(_Lost(f"serial port {self._name} lost: {exc}"))
                return
            if not data:
                continue
            ts = now_ms()
            frames = splitter.feed(data)
            if frames and not post(_Received(ts, frames)):
                return


def _read_some(port: Any) -> bytes:
    # Block for the first byte (at most _SLICE), then take everything already waiting,
    # so a line's receive time is not delayed by the read timeout.
    data: bytes = port.read(1)
    if data:
        waiting = port.in_waiting
        if waiting:
            data += port.read(waiting)
    return data


def _only(reading: Reading, names: list[str]) -> Reading:
    values = {n: reading.values[n] for n in names if n in reading.values}
    errors = {n: reading.errors[n] for n in names if n in reading.errors}
    return Reading(reading.ts, values, errors)


def _shutdown(port: Any, reader: threading.Thread | None) -> None:
    if reader is not None:
        reader.join(timeout=1.0)
    with contextlib.suppress(Exception):
        port.close()


def _close_late(future: Future[Any]) -> None:
    if future.cancelled() or future.exception() is not None:
        return
    with contextlib.suppress(Exception):
        future.result().close()
