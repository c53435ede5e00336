"""A TCP proxy in front of a simulator that injects network faults.

Clients connect to the proxy; it forwards bytes to the real server and back.
Faults act on the link, as they do on a factory network:

* ``slow``: every server->client chunk is held ``delay`` seconds.
* ``freeze``: nothing moves in either direction for ``seconds`` (or until
  cleared); connections stay open, so a client sees a half-open link, not a
  reset. New connections are accepted but not served either.
* ``garbage``: the next server->client chunk is replaced by random bytes.

Uses only asyncio, so any TCP simulator can sit behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass

_log = logging.getLogger(__name__)

_CHUNK = 65536


@dataclass
class Fault:
    """The fault in force; ``kind`` None means a healthy link."""

    kind: str | None = None
    delay: float = 0.0
    until: float = 0.0  # loop time at which a freeze ends; 0 = until cleared


class FaultProxy:
    """Listen on ``host:port`` (0 = any free port) and forward to ``target``."""

    def __init__(self, target_host: str, target_port: int, host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.host = host
        self.port = 0
        self.fault = Fault()
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.Task[None]] = set()
        self._garbage_pending = False

    async def start(self, port: int = 0) -> None:
        """Start listening; ``port`` 0 picks a free one (see :attr:`port`)."""
        self._server = await asyncio.start_server(self._serve, self.host, port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and cut every open link."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        await self.drop_links()

    async def drop_links(self) -> None:
        """Cut every open link (both sides see the connection closed)."""
        tasks = list(self._links)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def set(self, kind: str | None, *, delay: float = 0.0, seconds: float = 0.0) -> None:
        """Apply a fault (``slow``, ``freeze``, ``garbage``) or clear it with None."""
        if kind not in (None, "slow", "freeze", "garbage"):
            raise ValueError(f"unknown fault {kind!r}")
        now = asyncio.get_running_loop().time()
        self.fault = Fault(kind, delay, now + seconds if seconds > 0 else 0.0)
        self._garbage_pending = kind == "garbage"

    async def _gate(self) -> None:
        """Wait while the link is frozen."""
        loop = asyncio.get_running_loop()
        while self.fault.kind == "freeze":
            if self.fault.until and loop.time() >= self.fault.until:
                self.fault = Fault()
                break
            await asyncio.sleep(0.05)

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._links.add(task)
        server_w: asyncio.StreamWriter | None = None
        try:
            await self._gate()
            server_r, server_w = await asyncio.open_connection(*self.target)
            async with asyncio.TaskGroup() as group:
                group.create_task(self._pump(client_r, server_w, upstream=True))
                group.create_task(self._pump(server_r, client_w, upstream=False))
        except (OSError, ExceptionGroup) as exc:
            _log.debug("proxy link closed: %r", exc)
        except asyncio.CancelledError:
            # drop_links() cancels us on purpose; ending normally keeps asyncio's
            # start_server callback from reporting the cancellation as an error.
            _log.debug("proxy link cut")
        finally:
            self._links.discard(task)
            for writer in (client_w, server_w):
                if writer is not None:
                    writer.close()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, upstream: bool
    ) -> None:
        while True:
            await self._gate()
            data = await reader.read(_CHUNK)
            if not data:
                raise ConnectionResetError("peer closed")
            await self._gate()
            if not upstream:
                if self.fault.kind == "slow":
                    await asyncio.sleep(self.fault.delay)
                if self._garbage_pending:
                    self._garbage_pending = False
                    data = os.urandom(len(data))
            writer.write(data)
            await writer.drain()
