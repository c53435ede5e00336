"""Publish buffered batches to an MQTT broker; a batch is deleted only after its PUBACK.

The SQLite buffer is the queue. The publisher reads pending batches in ``seq``
order, keeps at most ``max_inflight`` of them unacknowledged, and acks a batch
to the buffer (which deletes it) only once the broker's PUBACK for it arrived.
On any disconnect everything in flight is forgotten and the next connection
(a clean session, on a brand-new paho client) starts again from the buffer's
first pending batch. So per-device order holds across reconnects and restarts,
and a duplicate can only be a batch that was in flight when the link dropped.

paho-mqtt is driven from the asyncio loop, the way aiomqtt does it: the socket
is watched with ``loop.add_reader``/``add_writer`` and paho's ``loop_read``,
``loop_write`` and ``loop_misc`` run on the loop thread, so every paho callback
(``on_publish`` resolving a PUBACK future, ``on_connect``...) runs on the loop
too. No paho thread is started. Only the blocking TCP/TLS connect runs in an
executor thread, under our own timeout.

With ``qos=0`` a batch is acked once it is written to the socket: a batch
written just before the link dropped can be lost. QoS 1 is the default.

This is the only module that imports paho. The window and reconnect logic is
in :mod:`agent.north.publisher`, options and stats in :mod:`agent.north.options`
(all re-exported here).
"""

from __future__ import annotations

import array
import asyncio
import fcntl
import ssl
import termios
from collections.abc import Callable, Sequence
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.errors import PublishError
from agent.north.dialects.common import Credentials, Outgoing
from agent.north.options import (
    REFUSALS,
    BatchLike,
    BatchSource,
    LinkDown,
    MqttOptions,
    PublisherStats,
    TlsOptions,
    Unreachable,
    closed_early,
    describe_connect_error,
    missing_tls_file,
)
from agent.north.publisher import PublishLoop

__all__ = [
    "BatchLike",
    "BatchSource",
    "MqttOptions",
    "PublishError",
    "Publisher",
    "PublisherStats",
    "TlsOptions",
]


class _Link:
    """One paho client for one connection; thrown away when the connection ends."""

    def __init__(
        self,
        opts: MqttOptions,
        will: Outgoing | None,
        credentials: Credentials | None = None,
        on_message: Callable[[str, bytes], None] | None = None,
        side_messages: int = 2,
        *,
        packets_per_batch_vary: bool = False,
    ) -> None:
        self._opts = opts
        self._loop = asyncio.get_running_loop()
        self._on_message_cb = on_message
        self._subacks: dict[int, asyncio.Future[list[str]]] = {}
        self.ended: asyncio.Future[str] = self._loop.create_future()
        # a ReasonCode, or why the connection ended first (a result, not an exception:
        # nobody may be waiting any more, and an unretrieved exception would be logged)
        self._connack: asyncio.Future[ReasonCode | str] = self._loop.create_future()
        self._acks: dict[int, asyncio.Future[None]] = {}
        self._unsent = 0  # bytes in the kernel's send queue at the last look
        # clean session: the broker must not replay anything; the buffer decides what is resent
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=opts.client_id if credentials is None else credentials.client_id,
            clean_session=True,
            reconnect_on_failure=False,
        )
        # side messages (status, births, replies) may be in flight next to the data
        # window; beyond that paho refuses instead of queueing in RAM (edge-json). A
        # dialect's batch may take many packets: its queue is bounded by the window of
        # batches instead (their packets are about the stored batches' size), never by
        # a count that one wide device could exceed and stall the destination on
        c.max_inflight_messages_set(opts.max_inflight + side_messages)
        c.max_queued_messages_set(
            0 if packets_per_batch_vary else opts.max_inflight + side_messages
        )
        c.connect_timeout = opts.connect_timeout
        if credentials is not None:
            c.username_pw_set(credentials.username, credentials.password)
        elif opts.username is not None:
            c.username_pw_set(opts.username, opts.password)
        if opts.tls is not None:
            t = opts.tls
            missing = missing_tls_file(t)
            if missing is not None:  # ssl's own error names no file
                raise PublishError(missing)
            c.tls_set(
                ca_certs=None if t.ca is None else str(t.ca),
                certfile=None if t.cert is None else str(t.cert),
                keyfile=None if t.key is None else str(t.key),
            )
            if t.insecure:
                c.tls_insecure_set(True)
        if will is not None:
            c.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        c.on_subscribe = self._on_subscribe
        if on_message is not None:
            c.on_message = self._on_message
        self.client = c

    async def open(self) -> None:
        """Connect and wait for a successful CONNACK; raise :class:`PublishError`."""
        o = self._opts
        # paho's connect() blocks (DNS, TCP, TLS handshake): run it in a thread.
        # It writes CONNECT from that thread; the loop takes over once it returns.
        blocking = self._loop.run_in_executor(
            None, self.client.connect, o.host, o.port, o.keepalive_s
        )
        try:
            async with asyncio.timeout(o.connect_timeout):
                self._check_connected(await asyncio.shield(blocking))
                self._attach()
                reason = await asyncio.shield(self._connack)
        except TimeoutError:
            phase = "CONNACK" if blocking.done() else "TCP/TLS connect"
            kind = PublishError if blocking.done() else Unreachable
            raise kind(
                f"no answer from broker {o.host}:{o.port} within {o.connect_timeout:g} s "
                f"(waiting for {phase})"
            ) from None
        except (OSError, ValueError) as exc:
            # before any TCP connection (refused, no route, DNS): the backoff watches the port
            never_reached = isinstance(exc, OSError) and not isinstance(exc, ssl.SSLError)
            kind = Unreachable if never_reached else PublishError
            raise kind(describe_connect_error(exc, o)) from None
        finally:
            if not blocking.done():  # the thread still owns the socket: close it when it is done
                blocking.add_done_callback(self._abandoned)
        if isinstance(reason, str):
            raise PublishError(closed_early(reason, o))
        if reason.is_failure:
            text = REFUSALS.get(reason.getName(), reason.getName().lower())
            raise PublishError(f"broker refused the connection: {text}")

    def _check_connected(self, rc: MQTTErrorCode) -> None:
        """Raise :class:`PublishError` when paho's connect() failed without raising.

        paho swallows an SSL error while it writes CONNECT (a broker that refuses
        our client certificate alerts right after the handshake), closes the
        socket and only returns an error code. AGAIN is no failure: CONNECT is
        not fully written yet, and :meth:`_attach` lets the loop finish it.
        """
        ok = (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_AGAIN)
        if rc in ok and self.client.socket() is not None:
            return
        if rc in (*ok, MQTTErrorCode.MQTT_ERR_CONN_LOST):
            reason = "the connection to the broker was lost"
        else:
            reason = mqtt.error_string(rc)
        raise PublishError(closed_early(reason, self._opts))

    def _abandoned(self, blocking: asyncio.Future[Any]) -> None:
        if not blocking.cancelled():
            blocking.exception()  # retrieved: it was already reported as a timeout
        self.close("connect abandoned")

    def _attach(self) -> None:
        sock = self.client.socket()
        if sock is None:
            raise PublishError("the connection closed while it was being set up")
        c = self.client
        c.on_socket_close = self._on_socket_close
        c.on_socket_register_write = self._on_register_write
        c.on_socket_unregister_write = self._on_unregister_write
        self._loop.add_reader(sock, self._on_readable)
        if c.want_write():  # CONNECT not fully written by the thread
            self._loop.add_writer(sock, self._on_writable)

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> asyncio.Future[None]:
        """Send one message; the future resolves on PUBACK (QoS 1) or once written (QoS 0)."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            reason = f"publish failed: {mqtt.error_string(info.rc)}"
            self.abort(reason)
            raise LinkDown(reason)
        fut: asyncio.Future[None] = self._loop.create_future()
        self._acks[info.mid] = fut
        return fut

    async def subscribe(self, topics: Sequence[tuple[str, int]]) -> None:
        """Subscribe and wait for the SUBACK; :class:`PublishError` if a filter is refused.

        Raise :class:`LinkDown` if the link ends first. Waits at most
        ``connect_timeout``: a broker that never answers is a failed connection.
        """
        if not topics:
            return
        rc, mid = self.client.subscribe([(t, q) for t, q in topics])
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            reason = f"subscribe failed: {mqtt.error_string(rc)}"
            self.abort(reason)
            raise LinkDown(reason)
        fut: asyncio.Future[list[str]] = self._loop.create_future()
        self._subacks[mid] = fut
        o = self._opts
        try:
            async with asyncio.timeout(o.connect_timeout):
                waiting: list[asyncio.Future[Any]] = [fut, self.ended]
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        except TimeoutError:
            raise PublishError(
                f"no SUBACK from broker {o.host}:{o.port} within {o.connect_timeout:g} s"
            ) from None
        finally:
            self._subacks.pop(mid, None)
        if not fut.done():
            raise LinkDown(self.ended.result())
        refused = [t for (t, _), code in zip(topics, fut.result(), strict=False) if code]
        if refused:
            raise PublishError(
                f"broker {o.host}:{o.port} refused the subscription to {', '.join(refused)} "
                f"(an ACL on these topics?)"
            )

    def misc(self) -> None:
        """Keepalive pings and paho's own PINGRESP timeout."""
        if self.client.socket() is not None:
            self.client.loop_misc()

    def uplink_moved(self) -> bool:
        """True if the kernel's send queue shrank since the last call: the peer takes bytes.

        A slow uplink holds a PUBACK back for long while bytes still leave; this
        tells it from a dead link, where the queue stays put (Linux SIOCOUTQ).
        """
        sock = self.client.socket()
        if sock is None:
            return False
        out = array.array("i", [0])
        try:
            fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, out)
        except (OSError, ValueError):
            return False
        before, self._unsent = self._unsent, out[0]
        return out[0] < before

    async def disconnect(self) -> None:
        """Send DISCONNECT (so the broker drops the Last Will) and wait until it is written."""
        self.client.disconnect()
        await asyncio.shield(self.ended)

    def abort(self, reason: str) -> None:
        """End the link from our side (no DISCONNECT: the broker publishes the Last Will)."""
        self.close(reason)

    def close(self, reason: str = "closed") -> None:
        """Drop the socket without ceremony; idempotent."""
        c = self.client
        sock = c.socket()
        # detach first: paho's own later cleanup must not call back into a stale loop
        c.on_socket_close = c.on_socket_register_write = c.on_socket_unregister_write = None
        c.on_disconnect = None
        if sock is not None and sock.fileno() >= 0:
            self._loop.remove_reader(sock)
            self._loop.remove_writer(sock)
            sock.close()
        self._end(reason)

    def _end(self, reason: str) -> None:
        if not self.ended.done():
            self.ended.set_result(reason)
        if not self._connack.done():
            self._connack.set_result(reason)
        for fut in self._acks.values():
            if not fut.done():
                fut.set_exception(LinkDown(reason))
        self._acks.clear()
        self._on_message_cb = None  # nothing more is delivered from an ended link

    # --- paho callbacks and socket events, all on the loop thread

    def _on_readable(self) -> None:
        sock = self.client.socket()
        try:
            rc = self.client.loop_read()
            # TLS may hold decrypted bytes the selector cannot see
            for _ in range(1000):
                if rc or sock is None or not getattr(sock, "pending", lambda: 0)():
                    break
                rc = self.client.loop_read()
        except Exception as exc:  # any failure here ends this link only
            self.abort(f"connection error: {exc}")
            return
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._end(f"connection lost: {mqtt.error_string(rc)}")

    def _on_writable(self) -> None:
        try:
            self.client.loop_write()
        except Exception as exc:
            self.abort(f"connection error: {exc}")

    def _on_register_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._loop.add_writer(sock, self._on_writable)

    def _on_unregister_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._loop.remove_writer(sock)

    def _on_socket_close(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._loop.remove_reader(sock)
        self._loop.remove_writer(sock)

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        if not self._connack.done():
            self._connack.set_result(reason)

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        props: Any,
    ) -> None:
        name = reason.getName()
        if flags.is_disconnect_packet_from_server:
            self._end(f"the broker closed the connection ({name})")
        else:
            detail = "" if name == "Unspecified error" else f" ({name.lower()})"
            self._end(f"the connection to the broker was lost{detail}")

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reasons: list[ReasonCode],
        props: Any,
    ) -> None:
        fut = self._subacks.get(mid)
        if fut is not None and not fut.done():
            # one entry per filter: empty when granted, the refusal's name otherwise
            fut.set_result([r.getName() if r.is_failure else "" for r in reasons])

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        callback = self._on_message_cb
        if callback is not None:
            # handled on the loop after paho's read returns: a reaction may publish or
            # end this link, which must not happen inside paho's own read
            self._loop.call_soon(callback, message.topic, bytes(message.payload))

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason: ReasonCode, props: Properties
    ) -> None:
        fut = self._acks.pop(mid, None)
        if fut is None or fut.done():
            return
        if reason.is_failure:  # MQTT 5 brokers can refuse a single message
            fut.set_exception(LinkDown(f"broker rejected a message: {reason.getName()}"))
        else:
            fut.set_result(None)


class Publisher(PublishLoop):
    """Send every buffered batch to the broker, in ``seq`` order, at least once.

    ``await run()`` connects, publishes and reconnects (jittered exponential
    backoff between ``reconnect_min`` and ``reconnect_max``, reset only by a
    link that stayed up; see :mod:`agent.north.health`) until cancelled or
    until :meth:`stop` ends it. Broker failures never raise out of ``run``:
    they show in :attr:`stats` (``last_error`` is a sentence for the status
    page) while the buffer keeps filling. ``run`` raises only if the batch
    source itself fails. ``stop(drain_timeout)`` publishes what is pending
    within the timeout, publishes the retained "offline" status and
    disconnects cleanly; cancelling ``run`` instead drops the socket, and the
    broker publishes the Last Will ("offline", retained).

    Build it with ``Publisher(options, source, agent_id)`` for edge-json, or
    ``Publisher(options, source, agent_id, session)`` to speak a dialect through
    a :class:`agent.north.session.Session` (see :mod:`agent.north.publisher`).
    """

    def _make_link(
        self,
        will: Outgoing | None,
        credentials: Credentials | None = None,
        on_message: Callable[[str, bytes], None] | None = None,
    ) -> _Link:
        # a dialect's births, device messages and replies come on top of the data window
        side = 2 if self._session is None else 2 + 4 * self._o.max_inflight + 1024
        return _Link(
            self._o, will, credentials, on_message, side,
            packets_per_batch_vary=self._session is not None,
        )  # fmt: skip
