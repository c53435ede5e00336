"""Where the metrics go: a loopback HTTP endpoint, and an optional summary on the broker.

The HTTP responder is deliberately tiny (no framework): it reads one request
head of at most :data:`MAX_HEAD` bytes within :data:`READ_TIMEOUT_S`, answers
``GET /metrics`` with the Prometheus text, 404 for any other path, 405 for any
other method, and closes the connection. It binds only the loopback address
the config names (the config refuses any other), and only when asked: by
default the agent listens on no network port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from agent.runtime.metrics import CONTENT_TYPE, MetricsState, render_prometheus, summary
from agent.site.models import MetricsSection, split_listen

log = logging.getLogger(__name__)

MAX_HEAD = 8192
READ_TIMEOUT_S = 5.0
MAX_CONNECTIONS = 8
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}

Render = Callable[[], Awaitable[str]]
StateSource = Callable[[], Awaitable[MetricsState]]
SideSend = Callable[[str, bytes], bool]


class MetricsHttpServer:
    """Serves ``GET /metrics`` on one loopback address. ``port=0`` picks a free port."""

    def __init__(self, host: str, port: int, render: Render) -> None:
        self.host = host
        self._port = port
        self._render = render
        self._server: asyncio.Server | None = None
        self._busy = 0

    @property
    def port(self) -> int:
        """The bound port (the chosen one when started with port 0)."""
        if self._server is None or not self._server.sockets:
            return self._port
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        """Bind and listen; ``OSError`` if the address is taken."""
        self._server = await asyncio.start_server(
            self._serve, self.host, self._port, limit=MAX_HEAD, reuse_address=True
        )

    async def close(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._busy += 1
        try:
            if self._busy > MAX_CONNECTIONS:
                await _respond(writer, 503, "too many connections\n")
                return
            async with asyncio.timeout(READ_TIMEOUT_S):
                status, body = await self._answer(reader)
                await _respond(writer, status, body)
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._busy -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader) -> tuple[int, str]:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            return 431, "request head too large\n"
        parts = head.split(b"\r\n", 1)[0].split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            return 400, "bad request line\n"
        method, target = parts[0], parts[1].split(b"?", 1)[0]
        if target != b"/metrics":
            return 404, "not found: the metrics are at /metrics\n"
        if method != b"GET":
            return 405, "only GET is served\n"
        try:
            return 200, await self._render()
        except Exception as exc:  # the buffer closing, say: a scrape must not kill the agent
            log.debug("metrics scrape failed: %s", exc)
            return 500, f"metrics unavailable: {exc}\n"


async def _respond(writer: asyncio.StreamWriter, status: int, body: str) -> None:
    data = body.encode()
    kind = CONTENT_TYPE if status == 200 else "text/plain; charset=utf-8"
    allow = "Allow: GET\r\n" if status == 405 else ""
    head = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {kind}\r\n"
        f"Content-Length: {len(data)}\r\n{allow}Connection: close\r\n\r\n"
    )
    writer.write(head.encode() + data)
    await writer.drain()


async def publish_summaries(
    interval: float, topic: str, state: StateSource, send: SideSend
) -> None:
    """Every ``interval`` seconds publish the JSON summary with ``send``; until cancelled.

    Metrics are not data: a summary that cannot be sent now (broker down, the
    buffer busy closing) is skipped, never queued.
    """
    while True:
        await asyncio.sleep(interval)
        try:
            payload = orjson.dumps(summary(await state()))
        except Exception as exc:  # a skipped summary is no fault of the pipeline
            log.debug("metrics summary skipped: %s", exc)
            continue
        if not send(topic, payload):
            log.debug("metrics summary skipped: not connected to the broker")


class MetricsService:
    """The metrics of one agent: text on demand, the endpoint and the publishing loop.

    ``start()``/``close()`` open and close the HTTP endpoint when ``listen`` is
    set; ``run()`` publishes summaries when ``publish_interval`` is set and
    otherwise returns at once.
    """

    def __init__(
        self, settings: MetricsSection, agent_id: str, state: StateSource, send: SideSend
    ) -> None:
        self.settings = settings
        self._state = state
        self._send = send
        self.topic = settings.topic.format(agent=agent_id)
        self.http: MetricsHttpServer | None = None
        if settings.listen is not None:
            host, port = split_listen(settings.listen)
            self.http = MetricsHttpServer(host, port, self.text)

    async def text(self) -> str:
        """The Prometheus text of the agent right now."""
        return render_prometheus(await self._state())

    async def start(self) -> None:
        """Open the HTTP endpoint, if configured."""
        if self.http is not None:
            try:
                await self.http.start()
            except OSError as exc:
                reason = exc.strerror or str(exc)
                raise OSError(
                    exc.errno, f"cannot serve metrics.listen {self.settings.listen}: {reason}"
                ) from exc
            log.info("metrics served on http://%s/metrics", self.settings.listen)

    async def close(self) -> None:
        """Close the HTTP endpoint."""
        if self.http is not None:
            await self.http.close()

    async def run(self) -> None:
        """Publish summaries until cancelled, if configured."""
        interval = self.settings.publish_interval
        if interval is not None:
            await publish_summaries(interval, self.topic, self._state, self._send)

    def describe(self) -> dict[str, Any]:
        """The metrics part of the status document."""
        return {
            "listen": None if self.http is None else f"{self.http.host}:{self.http.port}",
            "publish_interval_s": self.settings.publish_interval,
            "topic": self.topic if self.settings.publish_interval is not None else None,
        }
