"""One MQTT 3.1.1 CONNECT to test a broker, credentials and TLS, without paho.

``edge-agent doctor`` uses it. paho lives in :mod:`agent.north.link` only, and a
probe needs no more than two packets: CONNECT out, CONNACK back (then a
DISCONNECT). The TLS context mirrors the publisher's: the CA file or the
system CAs, an optional client certificate, host names checked unless
``tls.insecure``. The probe uses its own client id (``<client id>-doctor``), so
a running agent is not kicked off the broker by a session take-over.

:func:`reachable` is the publisher's cheaper check while it backs off: a TCP
connection opened and closed at once, no MQTT packet at all (docs/NORTH.md,
"Reconnects").
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ssl
import struct

from agent.north.options import MqttOptions, TlsOptions, closed_early, describe_connect_error

_CONNACK_CODES = {
    1: "the broker refused our protocol version (MQTT 3.1.1)",
    2: "the broker rejected the client id {client_id!r} (check mqtt.client_id)",
    3: "the broker is unavailable (it said so in its CONNACK)",
    4: "bad user name or password (check mqtt.username and the password)",
    5: "not authorised (check mqtt.username and the password)",
}


async def probe(options: MqttOptions, seconds: float) -> str | None:
    """Connect once within ``seconds``; None if the broker accepted us, else why not."""
    options = dataclasses.replace(options, connect_timeout=seconds)  # for the error sentences
    client_id = f"{options.client_id}-doctor"
    try:
        context = None if options.tls is None else tls_context(options.tls)
        async with asyncio.timeout(seconds):
            reader, writer = await asyncio.open_connection(
                options.host,
                options.port,
                ssl=context,
                server_hostname=options.host if context is not None else None,
            )
            try:
                writer.write(connect_packet(client_id, options.username, options.password))
                await writer.drain()
                connack = await reader.readexactly(4)
                if connack[3] == 0:
                    writer.write(b"\xe0\x00")  # DISCONNECT: a clean goodbye, no will
                    await writer.drain()
            finally:
                writer.close()
                with contextlib.suppress(OSError, ssl.SSLError):
                    await writer.wait_closed()
    except asyncio.IncompleteReadError:
        return closed_early("no CONNACK", options)
    except (OSError, ssl.SSLError, TimeoutError) as exc:
        return describe_connect_error(exc, options)
    return _connack_error(connack, client_id)


async def reachable(host: str, port: int, seconds: float) -> bool:
    """True if a TCP connection to ``host:port`` opens within ``seconds``; closed at once.

    No TLS handshake and no MQTT packet: the broker sees a connection that
    closes before it says anything (mosquitto logs it as a client closing its
    connection). Refused, unreachable, unresolvable or no answer in time: False.
    """
    try:
        async with asyncio.timeout(seconds):
            _, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


def _connack_error(connack: bytes, client_id: str) -> str | None:
    if connack[0] != 0x20:
        return f"the broker answered with packet type {connack[0] >> 4}, not CONNACK"
    code = connack[3]
    if code == 0:
        return None
    return _CONNACK_CODES.get(code, "the broker refused us (CONNACK code {code})").format(
        client_id=client_id, code=code
    )


def tls_context(tls: TlsOptions) -> ssl.SSLContext:
    """The client-side TLS context for ``tls`` (as the publisher sets up paho)."""
    context = ssl.create_default_context(cafile=None if tls.ca is None else str(tls.ca))
    if tls.cert is not None:
        context.load_cert_chain(str(tls.cert), None if tls.key is None else str(tls.key))
    if tls.insecure:
        context.check_hostname = False  # the certificate itself is still verified
    return context


def connect_packet(client_id: str, username: str | None, password: str | None) -> bytes:
    """An MQTT 3.1.1 CONNECT: clean session, keepalive 10 s, no will."""
    flags = 0x02
    payload = _string(client_id.encode())
    if username is not None:
        flags |= 0x80
        payload += _string(username.encode())
        if password is not None:
            flags |= 0x40
            payload += _string(password.encode())
    variable = _string(b"MQTT") + bytes([4, flags]) + struct.pack("!H", 10)
    body = variable + payload
    return b"\x10" + _remaining_length(len(body)) + body


def _string(data: bytes) -> bytes:
    return struct.pack("!H", len(data)) + data


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)
