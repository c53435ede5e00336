"""The local status endpoint: a unix socket answering one JSON document.

The agent listens on no network port: status is served on a unix socket in
its data directory (mode 0660). A client connects, sends one request line
(``status``), reads the JSON answer until EOF; ``metrics`` answers the
Prometheus text instead. This module must stay light to
import; the client side is :mod:`agent.status.client`, which imports no asyncio.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

from agent.errors import AlreadyRunning
from agent.status.document import StatusDocument

Snapshot = Callable[[], Awaitable[StatusDocument]]
Text = Callable[[], Awaitable[str]]
MAX_REQUEST = 256


class StatusServer:
    """Serves ``snapshot()`` as JSON on a unix socket."""

    def __init__(self, path: Path, snapshot: Snapshot, metrics: Text | None = None) -> None:
        self.path = path
        self._snapshot = snapshot
        self._metrics = metrics
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        """Bind the socket, replacing a stale one left by a killed agent."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.is_socket() or self.path.exists():
            if _answers(self.path):
                raise AlreadyRunning(f"another agent already serves {self.path}")
            self.path.unlink()
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        os.chmod(self.path, 0o660)

    async def close(self) -> None:
        """Stop serving and remove the socket file."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _status_body(self) -> bytes:
        # The agent is running even when part of its state cannot be read (a
        # buffer read failing): say so, rather than look like no agent at all.
        try:
            return json.dumps(await self._snapshot()).encode()
        except Exception as exc:
            return _error_body(exc)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5):
                request = (await reader.readline())[:MAX_REQUEST].strip()
                if request in (b"", b"status"):
                    body = await self._status_body()
                elif request == b"metrics" and self._metrics is not None:
                    body = (await self._metrics()).encode()
                else:
                    body = json.dumps({"error": f"unknown request {request[:40]!r}"}).encode()
                writer.write(body)
                await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


def _error_body(exc: Exception) -> bytes:
    return json.dumps({"error": f"status unavailable: {type(exc).__name__}: {exc}"}).encode()


def _answers(path: Path) -> bool:
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(0.5)
        sock.connect(str(path))
        return True
    return False
