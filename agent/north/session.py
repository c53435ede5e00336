"""What a destination's dialect does on one MQTT connection: the :class:`Session` protocol.

A destination is one MQTT connection and one dialect. The publisher
(:mod:`agent.north.publisher`) owns the window, the acks to the buffer and
the reconnects; a :class:`Session` owns what the dialect adds around the
data: the Last Will, the messages due right after CONNACK (births, gateway
connects, sub-device logins), the topics to subscribe to, the encoding of
committed batches into the cloud's packets, what an inbound message asks for
(a rebirth, a reply), and device online/offline messages.

``edge-json`` has no session: its stored payload is sent as it is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from agent.north.dialects.common import Batch, Credentials, Encoded, Outgoing, Packet, TagSpec
from drivers.base import Value

Dialect = Literal["edge-json", "sparkplug-b", "thingsboard", "alink", "iotda"]
DIALECTS: tuple[Dialect, ...] = ("edge-json", "sparkplug-b", "thingsboard", "alink", "iotda")

__all__ = [
    "DIALECTS",
    "Batch",
    "Credentials",
    "DeviceFacts",
    "Dialect",
    "Encoded",
    "Outgoing",
    "Packet",
    "Reaction",
    "ReplyVerdict",
    "Session",
    "TagSpec",
]


@dataclass(frozen=True)
class DeviceFacts:
    """What a dialect may say about a device besides its readings (births, attributes)."""

    device: str
    profile: str
    """``name@hash`` of the device's profile (ThingsBoard device type, Sparkplug property)."""
    vendor: str | None = None
    model: str | None = None
    tags: Sequence[TagSpec] = ()
    """Every tag the device reports, with its declared datatype and unit."""
    static: Mapping[str, Value] = field(default_factory=dict)
    """Further facts sent as attributes (agent version...)."""


@dataclass(frozen=True)
class Reaction:
    """What an inbound message asks of the publisher."""

    send: tuple[Outgoing, ...] = ()
    """Messages to publish now, in order, ahead of further data."""
    rebirth: bool = False
    """Send every ``on_connect`` message again before further data (Sparkplug rebirth)."""
    ready_changed: bool = False
    """:meth:`Session.ready` may have changed: the publisher checks it again."""
    note: str | None = None
    """A sentence for the destination's status (a refused post, a host gone offline)."""
    replies: tuple[tuple[str, ReplyVerdict], ...] = ()
    """Application replies to packets sent earlier, by :meth:`Session.reply_key`."""
    reconnect: bool = False
    """End this connection cleanly (:meth:`Session.goodbye`, DISCONNECT) and connect again.

    Sparkplug: an Edge Node leaves the broker when its primary host goes offline.
    What is unconfirmed is sent again on the next connection."""


ReplyVerdict = Literal["accepted", "refused", "retry"]
"""accepted: confirmed; refused: the cloud will never take it (counted, not sent again);
retry: not taken now (throttled, a fault): the packet and what follows are sent again."""


class Session(Protocol):
    """One destination's dialect state; reused across the connections of one publisher."""

    def credentials(self, now_ms: int) -> Credentials | None:
        """CONNECT client id, user name and password for a connection made now.

        None keeps the destination's configured ones. Alibaba and Huawei sign
        the connect time, so theirs are computed afresh before each CONNECT.
        """
        ...

    def will(self, now_ms: int) -> Outgoing | None:
        """The Last Will for the next CONNECT (called once before each connection).

        None: CONNECT without a Will (Alibaba and Huawei support none).
        """
        ...

    def subscriptions(self) -> Sequence[tuple[str, int]]:
        """Topic filters and QoS to subscribe to once connected (commands, replies, STATE)."""
        ...

    def limit(self, max_message_size: int) -> None:
        """The largest PUBLISH packet (fixed header, topic, payload) the broker takes now.

        Told before each connection: the destination's ``max_message_size``, or less
        once the broker showed a smaller limit. ``encode`` cuts its packets below it
        (and below the cloud's own limits); it never raises the session's own cap.
        """
        ...

    def on_connect(self, now_ms: int) -> Sequence[Outgoing]:
        """Messages to publish right after CONNACK, in order, before any batch."""
        ...

    def ready(self) -> bool:
        """Whether data may flow now (False while a Sparkplug primary host is offline)."""
        ...

    def encode(self, batches: Sequence[Batch], now_ms: int, *, historical: bool) -> Encoded:
        """The packets for ``batches`` (seq order), cut to the destination's limits.

        ``historical`` marks a backlog from an outage (Sparkplug ``is_historical``).
        A packet's ``done`` names the seqs whose last reading it carries: a seq is
        acknowledged to the buffer once that packet and every earlier one is confirmed.
        A packet that carries no readings (a DBIRTH, an attributes update) says so
        with ``Packet.data`` False: one too large for the broker is left out and
        reported, never a reason to hold the readings back.
        """
        ...

    def reply_key(self, packet: Packet) -> str | None:
        """The id the cloud's reply to ``packet`` will carry; None: its PUBACK confirms it."""
        ...

    def on_message(self, topic: str, payload: bytes, now_ms: int) -> Reaction:
        """What an inbound message on a subscribed topic asks for."""
        ...

    def device_state(self, device: str, online: bool, now_ms: int) -> Sequence[Outgoing]:
        """Messages saying a device stopped answering (or answers again)."""
        ...

    def goodbye(self, now_ms: int) -> Sequence[Outgoing]:
        """Messages to publish before a clean DISCONNECT (the Will is not sent then)."""
        ...
