"""Options, statistics and interfaces of the MQTT publisher (no paho here).

Import them from :mod:`agent.north.link`; they live apart only to keep that
module readable. The connect-error sentences are here too: they end up in
``stats.last_error`` and on the status page, so they say what to check.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Protocol

from agent.errors import PublishError

REFUSALS = {
    "Bad user name or password": "bad user name or password (check mqtt.username/password)",
    "Not authorized": "not authorised (check mqtt.username/password)",
    "Client identifier not valid": "client id rejected (check mqtt.client_id)",
    "Server unavailable": "the broker is unavailable",
    "Unsupported protocol version": "unsupported MQTT protocol version",
}


class LinkDown(Exception):
    """A broker connection is over; carries the reason (internal to the publisher)."""


class Unreachable(PublishError):
    """A connection attempt that never reached the broker: no TCP connection opened.

    Refused, no route, a name that does not resolve, or no TCP answer in time.
    Only after such a failure does the publisher's backoff watch the broker's
    port (:func:`agent.north.probe.reachable`): every other failure reached a
    listener, so there is nothing to watch and the whole backoff is slept.
    """


class Link(Protocol):
    """One broker connection, as the publishing loop drives it (``agent.north.link._Link``)."""

    @property
    def ended(self) -> asyncio.Future[str]: ...  # resolves with the reason the link ended

    async def open(self) -> None: ...  # connect + CONNACK, or PublishError
    # the future resolves on PUBACK (QoS 1) or once written (QoS 0); LinkDown if it ended
    def publish(
        self, topic: str, payload: bytes, qos: int, retain: bool
    ) -> asyncio.Future[None]: ...
    # subscribe and wait for the SUBACK (PublishError if refused, LinkDown if the link ends)
    async def subscribe(self, topics: Sequence[tuple[str, int]]) -> None: ...
    def misc(self) -> None: ...  # keepalive work, called every tick
    def uplink_moved(self) -> bool: ...  # the kernel's send queue shrank since the last call
    async def disconnect(self) -> None: ...  # clean DISCONNECT
    def abort(self, reason: str) -> None: ...  # drop without DISCONNECT (the will fires)
    def close(self, reason: str = "closed") -> None: ...  # release everything; idempotent


class BatchLike(Protocol):
    """One buffered batch, as the buffer hands it out."""

    @property
    def seq(self) -> int: ...
    @property
    def device(self) -> str: ...
    @property
    def created_ms(self) -> int: ...
    @property
    def n_values(self) -> int: ...
    @property
    def payload(self) -> bytes: ...  # the full JSON message


class BatchSource(Protocol):
    """What the publisher needs from the buffer (``agent.buffer.Buffer``)."""

    @property
    def last_seq(self) -> int: ...  # highest committed seq

    # the payload size above which put() splits a batch (None: no limit); lowered when the
    # broker shows a smaller limit than configured
    max_message_bytes: int | None

    # the buffer's own bounded wait: True once last_seq > after_seq
    async def wait_committed(self, after_seq: int, timeout: float | None = None) -> bool: ...  # noqa: ASYNC109
    async def fetch(self, after_seq: int, limit: int) -> Sequence[BatchLike]: ...
    async def first_pending_seq(self) -> int | None: ...
    def ack(self, seqs: Iterable[int]) -> None: ...
    # acked, not yet durably deleted (re-sent after a crash); flush() commits them now
    def unsynced_acks(self) -> int: ...
    async def flush(self) -> None: ...
    # queue a committed batch again in pieces of at most limit bytes, drop it; readings
    # refused. The pieces keep created_ms when given (the original row's), else stamped now.
    def resplit(
        self, seq: int, device: str, payload: bytes, limit: int, *, created_ms: int | None = None
    ) -> int: ...


@dataclass(frozen=True, kw_only=True)
class TlsOptions:
    """TLS to the broker. ``insecure`` skips the host name check only; never by default."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    insecure: bool = False


@dataclass(frozen=True, kw_only=True)
class MqttOptions:
    """Broker connection and publishing options. ``repr`` masks the password."""

    host: str
    port: int = 1883
    client_id: str
    username: str | None = None
    password: str | None = None
    tls: TlsOptions | None = None
    keepalive: float = 30
    topic: str = "edge/{agent}/{device}"
    status_topic: str = "edge/{agent}/status"
    events_topic: str = "edge/{agent}/events/{source}"  # events messages (docs/EVENTS.md)
    qos: int = 1
    max_inflight: int = 100
    reconnect_min: float = 0.5
    reconnect_max: float = 30.0
    connect_timeout: float = 10
    max_message_size: int = 65536  # the largest PUBLISH packet the broker accepts

    def __post_init__(self) -> None:
        if self.qos not in (0, 1):
            raise ValueError(f"qos must be 0 or 1, not {self.qos}")
        if self.max_inflight < 1:
            raise ValueError("max_inflight must be at least 1")
        if not 0 < self.reconnect_min <= self.reconnect_max:
            raise ValueError("need 0 < reconnect_min <= reconnect_max")
        if self.keepalive <= 0 or self.connect_timeout <= 0:
            raise ValueError("keepalive and connect_timeout must be positive")
        if not MIN_MESSAGE_SIZE <= self.max_message_size <= MAX_PACKET:
            raise ValueError(f"max_message_size must be {MIN_MESSAGE_SIZE}..{MAX_PACKET} bytes")

    def __repr__(self) -> str:
        shown = {f.name: getattr(self, f.name) for f in fields(self)}
        if shown["password"] is not None:
            shown["password"] = "***"  # noqa: S105 - the mask, not a password
        return "MqttOptions(" + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")"

    @property
    def keepalive_s(self) -> int:
        """The keepalive paho sends in CONNECT (whole seconds, at least 1)."""
        return max(1, round(self.keepalive))


@dataclass
class PublisherStats:
    """Counters for status and metrics. ``messages_published`` counts confirmed batches.

    With edge-json a batch is one packet, confirmed by its PUBACK. With a dialect
    session a batch is confirmed once the packet finishing it (and every earlier
    one) has its PUBACK and, where the cloud replies, its reply; ``packets_published``
    counts the dialect's data packets that got their PUBACK.
    """

    connected: bool = False
    last_error: str | None = None
    messages_published: int = 0
    values_published: int = 0
    reconnects: int = 0
    inflight: int = 0
    last_publish_ms: int | None = None
    early_disconnects: int = 0  # connections that ended soon after the broker accepted them
    oversized_split: int = 0  # stored batches cut again because they were too large
    packets_published: int = 0  # a dialect's data packets PUBACKed (edge-json: not counted)
    refused_by_cloud: int = 0  # values in packets the cloud replied it will never take
    refused_by_dialect: int = 0  # readings the dialect cannot carry (a value out of width...)
    oversized_skipped: int = 0  # a dialect's packets without readings (births) above the limit
    dialect_errors: int = 0  # a dialect session's calls that raised (each dropped the link)
    dialect: str = "edge-json"


MIN_MESSAGE_SIZE = 1024  # below this even the status messages may not fit
MAX_PACKET = 268_435_455  # MQTT's own limit (remaining length of 4 bytes)


def packet_size(topic: str, payload_len: int) -> int:
    """Bytes of a QoS 1 PUBLISH packet: fixed header, topic, packet id, payload."""
    rest = 2 + len(topic.encode()) + 2 + payload_len
    return 1 + (1 if rest < 128 else 2 if rest < 16384 else 3 if rest < 2_097_152 else 4) + rest


def payload_budget(max_message_size: int, topic: str) -> int:
    """The largest payload whose PUBLISH on ``topic`` stays within ``max_message_size``."""
    return max_message_size - (1 + 4 + 2 + len(topic.encode()) + 2)


def closed_early(reason: str, o: MqttOptions) -> str:
    """A sentence for a connection that ended before its CONNACK."""
    if o.tls is not None:
        hint = " (is the client certificate accepted? check mqtt.tls.cert/key)"
    else:
        hint = " (does the port expect TLS? then set mqtt.tls)"
    detail = "" if reason.startswith("the connection to the broker was lost") else f": {reason}"
    return f"broker {o.host}:{o.port} closed the connection before accepting it{detail}{hint}"


def missing_tls_file(tls: TlsOptions) -> str | None:
    """The first configured TLS file that does not exist, as a sentence, or None."""
    for key, path in (("ca", tls.ca), ("cert", tls.cert), ("key", tls.key)):
        if path is not None and not path.is_file():
            return f"cannot read mqtt.tls.{key}: {path} does not exist or is not a file"
    return None


def describe_connect_error(exc: BaseException, o: MqttOptions) -> str:
    """A sentence for ``last_error`` from an exception raised while connecting."""
    where = f"broker {o.host}:{o.port}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            f"TLS handshake with {where} failed: its certificate was not accepted "
            f"({exc.verify_message}); check mqtt.tls.ca and the broker host name"
        )
    if isinstance(exc, FileNotFoundError):
        return f"cannot read a TLS file (check mqtt.tls): {exc}"
    for kind, text in _CONNECT_ERRORS:
        if isinstance(exc, kind):
            return text.format(where=where, host=o.host, t=o.connect_timeout, exc=exc)
    return f"cannot connect to {where}: {exc}"


_CONNECT_ERRORS: list[tuple[type[BaseException], str]] = [
    (ssl.CertificateError, "TLS handshake with {where} failed ({exc}); check mqtt.tls"),
    (ssl.SSLError, "TLS handshake with {where} failed ({exc}); check mqtt.tls"),
    (
        ConnectionRefusedError,
        "cannot connect to {where}: connection refused (is it running, is the port right?)",
    ),
    (socket.gaierror, "cannot resolve broker host {host!r}: {exc.strerror}"),
    (TimeoutError, "no answer from {where} within {t:g} s"),
    (OSError, "cannot connect to {where}: {exc}"),
]


def check_topic(topic: str) -> None:
    """Refuse an empty topic or one with wildcards (publishing needs a plain name)."""
    if not topic or "+" in topic or "#" in topic:
        raise ValueError(f"MQTT topic {topic!r} is empty or holds a wildcard (+ or #)")
