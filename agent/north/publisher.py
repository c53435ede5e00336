"""The publishing window and the connection lifecycle, apart from any MQTT library.

:class:`agent.north.link.Publisher` plugs paho into :class:`PublishLoop`; this
module holds what does not touch the wire: the in-flight window in ``seq``
order, acks to the buffer, reconnect backoff, dead-link detection, drain on
stop, and the one-warning/one-info logging of the broker link.

Without a session (edge-json) each stored payload is one PUBLISH on
``mqtt.topic`` (an events message on ``mqtt.events_topic``, docs/EVENTS.md),
acked after its PUBACK; the retained status message is the
birth and the Last Will.

With a :class:`agent.north.session.Session` the publisher speaks the session's
dialect and keeps everything else. The contract, per connection:

1. before CONNECT: ``credentials(now)`` (None keeps the configured ones) and
   ``will(now)``, the Last Will; no edge-json status messages at all.
2. after CONNACK: SUBSCRIBE to ``subscriptions()`` and wait for the SUBACK, so
   no reply or command is missed; a refused filter fails the connection.
3. nothing but inbound handling while ``ready()`` is False (checked again on
   ``Reaction.ready_changed``); once ready, ``on_connect(now)`` is published in
   order, then data.
4. data: committed batches in seq order (window ``max_inflight`` seqs, as
   edge-json), each stored payload decoded into a
   :class:`~agent.north.dialects.common.Batch` and given to ``encode`` in runs:
   ``historical=True`` for batches committed before this connection started
   (a backlog). Packets are published in order at ``mqtt.qos``. A seq is
   acknowledged to the buffer once the packet naming it in ``done`` and every
   earlier packet are confirmed: PUBACK, and the cloud's reply when
   ``reply_key(packet)`` is not None. Replies come back as
   ``Reaction.replies``: ``accepted`` confirms; ``refused`` confirms and counts
   the values of the packet's finished batches in ``stats.refused_by_cloud``;
   ``retry`` drops the link, so everything unconfirmed is sent again after the
   backoff. A reply missing for 2 x keepalive after the PUBACK drops the link
   like a missing PUBACK. ``Encoded.idle`` seqs are acked at once;
   ``Encoded.refused`` readings are counted in ``stats.refused_by_dialect`` and
   logged once (then at debug).
5. inbound: ``on_message`` -> ``Reaction``: ``send`` published at once,
   ``rebirth`` publishes ``on_connect`` again before further data, ``note``
   goes to ``stats.last_error`` and the log, ``reconnect`` ends the connection
   cleanly and connects again at once.
6. :meth:`PublishLoop.device_state` asks ``device_state`` and publishes its
   messages on the current link, after what was already sent; with no link
   (or before ``on_connect`` went out) they are dropped: the session keeps the
   state and its next ``on_connect`` says it.
7. a clean stop publishes ``goodbye(now)``, then DISCONNECT.

Reconnects: after a failure the jittered exponential backoff of
:meth:`PublishLoop._backoff` (reset only by a link that stayed up, see
:mod:`agent.north.health`); while it sleeps after a broker that seems gone,
its port is watched with a TCP connect once a second
(:func:`agent.north.probe.reachable`), and the sleep ends, after a full-jitter
pause, once the port answers again (:meth:`PublishLoop._back_off`, the one
mechanism; docs/NORTH.md, "Reconnects"). A port that answers all along does
not shorten a sleep: a broker that refuses us sees the backoff alone.

Faults: a session call that raises (a dialect bug) never ends :meth:`PublishLoop.run`:
it is logged with its traceback (once per call, then at debug), counted in
``dialect_errors`` with ``last_error``, and the link is dropped; the next
connection, after the backoff, starts again from ``on_connect``. A batch whose
``encode`` raises :data:`POISON_STRIKES` times in a row (batches near a failure
are encoded one at a time, so the failure names one) is refused: counted in
``refused_by_dialect`` and acknowledged, so it cannot stall the destination.

Sizes: before each CONNECT the session is told the broker's limit
(``limit(max_message_size)``: ``mqtt.max_message_size``, lowered when the
broker shows a smaller one), and cuts its packets below it and the cloud's
own limits (``encode``). A data packet above the limit is still never
published: the run is encoded again in halves (fewer batches per encode); a
single batch still too large is queued again by the buffer in halves of its
readings under new seqs, with its age (``oversized_split``). Each time the
session's ``on_connect`` is sent again before the next data, since its state
(a Sparkplug seq, a device born) moved on for packets that did not go out. A
batch of one reading cannot be cut: it is refused, counted in
``refused_by_dialect`` with ``last_error`` saying so, and logged; never
dropped silently. A packet without readings (``Packet.data`` False: a DBIRTH,
attributes) or a birth message above the limit is left out, counted in
``oversized_skipped`` with ``last_error`` and a warning: it never holds the
readings back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from functools import partial

import orjson

from agent.errors import PublishError, StorageError
from agent.message import decode_message, is_events
from agent.north.dialects.common import Batch, Credentials, Encoded, Outgoing, Packet
from agent.north.facts import events_batch, halves
from agent.north.health import STABLE_S, LinkEnd, LinkHealth
from agent.north.options import (
    BatchLike,
    BatchSource,
    Link,
    LinkDown,
    MqttOptions,
    PublisherStats,
    Unreachable,
    check_topic,
    describe_connect_error,
    packet_size,
    payload_budget,
)
from agent.north.probe import reachable
from agent.north.session import Reaction, ReplyVerdict, Session
from drivers.base import Reading, now_ms

__all__ = ["PublishLoop"]

log = logging.getLogger("agent.north.link")  # one logger name for the whole publisher

_TICK_S = 0.2  # how often keepalive and PUBACK stalls are checked
_WATCH_S = 1.0  # backing off from an unreachable broker: how often its port is tried
_WATCH_FROM_S = 2.0  # backoffs up to this long are slept without watching the port
_GOODBYE_TIMEOUT_S = 3.0  # offline status + DISCONNECT on a clean stop


@dataclass(slots=True)
class _InFlight:
    seq: int
    future: asyncio.Future[None]
    sent: float
    size: int  # bytes of the PUBLISH packet


@dataclass(slots=True)
class _Sent:
    """One data packet of a dialect session, until it is confirmed."""

    first_seq: int  # the oldest batch it may carry (what health names at a link's end)
    topic: str
    future: asyncio.Future[None]
    sent: float
    size: int
    done: tuple[int, ...]
    values: int  # values of the batches it finishes
    key: str | None  # the reply that confirms it, besides its PUBACK
    acked_at: float | None = None  # its PUBACK, monotonic
    verdict: ReplyVerdict | None = None

    @property
    def confirmed(self) -> bool:
        return self.acked_at is not None and (self.key is None or self.verdict is not None)


_NOTES_KEPT = 64  # distinct notes logged at warning before they go to debug
POISON_STRIKES = 3  # encode failures in a row on one batch before it is refused
_RECONNECT = "the dialect asked for a new connection"
_UNREADY_DOUBLINGS = 6  # a session left unready waits at most 64 x 2 x keepalive


class PublishLoop:
    """Everything of :class:`agent.north.link.Publisher` but the wire (``_make_link``)."""

    def __init__(
        self,
        options: MqttOptions,
        source: BatchSource,
        agent_id: str,
        session: Session | None = None,
        *,
        dialect: str | None = None,
    ) -> None:
        self.stats = PublisherStats()
        self.stats.dialect = dialect or (
            "edge-json" if session is None else str(getattr(session, "dialect", "session"))
        )
        self._session = session
        self._o = options
        self._source = source
        self._agent = agent_id
        self._status_topic = options.status_topic.format(agent=agent_id)
        check_topic(options.topic.format(agent=agent_id, device="device"))
        check_topic(self._status_topic)
        check_topic(options.events_topic.format(agent=agent_id, source="source"))
        self._topics: dict[str, str] = {}
        self._event_topics: dict[str, str] = {}  # source -> its events topic
        self._inflight: dict[int, _InFlight] = {}
        self._acked: list[int] = []
        self._ack_ready = asyncio.Event()
        self._space = asyncio.Event()
        self._after = 0  # the highest seq handed to the current link
        self._progress = asyncio.Event()  # set on every step towards "drained"
        self._stop = asyncio.Event()
        self._done = asyncio.Event()
        self._running = False
        self._health = LinkHealth(options, self.stats)
        self._ever_connected = False
        self._watch_port = False  # the broker may be gone: the backoff watches its port
        self._up_at = 0.0  # when the current link was accepted
        self._stable = False  # the current link stayed up STABLE_S
        self._aborted = False  # the current link was ended by our dead-link check
        self._moved_at = 0.0  # the last PUBACK or uplink progress on the current link
        self._run_task: asyncio.Task[None] | None = None
        self._link: Link | None = None  # the connection being served, for side messages
        self._hurry: asyncio.Task[None] | None = None  # a commit of acked deletes, asked now
        # --- with a session only
        self._sent: deque[_Sent] = deque()  # data packets not yet confirmed, in order
        self._by_key: dict[str, _Sent] = {}
        self._open = 0  # seqs handed to encode and not yet acked, idle or cut
        self._up_ms = 0  # wall clock at this connection's CONNACK: older batches are backlog
        self._births_due = False  # on_connect() not yet published on this connection
        self._birthed = False  # on_connect() went out on this connection
        self._ready = asyncio.Event()
        self._reconnect = False  # the session asked for a new connection
        self._unready_since: float | None = None  # births out, session not ready since
        self._unready_strikes = 0  # connections in a row ended for it: the wait doubles
        self._notes: set[str] = set()
        self._refusals_logged = False
        self._too_large_logged = False  # a reading too large for any packet was logged
        self._skipped_topics: set[str] = set()  # oversized packets without readings, logged
        self._faults: set[str] = set()  # session calls whose failure was logged in full
        self._poison: tuple[int, int] = (0, 0)  # (seq, encode failures in a row on it)
        self._careful_until = 0  # batches up to this seq are encoded one at a time

    async def run(self) -> None:
        """Publish until cancelled or stopped; reconnect on every failure."""
        if self._running:
            raise RuntimeError("Publisher.run() is already running")
        self._running = True
        self._done.clear()
        self._run_task = asyncio.current_task()
        health = self._health
        try:
            while not self._stop.is_set():
                link = await self._connect()
                if link is not None:
                    self._link = link
                    try:
                        await self._serve_once(link)
                    finally:
                        self._link = None
                        self._drop_link(link)
                    if self._stable:
                        continue  # a link that proved itself is retried at once
                    self._watch_port = True  # lost early: was it the broker going away?
                # failed, or accepted and dropped before it proved itself: back off
                health.attempt += 1
                await self._back_off(self._backoff(health.attempt))
        finally:
            self._flush_acks()
            self._running = False
            self.stats.connected = False
            self._done.set()

    async def stop(self, drain_timeout: float = 5.0) -> None:
        """Publish what is pending within ``drain_timeout``, say "offline", disconnect.

        Whatever is not acknowledged by then stays in the buffer for the next
        start. Does nothing if :meth:`run` is not running.
        """
        if not self._running:
            self._stop.set()  # a later run() returns at once
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(drain_timeout):
                while not self._drained():
                    self._progress.clear()
                    await self._progress.wait()
        self._stop.set()
        try:
            async with asyncio.timeout(self._o.connect_timeout + _GOODBYE_TIMEOUT_S):
                await self._done.wait()
        except TimeoutError:
            # run() is stuck in a connect attempt; it is cancel-safe
            if self._run_task is not None:
                self._run_task.cancel()
            await self._done.wait()

    def publish_side(self, topic: str, payload: bytes) -> bool:
        """Send one message outside the buffer now: QoS 0, not retained; False if skipped.

        For messages that are not data (metrics): it never waits, never enters
        the buffer or the in-flight window, and is skipped while the broker is
        down. Batches keep their order: this only appends to the socket's queue.
        """
        link = self._link
        if link is None or not self.stats.connected or link.ended.done():
            return False
        check_topic(topic)
        try:
            _ignore(link.publish(topic, payload, 0, False))
        except LinkDown:
            return False
        return True

    async def _serve_once(self, link: Link) -> None:
        self._up_at = self._moved_at = time.monotonic()
        self._stable = self._aborted = False
        reason = await self._serve(link)
        if reason is None or reason is _RECONNECT:
            self._stable = True  # a stop or a reconnect asked for, not a failure
            await self._say_goodbye(link)
            if reason is _RECONNECT:
                self._note_down(self.stats.last_error or _RECONNECT, warn=False)
            return
        end = LinkEnd(reason, time.monotonic() - self._up_at, self._aborted, self._head())
        limit = self._health.limit
        self._note_down(self._health.ended(end))
        if self._health.limit < limit:
            self._split_new_batches(self._health.limit)

    def _split_new_batches(self, limit: int) -> None:
        """Have batches committed from now on split below the limit the broker showed."""
        longest = self._o.topic.format(agent=self._agent, device="d" * 64)  # ids: <= 64 chars
        budget = payload_budget(limit, longest)
        current = self._source.max_message_bytes
        self._source.max_message_bytes = budget if current is None else min(current, budget)

    def _head(self) -> tuple[int, int] | None:
        """(seq, packet bytes) of the oldest unconfirmed packet."""
        if self._session is not None:
            sent = self._sent[0] if self._sent else None
            return None if sent is None else (sent.first_seq, sent.size)
        head = next(iter(self._inflight.values()), None)
        return None if head is None else (head.seq, head.size)

    def _drained(self) -> bool:
        """Connected, everything committed so far sent, and nothing left in flight."""
        if not self.stats.connected or self._after < self._source.last_seq:
            return False
        return not self._sent and not self._open if self._session else not self._inflight

    # --- connection lifecycle

    def _make_link(
        self,
        will: Outgoing | None,
        credentials: Credentials | None = None,
        on_message: Callable[[str, bytes], None] | None = None,
    ) -> Link:
        """A new, unopened connection: its Last Will (None: none), CONNECT identity, inbound
        handler."""
        raise NotImplementedError

    async def _connect(self) -> Link | None:
        link: Link | None = None
        try:
            if self._session is None:
                offline = Outgoing(self._status_topic, self._status_payload("offline"), 1, True)
                link = self._make_link(offline)
                await link.open()
                # birth message: ordered before any data on this connection, its PUBACK unused
                online = self._status_payload("online")
                _ignore(link.publish(self._status_topic, online, 1, True))
            else:
                link = await self._open_session_link(self._session)
        except (PublishError, LinkDown) as exc:
            self._watch_port = isinstance(exc, Unreachable)
            self._note_down(str(exc))
        except (OSError, ValueError) as exc:  # TLS files unreadable while building the client
            self._watch_port = False
            self._note_down(describe_connect_error(exc, self._o))
        else:
            self._watch_port = False
            self._note_up()
            return link
        if link is not None:
            link.close()
        return None

    async def _open_session_link(self, session: Session) -> Link:
        now = now_ms()
        call = "limit"
        try:
            session.limit(self._health.limit)  # the broker's limit as known now: packets fit it
            call = "credentials"
            credentials = session.credentials(now)
            call = "will"
            will = session.will(now)  # None: a dialect without a Will (Alink, IoTDA, ThingsBoard)
            call = "subscriptions"
            subscriptions = list(session.subscriptions())
        except Exception as exc:
            raise self._session_fault(None, call, exc) from exc
        if will is not None:
            check_topic(will.topic)
        self._births_due, self._birthed, self._reconnect = True, False, False
        self._unready_since = None
        # the handler is bound to this link: a late message from an older one is ignored
        holder: list[Link] = []
        link = self._make_link(will, credentials, lambda t, p: self._inbound(holder[0], t, p))
        holder.append(link)
        try:
            await link.open()
            await link.subscribe(subscriptions)
        except BaseException:
            link.close()  # a refused SUBSCRIBE must not leave the connection open
            raise
        self._up_ms = now_ms()
        return link

    def _note_up(self) -> None:
        o = self._o
        if self._ever_connected:
            self.stats.reconnects += 1
        elif not self._health.warned:
            log.info("connected to MQTT broker %s:%d", o.host, o.port)
        self._ever_connected = True
        self.stats.connected = True

    def _note_stable(self) -> None:
        # "reachable again" only once the link held: a storm of short links logs nothing here
        self._stable = True
        if self._health.stable():
            o = self._o
            log.info("MQTT broker %s:%d is reachable again", o.host, o.port)

    def _note_down(self, reason: str, *, warn: bool = True) -> None:
        self.stats.connected = False
        self.stats.last_error = reason
        if warn:
            self._health.log_down(reason)

    def _backoff(self, attempt: int) -> float:
        delay = min(self._o.reconnect_max, self._o.reconnect_min * 2 ** min(attempt - 1, 30))
        return random.uniform(delay / 2, delay)

    async def _back_off(self, delay: float) -> None:
        """Sleep ``delay``, cut short when a vanished broker's port starts answering.

        Only after an attempt that opened no TCP connection (:class:`Unreachable`)
        or a link lost before it proved itself, and only for a delay above
        :data:`_WATCH_FROM_S`: the port is tried every :data:`_WATCH_S`
        (:func:`agent.north.probe.reachable`: connect, close, no MQTT). Once a
        try fails and a later one succeeds, the sleep ends after a full-jitter
        pause of up to :data:`_WATCH_S`. A port that answers at the first try
        (a TLS or CONNECT problem behind it, a broker closing after CONNACK)
        gets the whole backoff, and an attempt refused by a listener (no
        CONNACK, a refusing CONNACK, a failed TLS handshake) is not watched at
        all: a broker that answers but will not keep us sees the attempts of
        the backoff alone (and at most one TCP connect per sleep).
        """
        if not self._watch_port or delay <= _WATCH_FROM_S:
            await self._sleep_unless_stopped(delay)
            return
        clock = asyncio.get_running_loop().time
        deadline = clock() + delay
        seen_down = False
        while not self._stop.is_set() and (left := deadline - clock()) > 0:
            tried = clock()
            up = await reachable(self._o.host, self._o.port, min(_WATCH_S, left))
            if up:
                if seen_down:  # full jitter: a fleet that lost one broker comes back spread out
                    pause = random.uniform(0, _WATCH_S)
                    log.debug("MQTT broker %s:%d answers again: reconnecting in %.2f s",
                              self._o.host, self._o.port, pause)  # fmt: skip
                    await self._sleep_unless_stopped(min(pause, max(0.0, deadline - clock())))
                else:  # it answered all along: the attempt failed behind the port
                    await self._sleep_unless_stopped(max(0.0, deadline - clock()))
                return
            seen_down = True
            await self._sleep_unless_stopped(min(_WATCH_S - (clock() - tried), deadline - clock()))

    async def _sleep_unless_stopped(self, delay: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._stop.wait()

    async def _serve(self, link: Link) -> str | None:
        """Publish over ``link`` until it ends (the reason) or stop is asked (None)."""
        pumping = self._pump(link) if self._session is None else self._pump_session(link)
        async with asyncio.TaskGroup() as group:
            pump = group.create_task(pumping, name="mqtt-publish")
            acker = group.create_task(self._ack_loop(), name="mqtt-ack")
            reason = await self._watch(link)
            pump.cancel()
            acker.cancel()
        return reason

    async def _watch(self, link: Link) -> str | None:
        stall_s = 2 * self._o.keepalive_s
        while True:
            if link.ended.done():
                return link.ended.result()
            if self._stop.is_set():
                return None
            if self._reconnect:
                return _RECONNECT
            await asyncio.wait([link.ended], timeout=_TICK_S)
            if link.ended.done():
                continue
            link.misc()
            now = time.monotonic()
            if not self._stable and now - self._up_at >= STABLE_S:
                self._note_stable()
            if link.uplink_moved():
                self._moved_at = now  # a slow link that moves bytes is not dead
            if self._session is not None:
                self._check_replies(link, now, stall_s)
                with contextlib.suppress(LinkDown):  # ready() raised: the link is dropped
                    self._check_ready(link, now, stall_s)
                oldest_sent = next((s.sent for s in self._sent if s.acked_at is None), None)
            else:
                oldest = next(iter(self._inflight.values()), None)
                oldest_sent = None if oldest is None else oldest.sent
            if oldest_sent is not None and now - max(oldest_sent, self._moved_at) > stall_s:
                self._aborted = True
                link.abort(f"no PUBACK and no bytes moving for {stall_s} s, the link looks dead")

    def _check_ready(self, link: Link, now: float, timeout_s: int) -> None:
        """A session left not ready ``timeout_s`` after its births ends the link.

        Its births asked the cloud for something that makes it ready (an Alink
        sub-device login) and the answer was lost: the next connection asks
        again. A session that is not ready before its births (a Sparkplug
        primary host offline) waits as long as it must.
        """
        if not self._birthed or self._session_ready(link):
            self._unready_since = None
            if self._birthed:
                self._unready_strikes = 0
            return
        # each time in a row it waits twice as long (a refusal, not a loss: no storm)
        wait = timeout_s * 2 ** min(self._unready_strikes, _UNREADY_DOUBLINGS)
        if self._unready_since is None:
            self._unready_since = now
        elif now - self._unready_since > wait:
            self._unready_since = None
            self._unready_strikes += 1
            self._aborted = True
            link.abort(
                f"the {self.stats.dialect} session is still not ready {wait} s after "
                "its connect messages (a reply to them was lost?): connecting again"
            )

    def _check_replies(self, link: Link, now: float, timeout_s: int) -> None:
        """A cloud reply missing for ``timeout_s`` after the PUBACK ends the link."""
        for sent in self._sent:
            late = sent.key is not None and sent.verdict is None and sent.acked_at is not None
            if late and sent.acked_at is not None and now - sent.acked_at > timeout_s:
                self._aborted = True
                link.abort(
                    f"no reply from the cloud to a message on {sent.topic} within {timeout_s} s "
                    f"of its PUBACK: sent again on the next connection"
                )
                return

    async def _say_goodbye(self, link: Link) -> None:
        with contextlib.suppress(LinkDown, TimeoutError):
            async with asyncio.timeout(_GOODBYE_TIMEOUT_S):
                if self._session is None:
                    offline = self._status_payload("offline")
                    await link.publish(self._status_topic, offline, 1, True)
                else:
                    try:
                        goodbye = list(self._session.goodbye(now_ms()))
                    except Exception as exc:  # the Will says it instead: no DISCONNECT
                        self._session_fault(link, "goodbye", exc)
                        return
                    futures = [link.publish(m.topic, m.payload, m.qos, m.retain) for m in goodbye]
                    for fut in futures:
                        await fut
                await link.disconnect()

    def _drop_link(self, link: Link) -> None:
        link.close()
        # in flight on a dead link: forgotten, resent from the buffer on the next connection
        self._inflight.clear()
        self._sent.clear()
        self._by_key.clear()
        self._open = 0
        self._birthed = False
        self._flush_acks()
        self.stats.inflight = 0
        self.stats.connected = False

    # --- the publishing window

    async def _pump(self, link: Link) -> None:
        window = self._o.max_inflight
        floor = self._source.last_seq
        first = await self._source.first_pending_seq()
        self._after = floor if first is None else first - 1
        while not link.ended.done():
            held = self._held()
            acked = held - len(self._inflight)
            if acked >= max(1, window // 2):
                self._hurry_deletes()
            if held >= window:
                if acked:  # only their durable delete frees the window (a PUBACK does not)
                    await asyncio.shield(self._hurry_deletes())
                else:
                    self._space.clear()
                    await self._space.wait()
                continue
            floor = self._source.last_seq
            batches = await self._source.fetch(self._after, window - held)
            if not batches:
                # everything up to floor is sent, acked or dropped by the buffer
                self._after = max(self._after, floor)
                self._progress.set()
                await self._source.wait_committed(self._after, timeout=1.0)
                continue
            for batch in batches:
                try:
                    self._send(link, batch)
                except LinkDown:
                    return
                self._after = batch.seq

    def _held(self) -> int:
        """Sent and still in the buffer file: in flight, or acked but not durably deleted.

        A crash re-sends exactly these, so the window bounds them all.
        """
        sent = len(self._inflight) if self._session is None else self._open
        return sent + len(self._acked) + self._source.unsynced_acks()

    # --- the publishing window of a dialect session

    async def _pump_session(self, link: Link) -> None:
        with contextlib.suppress(LinkDown):  # the link ended, or a session call failed on it
            await self._pump_session_on(link)

    async def _pump_session_on(self, link: Link) -> None:
        session = self._session
        assert session is not None
        window = self._o.max_inflight
        floor = self._source.last_seq
        first = await self._source.first_pending_seq()
        self._after = floor if first is None else first - 1
        while not link.ended.done():
            if not self._session_ready(link):
                self._ready.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):  # re-checked: a reaction sets it
                        await self._ready.wait()
                continue
            self._births(link)
            held = self._held()
            acked = held - self._open
            if acked >= max(1, window // 2):
                self._hurry_deletes()
            if held >= window:
                if acked:
                    await asyncio.shield(self._hurry_deletes())
                else:
                    self._space.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(1.0):
                            await self._space.wait()
                continue
            floor = self._source.last_seq
            batches = await self._source.fetch(self._after, window - held)
            if link.ended.done():
                return
            if not batches:
                self._after = max(self._after, floor)
                self._progress.set()
                await self._source.wait_committed(self._after, timeout=1.0)
                continue
            if not self._session_ready(link):
                continue  # the host went away during the fetch: sent once it is back
            self._births(link)  # a rebirth asked during the fetch goes first
            for run, historical in _runs(batches, self._up_ms):
                self._send_run(link, session, run, historical)
                self._after = run[-1].seq

    def _births(self, link: Link) -> None:
        """Publish ``on_connect`` if due and the session is ready (in order, before data).

        LinkDown if the session fails (the link is dropped; the next one births again).
        """
        session = self._session
        if session is None or not self._births_due or not self._session_ready(link):
            return
        self._births_due = False
        try:
            messages = list(session.on_connect(now_ms()))
        except Exception as exc:
            raise self._session_fault(link, "on_connect", exc) from exc
        for message in messages:
            self._publish_side_message(link, message)
        self._birthed = True

    def _session_ready(self, link: Link) -> bool:
        """The session's ``ready()``; LinkDown (the link dropped) if it raises."""
        assert self._session is not None
        try:
            return self._session.ready()
        except Exception as exc:
            raise self._session_fault(link, "ready", exc) from exc

    def _session_fault(self, link: Link | None, call: str, exc: Exception) -> LinkDown:
        """A session call raised (a dialect bug): logged, counted, and ``link`` dropped.

        The traceback is logged once per call, later ones at debug; the error is
        in ``last_error`` and ``dialect_errors``. Dropping the link starts the
        next connection from the session's ``on_connect`` after the backoff.
        """
        text = f"the {self.stats.dialect} dialect failed in {call}: {type(exc).__name__}: {exc}"
        self.stats.dialect_errors += 1
        self.stats.last_error = text
        if call in self._faults:
            log.debug("%s", text, exc_info=exc)
        else:
            if len(self._faults) < _NOTES_KEPT:
                self._faults.add(call)
            log.error("%s; the connection is dropped and made again", text, exc_info=exc)
        if link is not None and not link.ended.done():
            self._aborted = True
            link.abort(text)
        return LinkDown(text)

    def _publish_side_message(self, link: Link, message: Outgoing) -> None:
        """A session's message outside the data (a birth, a death): left out if too large."""
        size = packet_size(message.topic, len(message.payload))
        if size > self._health.limit:
            self._skip_side(message.topic, size)
            return
        _ignore(link.publish(message.topic, message.payload, message.qos, message.retain))

    def _send_run(
        self, link: Link, session: Session, run: Sequence[BatchLike], historical: bool
    ) -> None:
        """Encode one run of batches and publish its packets, each under the broker's limit.

        A data packet above the limit is never sent: the run is encoded again in
        halves, and a batch alone still too large is cut in the buffer
        (:meth:`_oversized`). A packet without readings above it is left out
        (:meth:`_skip_side`).
        """
        decoded: list[Batch] = []
        kept: list[BatchLike] = []
        values: dict[int, int] = {}
        for stored in run:
            batch = self._decode(stored)
            if batch is not None:
                decoded.append(batch)
                kept.append(stored)
                values[stored.seq] = stored.n_values
        if not decoded:
            return
        self._open += len(decoded)
        # (stored, batches, partial): a partial entry is one piece of a batch cut in memory,
        # not its last: its packets finish nothing (the seq is finished by the last piece)
        todo: deque[tuple[Sequence[BatchLike], Sequence[Batch], bool]] = deque()
        if kept[0].seq <= self._careful_until:  # an encode failed here: one batch at a time
            todo.extend(([k], [b], False) for k, b in zip(kept, decoded, strict=True))
        else:
            todo.append((kept, decoded, False))
        while todo:
            stored_part, part, partial = todo.popleft()
            self._births(link)  # due again after a packet withheld: the session moved on
            try:
                encoded = session.encode(part, now_ms(), historical=historical)
                if partial:
                    encoded = _unfinished(encoded, part[0].seq)
                    packets = encoded.packets
                else:
                    packets = self._complete(encoded, [b.seq for b in part])
                keys = [session.reply_key(p) for p in packets]
            except Exception as exc:  # a dialect bug: the batches stay in the buffer, loudly
                self._encode_failed(link, part, exc)  # LinkDown, unless it refused the batch
                continue
            limit = self._health.limit
            sizes = [packet_size(p.topic, len(p.payload)) for p in packets]
            too_large = [z for p, z in zip(packets, sizes, strict=True) if p.data and z > limit]
            if too_large:
                self._births_due = True  # its state moved on for packets that do not go out
                if len(part) > 1:
                    half = (len(part) + 1) // 2
                    todo.extendleft(
                        [(stored_part[half:], part[half:], False),
                         (stored_part[:half], part[:half], False)]
                    )  # fmt: skip
                else:
                    pieces = self._oversized(stored_part[0], part[0], max(too_large),
                                             partial=partial)  # fmt: skip
                    todo.extendleft(reversed(pieces))  # extendleft reverses: first piece first
                continue
            self._publish_packets(link, encoded, packets, keys, sizes, values, part[0].seq)

    def _publish_packets(
        self,
        link: Link,
        encoded: Encoded,
        packets: Sequence[Packet],
        keys: Sequence[str | None],
        sizes: Sequence[int],
        values: dict[int, int],
        first: int,
    ) -> None:
        """Publish the packets of one encode (those without readings above the limit left out)."""
        limit = self._health.limit
        out: list[tuple[Packet, int, str | None]] = []
        for packet, size, key in zip(packets, sizes, keys, strict=True):
            if size <= limit:
                out.append((packet, size, key))
                continue
            self._skip_side(packet.topic, size)
            if packet.done and out:  # what it finished is finished by the packet before it
                last, last_size, last_key = out[-1]
                out[-1] = (replace(last, done=(*last.done, *packet.done)), last_size, last_key)
            elif packet.done:
                self._finish_after_sent(packet.done)
        self._count_refused(encoded)
        self._finish_after_sent(encoded.idle)
        for packet, size, key in out:
            fut = link.publish(packet.topic, packet.payload, self._o.qos, False)
            sent = _Sent(
                first, packet.topic, fut, time.monotonic(), size, packet.done,
                sum(values.get(seq, 0) for seq in packet.done), key,
            )  # fmt: skip
            if packet.done:
                first = max(packet.done) + 1
            self._sent.append(sent)
            if sent.key is not None:
                self._by_key[sent.key] = sent
            fut.add_done_callback(partial(self._on_packet_acked, sent))
        self.stats.inflight = len(self._sent)

    def _decode(self, stored: BatchLike) -> Batch | None:
        """The readings of a stored edge-json payload; None (acked, counted) if unreadable.

        An events payload gives one reading per event with values, and its
        events (:func:`agent.north.facts.events_batch`).
        """
        try:
            if is_events(stored.payload):
                return events_batch(stored.seq, stored.payload)
            message = decode_message(stored.payload)
            readings = [
                Reading(r["ts"], r["values"], r.get("errors", {}), r.get("clock"))
                for r in message["readings"]
            ]
        except ValueError as exc:
            problem = str(exc)
        else:
            return Batch(stored.seq, stored.device, readings)
        self.stats.refused_by_dialect += max(1, stored.n_values)
        self.stats.last_error = f"batch seq {stored.seq} of {stored.device} is unreadable"
        log.error("batch seq %d of %s is unreadable, dropped: %s", stored.seq, stored.device,
                  problem)  # fmt: skip
        self._acked.append(stored.seq)
        self._ack_ready.set()
        return None

    def _complete(self, encoded: Encoded, seqs: list[int]) -> tuple[Packet, ...]:
        """The packets, with any seq the session left unfinished put in the last ``done``."""
        finished = {s for p in encoded.packets for s in p.done} | set(encoded.idle)
        missing = tuple(s for s in seqs if s not in finished)
        if not missing:
            return encoded.packets
        log.error("dialect %s left seqs %s unfinished: acked with its last packet",
                  self.stats.dialect, missing)  # fmt: skip
        if not encoded.packets:
            self._ack_now(missing)
            return ()
        last = encoded.packets[-1]
        return (*encoded.packets[:-1], Packet(last.topic, last.payload, (*last.done, *missing)))

    def _encode_failed(self, link: Link, part: Sequence[Batch], exc: Exception) -> None:
        """``encode`` (or ``reply_key``) raised for ``part``: drop the link, or refuse a poison.

        The batches stay in the buffer and the link is dropped (LinkDown). From
        there on they are encoded one at a time, so the next failures name one
        batch; a batch that fails :data:`POISON_STRIKES` times in a row is refused
        (counted in ``refused_by_dialect``, acknowledged): it cannot stall the
        destination for ever.
        """
        head = part[0].seq
        if len(part) > 1:
            self._careful_until = max(self._careful_until, part[-1].seq)
        strikes = self._poison[1] + 1 if self._poison[0] == head else 1
        self._poison = (head, strikes)
        if len(part) > 1 or strikes < POISON_STRIKES:
            raise self._session_fault(link, f"encode/reply_key of batch seq {head}", exc)
        batch = part[0]
        self._poison = (0, 0)
        self._births_due = True  # the session may have moved on before it raised
        self._ack_now([head])
        self.stats.dialect_errors += 1
        self.stats.refused_by_dialect += max(1, len(batch.readings))
        self.stats.last_error = (
            f"batch seq {head} of {batch.device} failed the {self.stats.dialect} encoder "
            f"{strikes} times ({type(exc).__name__}: {exc}): refused"
        )
        log.error("%s (counted in refused_by_dialect)", self.stats.last_error, exc_info=exc)

    def _oversized(
        self, stored: BatchLike, batch: Batch, size: int, *, partial: bool
    ) -> list[tuple[Sequence[BatchLike], Sequence[Batch], bool]]:
        """One batch whose readings make a packet above the limit: its halves, or refused.

        The halves (by readings, never below one) keep the batch's seq and are
        sent one after the other, in order: only the last one finishes the seq,
        so a link lost in between resends the whole batch, and no reading of
        the device overtakes another. A reading too large alone is refused,
        counted in ``refused_by_dialect``, and its seq finished after what was
        sent of it.
        """
        limit = self._health.limit
        if len(batch.events) > 1 or (not batch.events and len(batch.readings) > 1):
            if batch.events:  # by events: a dialect may send the events themselves too
                first, rest = halves(batch)
            else:
                half = (len(batch.readings) + 1) // 2
                first = Batch(batch.seq, batch.device, batch.readings[:half])
                rest = Batch(batch.seq, batch.device, batch.readings[half:])
            self.stats.oversized_split += 1
            (log.warning if self.stats.oversized_split == 1 else log.debug)(
                "a %s message of %s bytes is above the %s-byte message limit: batch seq %d of "
                "%s (%d readings) is sent in smaller messages",
                self.stats.dialect, f"{size:,}", f"{limit:,}", stored.seq, stored.device,
                len(batch.readings),
            )  # fmt: skip
            return [([stored], [first], True), ([stored], [rest], partial)]
        if not partial:
            self._finish_after_sent([stored.seq])
        self.stats.refused_by_dialect += 1
        self.stats.last_error = (
            f"a reading of {stored.device} (batch seq {stored.seq}) makes a "
            f"{self.stats.dialect} message of {size:,} bytes, above the {limit:,}-byte limit: "
            f"refused"
        )
        (log.debug if self._too_large_logged else log.warning)(
            "%s (counted in refused_by_dialect)", self.stats.last_error
        )
        self._too_large_logged = True
        return []

    def _finish_after_sent(self, seqs: Sequence[int]) -> None:
        """Finish ``seqs`` with the last packet sent, or now when nothing is in flight.

        A piece of the same batch may be in flight: acking the seq before it is
        confirmed would lose that piece if the link dropped.
        """
        if not seqs:
            return
        if self._sent:
            last = self._sent[-1]
            last.done = (*last.done, *seqs)
        else:
            self._ack_now(seqs)

    def _skip_side(self, topic: str, size: int) -> None:
        """A packet without readings (a birth, attributes) above the limit: left out, reported."""
        limit = self._health.limit
        self.stats.oversized_skipped += 1
        self.stats.last_error = (
            f"a {self.stats.dialect} message on {topic} of {size:,} bytes (no readings: a "
            f"birth or attributes) is above the {limit:,}-byte message limit: not sent"
        )
        known = topic in self._skipped_topics
        if not known and len(self._skipped_topics) < _NOTES_KEPT:
            self._skipped_topics.add(topic)
        (log.debug if known else log.warning)(
            "%s; its readings go out without it (raise mqtt.max_message_size to send it)",
            self.stats.last_error,
        )

    def _count_refused(self, encoded: Encoded) -> None:
        if not encoded.refused:
            return
        self.stats.refused_by_dialect += len(encoded.refused)
        first = encoded.refused[0]
        self.stats.last_error = (
            f"{self.stats.dialect} cannot carry a reading of {first.device}: {first.reason}"
        )
        (log.debug if self._refusals_logged else log.warning)(
            "%s: %d reading(s) refused by the dialect (counted in refused_by_dialect), "
            "first: batch seq %d of %s: %s",
            self.stats.dialect, len(encoded.refused), first.seq, first.device, first.reason,
        )  # fmt: skip
        self._refusals_logged = True

    def _ack_now(self, seqs: Sequence[int]) -> None:
        if seqs:
            self._open = max(0, self._open - len(seqs))
            self._acked.extend(seqs)
            self._ack_ready.set()

    def _on_packet_acked(self, sent: _Sent, fut: asyncio.Future[None]) -> None:
        if fut.cancelled() or fut.exception() is not None:
            return  # the link ended; its batches stay in the buffer
        self._moved_at = sent.acked_at = time.monotonic()
        self._health.largest_acked = max(self._health.largest_acked, sent.size)
        self.stats.packets_published += 1
        self.stats.last_publish_ms = now_ms()
        self._confirm()

    def _confirm(self) -> None:
        """Ack the finished seqs of every confirmed packet at the head, in order."""
        moved = False
        while self._sent and self._sent[0].confirmed:
            sent = self._sent.popleft()
            moved = True
            if sent.done:
                self._ack_now(sent.done)
                self.stats.messages_published += len(sent.done)
                if sent.verdict == "refused":
                    self.stats.refused_by_cloud += sent.values
                else:
                    self.stats.values_published += sent.values
        if moved:
            self.stats.inflight = len(self._sent)
            self._space.set()
            self._progress.set()

    # --- inbound messages and device state (dialect sessions)

    def _inbound(self, link: Link, topic: str, payload: bytes) -> None:
        session = self._session
        if session is None or link is not self._link or link.ended.done():
            return
        try:
            reaction = session.on_message(topic, payload, now_ms())
        except Exception as exc:  # its state is unknown now: a new connection starts it afresh
            self._session_fault(link, f"on_message ({topic})", exc)
            return
        self._react(link, session, reaction)

    def _react(self, link: Link, session: Session, reaction: Reaction) -> None:
        if reaction.note is not None:
            self._note(reaction.note)
        try:
            for message in reaction.send:
                _ignore(link.publish(message.topic, message.payload, message.qos, message.retain))
        except LinkDown:
            return
        for key, verdict in reaction.replies:
            self._reply(link, key, verdict, reaction.note)
        if reaction.rebirth:
            self._births_due = True
        if reaction.reconnect:
            self._reconnect = True
            return
        try:
            if self._session_ready(link):
                self._ready.set()
                self._births(link)
        except LinkDown:
            return

    def _reply(self, link: Link, key: str, verdict: ReplyVerdict, note: str | None) -> None:
        sent = self._by_key.pop(key, None)
        if sent is None:
            log.debug("%s: a reply to %s matches no packet in flight", self.stats.dialect, key)
            return
        if verdict == "retry":
            self._aborted = True
            link.abort(f"the cloud asked to send again ({note or key}): a new connection")
            return
        sent.verdict = verdict
        if verdict == "refused":
            self.stats.last_error = note or f"the cloud refused the message {key}"
        self._confirm()

    def _note(self, note: str) -> None:
        self.stats.last_error = note
        if note in self._notes or len(self._notes) >= _NOTES_KEPT:
            log.debug("%s: %s", self.stats.dialect, note)
            return
        self._notes.add(note)
        log.warning("%s: %s", self.stats.dialect, note)

    @property
    def ready(self) -> bool:
        """Connected, and the dialect lets data flow (a Sparkplug primary host online...)."""
        if not self.stats.connected or self._session is None:
            return self.stats.connected
        try:
            return self._session.ready()
        except Exception:  # the publisher's own call drops the link and logs it
            return False

    def device_state(self, device: str, online: bool) -> None:
        """Tell the dialect a device stopped answering (or answers again); nothing for edge-json.

        The messages go out on the current link after everything already sent
        for that device. Without a link, or before the session's ``on_connect``
        went out on it, they are dropped: the session remembers the state and
        says it when it connects again.
        """
        session = self._session
        if session is None:
            return
        link = self._link
        try:
            messages = list(session.device_state(device, online, now_ms()))
        except Exception as exc:  # the next connection's on_connect says the state
            self._session_fault(link, "device_state", exc)
            return
        if link is None or link.ended.done() or not self._birthed:
            return
        with contextlib.suppress(LinkDown):
            for message in messages:
                self._publish_side_message(link, message)

    def _hurry_deletes(self) -> asyncio.Task[None]:
        """Have the buffer commit the deletes acked so far now, not at its next budgeted commit.

        Started when half the window is acked rows, so the commit is usually
        done before the window fills and the drain does not stall on it.
        """
        self._flush_acks()
        if self._hurry is None or self._hurry.done():
            self._hurry = asyncio.create_task(self._commit_deletes(), name="mqtt-ack-commit")
        return self._hurry

    async def _commit_deletes(self) -> None:
        try:
            async with asyncio.timeout(_TICK_S * 5):
                await self._source.flush()
        except (StorageError, TimeoutError):  # the disk fails: the buffer retries, we wait
            await asyncio.sleep(_TICK_S)

    def _send(self, link: Link, batch: BatchLike) -> None:
        topic = self._topics.get(batch.device)
        if topic is None:  # a device seen first, or a source of events (never cached here)
            topic = self._topic_of(batch)
        size = packet_size(topic, len(batch.payload))
        if size > self._health.limit:
            self._cut(batch, topic, size)
            return
        fut = link.publish(topic, batch.payload, self._o.qos, False)
        self._inflight[batch.seq] = _InFlight(batch.seq, fut, time.monotonic(), size)
        self.stats.inflight = len(self._inflight)
        fut.add_done_callback(partial(self._on_acked, batch.seq, batch.n_values, size))

    def _topic_of(self, batch: BatchLike) -> str:
        """The topic of a stored batch: ``mqtt.topic``, or ``mqtt.events_topic`` for events.

        Only a device's readings topic is cached in ``_topics``: the batches of a
        known device pay nothing (a machine's name is no device id, ``_box``
        none at all), those of an events source one ``startswith`` each.
        """
        if is_events(batch.payload):
            topic = self._event_topics.get(batch.device)
            if topic is None:
                topic = self._o.events_topic.format(agent=self._agent, source=batch.device)
                self._event_topics[batch.device] = topic
            return topic
        topic = self._o.topic.format(agent=self._agent, device=batch.device)
        self._topics[batch.device] = topic
        return topic

    def _cut(self, batch: BatchLike, topic: str, size: int) -> None:
        """A stored batch the broker cannot take: queued again in pieces (new seqs), never sent."""
        limit = self._health.limit
        refused = self._source.resplit(
            batch.seq,
            batch.device,
            batch.payload,
            payload_budget(limit, topic),
            created_ms=batch.created_ms,
        )
        self.stats.oversized_split += 1
        (log.warning if self.stats.oversized_split == 1 else log.debug)(
            "batch seq %d of %s is %s bytes, above the %s-byte message limit: queued again "
            "in smaller batches under new seqs%s",
            batch.seq, batch.device, f"{size:,}", f"{limit:,}",
            f", {refused} reading(s) too large alone were refused" if refused else "",
        )  # fmt: skip

    def _on_acked(self, seq: int, n_values: int, size: int, fut: asyncio.Future[None]) -> None:
        if fut.cancelled() or fut.exception() is not None:
            return  # the link ended; the batch stays in the buffer
        self._moved_at = time.monotonic()
        self._health.largest_acked = max(self._health.largest_acked, size)
        entry = self._inflight.get(seq)
        if entry is not None and entry.future is fut:
            del self._inflight[seq]
        self._acked.append(seq)
        self._ack_ready.set()
        self.stats.messages_published += 1
        self.stats.values_published += n_values
        self.stats.last_publish_ms = now_ms()
        self.stats.inflight = len(self._inflight)
        if len(self._inflight) < self._o.max_inflight:
            self._space.set()
        self._progress.set()

    async def _ack_loop(self) -> None:
        while True:
            await self._ack_ready.wait()
            self._ack_ready.clear()
            self._flush_acks()

    def _flush_acks(self) -> None:
        if self._acked:
            seqs, self._acked = self._acked, []
            self._source.ack(seqs)

    def _status_payload(self, state: str) -> bytes:
        return orjson.dumps({"state": state, "agent": self._agent, "ts": now_ms()})


def _runs(batches: Sequence[BatchLike], up_ms: int) -> Iterator[tuple[list[BatchLike], bool]]:
    """Consecutive batches split where "committed before this connection" changes."""
    run: list[BatchLike] = []
    historical = False
    for batch in batches:
        old = batch.created_ms < up_ms
        if run and old != historical:
            yield run, historical
            run = []
        historical = old
        run.append(batch)
    if run:
        yield run, historical


def _unfinished(encoded: Encoded, seq: int) -> Encoded:
    """``encoded`` with ``seq`` finished by none of its packets (a piece that is not the last)."""
    packets = tuple(
        replace(p, done=tuple(s for s in p.done if s != seq)) if seq in p.done else p
        for p in encoded.packets
    )
    return replace(encoded, packets=packets, idle=tuple(s for s in encoded.idle if s != seq))


def _ignore(fut: asyncio.Future[None]) -> None:
    """Let a future end unobserved without 'exception never retrieved' noise."""
    fut.add_done_callback(lambda f: None if f.cancelled() else f.exception())
