"""A small Modbus TCP front proxy that injects faults on the wire.

Clients connect to the proxy; healthy requests are forwarded unchanged to the
pymodbus server behind it and its replies are passed back. When the addressed
unit has a fault switched on, the proxy delays the reply, answers with an
exception frame, answers nothing, answers random bytes, closes the client's
connection, answers under a wrong transaction or unit id, trickles the reply
in 1-7 byte pieces, or sends half of it and resets the connection - exactly
what a misbehaving device does to a real client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import struct
from collections import Counter
from collections.abc import Mapping

from simulators.faults import Fault, FaultMode, FaultSwitch, garbage, tcp_exception_frame

log = logging.getLogger(__name__)

_BACKEND_TIMEOUT_S = 10.0
_GATEWAY_TARGET_FAILED = 0x0B  # what a gateway answers for a unit nobody serves


class TcpFaultProxy:
    """Listen on ``host:port`` (0 = any free port) and forward to ``backend_port``."""

    def __init__(
        self,
        backend_port: int,
        faults: Mapping[int, FaultSwitch],
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.backend_port = backend_port
        self.faults = faults
        self.host = host
        self.requested_port = port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self.function_codes_seen: Counter[int] = Counter()
        """How many requests arrived per Modbus function code (read-only checks use it)."""
        for switch in faults.values():
            switch.subscribe(self._on_fault)

    async def start(self) -> None:
        """Start listening; ``port`` holds the bound port afterwards."""
        self._server = await asyncio.start_server(self._handle, self.host, self.requested_port)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Stop listening and close every client connection."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        self.drop_clients()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def drop_clients(self) -> None:
        """Close every open client connection now."""
        for writer in list(self._clients):
            writer.close()

    def _on_fault(self, fault: Fault) -> None:
        if fault.mode is FaultMode.DROP:
            self.drop_clients()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self._clients.add(writer)
        backend: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            while True:
                request = await _read_frame(reader)
                if request is None:
                    break
                self.function_codes_seen[request[7]] += 1
                reply, backend = await self._answer(request, backend)
                if reply is None:
                    continue
                if reply == b"":
                    break  # drop: close the connection
                if not await self._send(writer, reply, request[6]):
                    break
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            pass  # the client or the backend went away; close this connection
        except asyncio.CancelledError:
            # Only close() cancels handlers. asyncio.start_server's done-callback (3.11)
            # calls task.exception() and would report a cancelled handler as an error.
            if not self._closing:
                raise
        finally:
            self._clients.discard(writer)
            writer.close()
            if backend is not None:
                backend[1].close()
            if task is not None:
                self._tasks.discard(task)

    async def _send(self, writer: asyncio.StreamWriter, reply: bytes, unit: int) -> bool:
        """Write ``reply`` as the unit's fault says; False when the connection was reset."""
        switch = self.faults.get(unit)
        mode = FaultMode.NONE if switch is None else switch.mode
        if mode is FaultMode.RESET:
            writer.write(reply[: max(1, len(reply) // 2)])
            await writer.drain()
            sock = writer.get_extra_info("socket")
            if sock is not None:  # linger 0: close with RST, as a crashing device does
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return False
        if mode is FaultMode.SPLIT:
            i = 0
            while i < len(reply):
                n = random.randint(1, 7)
                writer.write(reply[i : i + n])
                await writer.drain()
                await asyncio.sleep(0.002)  # separate TCP segments
                i += n
            return True
        writer.write(reply)
        await writer.drain()
        return True

    async def _answer(
        self,
        request: bytes,
        backend: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None,
    ) -> tuple[bytes | None, tuple[asyncio.StreamReader, asyncio.StreamWriter] | None]:
        """The bytes to send back (None = nothing, b"" = close) and the backend link."""
        tid, unit, function = int.from_bytes(request[:2], "big"), request[6], request[7]
        switch = self.faults.get(unit)
        if switch is None:
            return tcp_exception_frame(tid, unit, function, _GATEWAY_TARGET_FAILED), backend
        fault = switch.fault
        if fault.mode is FaultMode.DROP:
            return b"", backend
        if fault.mode is FaultMode.SILENT:
            return None, backend
        if fault.mode is FaultMode.EXCEPTION:
            return tcp_exception_frame(tid, unit, function, fault.exception_code), backend
        if fault.mode is FaultMode.GARBAGE:
            return garbage(random.randint(5, 20)), backend
        if fault.mode is FaultMode.SLOW:
            await asyncio.sleep(fault.delay_s)
        if backend is None:
            backend = await asyncio.open_connection("127.0.0.1", self.backend_port)
        backend[1].write(request)
        async with asyncio.timeout(_BACKEND_TIMEOUT_S):
            await backend[1].drain()
            reply = await _read_frame(backend[0])
        if reply is None:
            raise ConnectionResetError("simulator backend closed the connection")
        if fault.mode is FaultMode.WRONG_TID:
            reply = ((tid + 1) & 0xFFFF).to_bytes(2, "big") + reply[2:]
        elif fault.mode is FaultMode.WRONG_UNIT:
            reply = reply[:6] + bytes([(unit + 1) & 0xFF]) + reply[7:]
        return reply, backend


async def _read_frame(reader: asyncio.StreamReader) -> bytes | None:
    """One MBAP frame, or None at a clean end of stream or on a nonsense header."""
    with contextlib.suppress(asyncio.IncompleteReadError):
        header = await reader.readexactly(7)
        length = int.from_bytes(header[4:6], "big")
        if not 2 <= length <= 254:
            log.debug("closing a connection that sent an MBAP length of %d", length)
            return None
        return header + await reader.readexactly(length - 1)
    return None
