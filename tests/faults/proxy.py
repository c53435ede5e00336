"""A TCP fault proxy for the fault suite: put it between the agent and a broker or a device.

Modes (switchable at runtime, see :class:`Mode`):

* ``pass``: forward both ways.
* ``refuse``: the listener is closed; connects are refused (open links stay up).
* ``reset``: every open link is reset (RST, ``SO_LINGER`` 0) and new ones are reset at once.
* ``blackhole``: new connects are accepted, read and never forwarded; open links
  freeze: bytes in both directions are read and discarded, and a server hanging
  up is not passed on. The client sees a silent, half-open link.
* ``drop_c2s`` / ``drop_s2c``: bytes in one direction are discarded.

Shaping, orthogonal to the mode: ``latency_ms`` per chunk, ``bandwidth`` in
bytes/s per direction, ``split`` writes in random 1-7 byte pieces.

:class:`FaultProxy` lives on an asyncio loop; :class:`ProxyThread` runs one on
its own loop thread (like ``tests.support.simthread.SimThread``) for sync tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import random
import socket
import struct
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from tests.faults.loopthread import LoopThread

__all__ = ["FaultProxy", "Mode", "ProxyStats", "ProxyThread", "Shape"]

_CHUNK = 65536
_CONNECT_TIMEOUT_S = 10.0
_QUEUE = 64  # chunks held per direction before the proxy stops reading (back pressure)


class Mode(enum.StrEnum):
    """What the proxy does with connections."""

    PASS = "pass"
    REFUSE = "refuse"
    RESET = "reset"
    BLACKHOLE = "blackhole"
    DROP_C2S = "drop_c2s"
    DROP_S2C = "drop_s2c"


@dataclass(frozen=True, slots=True)
class Shape:
    """Link shaping: latency per chunk, bandwidth cap per direction, 1-7 byte writes."""

    latency_ms: float = 0.0
    bandwidth: int = 0  # bytes per second; 0 = unlimited
    split: bool = False


@dataclass(slots=True)
class ProxyStats:
    """Counters, for tests that assert the fault really happened."""

    accepted: int = 0
    resets: int = 0
    bytes_c2s: int = 0
    bytes_s2c: int = 0
    discarded_c2s: int = 0
    discarded_s2c: int = 0


@dataclass(eq=False)
class _Link:
    client: asyncio.StreamWriter
    server: asyncio.StreamWriter | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


def _rst(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset instead of a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class FaultProxy:
    """Listen on ``host:port`` (0 = a free port) and forward to ``target_host:target_port``."""

    def __init__(
        self, target_port: int, *, target_host: str = "127.0.0.1", host: str = "127.0.0.1",
        port: int = 0, seed: int = 0,
    ) -> None:  # fmt: skip
        self.target = (target_host, target_port)
        self.host = host
        self.port = port
        self.mode = Mode.PASS
        self.shape = Shape()
        self.stats = ProxyStats()
        self._rng = random.Random(seed)
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._changed = asyncio.Event()

    async def start(self) -> None:
        """Listen; :attr:`port` holds the bound port afterwards (kept across ``refuse``)."""
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Stop listening and reset every link."""
        self._stop_listening()
        self.reset_connections()
        tasks = [t for link in list(self._links) for t in link.tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def set(self, mode: Mode | str, shape: Shape | None = None) -> None:
        """Switch the mode (and the shaping, when given)."""
        mode = Mode(mode)
        if shape is not None:
            self.shape = shape
        if mode is Mode.REFUSE:
            self._stop_listening()
        elif self._server is None:
            await self.start()
        self.mode = mode
        if mode is Mode.RESET:
            self.reset_connections()
        self._changed.set()
        self._changed = asyncio.Event()

    def reset_connections(self) -> None:
        """Reset (RST) every open link, on both sides."""
        for link in list(self._links):
            self.stats.resets += 1
            for writer in (link.client, link.server):
                if writer is not None:
                    _rst(writer)

    def close_connections(self) -> None:
        """Close every open link politely (FIN), as an idle timeout in a device does."""
        for link in list(self._links):
            for writer in (link.client, link.server):
                if writer is not None:
                    writer.close()

    @property
    def open_links(self) -> int:
        """Links currently held."""
        return len(self._links)

    def _stop_listening(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.accepted += 1
        link = _Link(writer)
        task = asyncio.current_task()
        assert task is not None
        link.tasks.add(task)
        self._links.add(link)
        with contextlib.suppress(OSError):
            writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            if self.mode is Mode.RESET:
                _rst(writer)
                return
            if self.mode is Mode.BLACKHOLE:
                while await reader.read(_CHUNK):
                    pass
                return
            async with asyncio.timeout(_CONNECT_TIMEOUT_S):
                server_r, server_w = await asyncio.open_connection(*self.target)
            link.server = server_w
            with contextlib.suppress(OSError):
                server_w.get_extra_info("socket").setsockopt(
                    socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
                )
            async with asyncio.TaskGroup() as group:
                group.create_task(self._pump(reader, server_w, upstream=True))
                group.create_task(self._pump(server_r, writer, upstream=False))
        except (OSError, TimeoutError, ExceptionGroup, asyncio.IncompleteReadError):
            pass  # either side went away: close the link
        except asyncio.CancelledError:
            pass  # close() cancels on purpose; end quietly for asyncio's start_server
        finally:
            self._links.discard(link)
            for w in (writer, link.server):
                if w is not None:
                    w.close()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, upstream: bool
    ) -> None:
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue(_QUEUE)
        async with asyncio.TaskGroup() as group:
            group.create_task(self._send(queue, writer, upstream=upstream))
            await self._receive(reader, queue, upstream=upstream)
        raise ConnectionResetError("one side closed")  # ends the other direction too

    def _discards(self, upstream: bool) -> bool:
        drop = Mode.DROP_C2S if upstream else Mode.DROP_S2C
        return self.mode in (Mode.BLACKHOLE, drop)

    async def _receive(
        self,
        reader: asyncio.StreamReader,
        queue: asyncio.Queue[tuple[float, bytes] | None],
        *,
        upstream: bool,
    ) -> None:
        loop = asyncio.get_running_loop()
        while data := await reader.read(_CHUNK):
            if self._discards(upstream):
                if upstream:
                    self.stats.discarded_c2s += len(data)
                else:
                    self.stats.discarded_s2c += len(data)
                continue
            await queue.put((loop.time() + self.shape.latency_ms / 1000, data))
        # A server hanging up during a black-hole is not passed on: the link stays frozen.
        while not upstream and self.mode is Mode.BLACKHOLE:
            await self._changed.wait()
        await queue.put(None)

    async def _send(
        self,
        queue: asyncio.Queue[tuple[float, bytes] | None],
        writer: asyncio.StreamWriter,
        *,
        upstream: bool,
    ) -> None:
        loop = asyncio.get_running_loop()
        while (item := await queue.get()) is not None:
            deliver_at, data = item
            if deliver_at > loop.time():
                await asyncio.sleep(deliver_at - loop.time())
            if self._discards(upstream):
                continue  # frozen while it waited
            for piece in self._pieces(data):
                writer.write(piece)
                await writer.drain()
                if self.shape.bandwidth:
                    await asyncio.sleep(len(piece) / self.shape.bandwidth)
                elif self.shape.split:
                    await asyncio.sleep(0)
            if upstream:
                self.stats.bytes_c2s += len(data)
            else:
                self.stats.bytes_s2c += len(data)

    def _pieces(self, data: bytes) -> list[bytes]:
        if self.shape.split:
            pieces, i = [], 0
            while i < len(data):
                n = self._rng.randint(1, 7)
                pieces.append(data[i : i + n])
                i += n
            return pieces
        if self.shape.bandwidth:
            step = max(1, self.shape.bandwidth // 20)  # about 20 writes a second: smooth pacing
            return [data[i : i + step] for i in range(0, len(data), step)]
        return [data]


class ProxyThread:
    """A :class:`FaultProxy` on its own loop thread: ``with ProxyThread(port) as proxy:``."""

    def __init__(
        self, target_port: int, *, target_host: str = "127.0.0.1", seed: int = 0,
        loop: LoopThread | None = None,
    ) -> None:  # fmt: skip
        self._own_loop = loop is None
        self.loop = loop or LoopThread("fault-proxy")
        self.proxy = FaultProxy(target_port, target_host=target_host, seed=seed)

    @property
    def port(self) -> int:
        """The port clients connect to."""
        return self.proxy.port

    @property
    def stats(self) -> ProxyStats:
        """The proxy's counters (read from another thread: a snapshot, not exact)."""
        return self.proxy.stats

    @property
    def open_links(self) -> int:
        """Links currently held."""
        return self.proxy.open_links

    def start(self) -> Self:
        """Start listening."""
        self.loop.run(self.proxy.start())
        return self

    def set(
        self, mode: Mode | str, *, latency_ms: float = 0.0, bandwidth: int = 0,
        split: bool = False,
    ) -> None:  # fmt: skip
        """Switch mode and shaping (shaping not given goes back to none)."""
        self.loop.run(self.proxy.set(mode, Shape(latency_ms, bandwidth, split)))

    def reset_connections(self) -> None:
        """RST every open link."""
        self.loop.call(self.proxy.reset_connections)

    def close_connections(self) -> None:
        """FIN every open link."""
        self.loop.call(self.proxy.close_connections)

    def close(self) -> None:
        """Stop the proxy (and its loop, if it owns it)."""
        with contextlib.suppress(Exception):
            self.loop.run(self.proxy.close())
        if self._own_loop:
            self.loop.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
