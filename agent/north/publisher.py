"""The publishing window and the connection lifecycle, apart from any MQTT library.

:class:`agent.north.link.Publisher` plugs paho into :class:`PublishLoop`; this
module holds what does not touch the wire: the in-flight window in ``seq``
order, acks to the buffer, reconnect backoff, dead-link detection, drain on
stop, and the one-warning/one-info logging of the broker link.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass
from functools import partial

import orjson

from agent.errors import PublishError, StorageError
from agent.north.health import STABLE_S, LinkEnd, LinkHealth
from agent.north.options import (
    BatchLike,
    BatchSource,
    Link,
    LinkDown,
    MqttOptions,
    PublisherStats,
    check_topic,
    describe_connect_error,
    packet_size,
    payload_budget,
)
from drivers.base import now_ms

__all__ = ["PublishLoop"]

log = logging.getLogger("agent.north.link")  # one logger name for the whole publisher

_TICK_S = 0.2  # how often keepalive and PUBACK stalls are checked
_GOODBYE_TIMEOUT_S = 3.0  # offline status + DISCONNECT on a clean stop


@dataclass(slots=True)
class _InFlight:
    seq: int
    future: asyncio.Future[None]
    sent: float
    size: int  # bytes of the PUBLISH packet


class PublishLoop:
    """Everything of :class:`agent.north.link.Publisher` but the wire (``_make_link``)."""

    def __init__(self, options: MqttOptions, source: BatchSource, agent_id: str) -> None:
        self.stats = PublisherStats()
        self._o = options
        self._source = source
        self._agent = agent_id
        self._status_topic = options.status_topic.format(agent=agent_id)
        check_topic(options.topic.format(agent=agent_id, device="device"))
        check_topic(self._status_topic)
        self._topics: dict[str, str] = {}
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
        self._up_at = 0.0  # when the current link was accepted
        self._stable = False  # the current link stayed up STABLE_S
        self._aborted = False  # the current link was ended by our dead-link check
        self._moved_at = 0.0  # the last PUBACK or uplink progress on the current link
        self._run_task: asyncio.Task[None] | None = None
        self._link: Link | None = None  # the connection being served, for side messages
        self._hurry: asyncio.Task[None] | None = None  # a commit of acked deletes, asked now

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
                # failed, or accepted and dropped before it proved itself: back off
                health.attempt += 1
                await self._sleep_unless_stopped(self._backoff(health.attempt))
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
        if reason is None:
            self._stable = True  # a stop, not a failure
            await self._say_goodbye(link)
            return
        head = next(iter(self._inflight.values()), None)
        end = LinkEnd(
            reason,
            time.monotonic() - self._up_at,
            self._aborted,
            None if head is None else (head.seq, head.size),
        )
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

    def _drained(self) -> bool:
        """Connected, everything committed so far sent, and nothing left in flight."""
        return self.stats.connected and not self._inflight and self._after >= self._source.last_seq

    # --- connection lifecycle

    def _make_link(self, will: bytes) -> Link:
        """A new, unopened connection whose Last Will is ``will``."""
        raise NotImplementedError

    async def _connect(self) -> Link | None:
        offline = self._status_payload("offline")
        link: Link | None = None
        try:
            link = self._make_link(offline)
            await link.open()
            # birth message: ordered before any data on this connection, its PUBACK unused
            _ignore(link.publish(self._status_topic, self._status_payload("online"), 1, True))
        except (PublishError, LinkDown) as exc:
            self._note_down(str(exc))
        except (OSError, ValueError) as exc:  # TLS files unreadable while building the client
            self._note_down(describe_connect_error(exc, self._o))
        else:
            self._note_up()
            return link
        if link is not None:
            link.close()
        return None

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

    def _note_down(self, reason: str) -> None:
        self.stats.connected = False
        self.stats.last_error = reason
        self._health.log_down(reason)

    def _backoff(self, attempt: int) -> float:
        delay = min(self._o.reconnect_max, self._o.reconnect_min * 2 ** min(attempt - 1, 30))
        return random.uniform(delay / 2, delay)

    async def _sleep_unless_stopped(self, delay: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._stop.wait()

    async def _serve(self, link: Link) -> str | None:
        """Publish over ``link`` until it ends (the reason) or stop is asked (None)."""
        async with asyncio.TaskGroup() as group:
            pump = group.create_task(self._pump(link), name="mqtt-publish")
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
            await asyncio.wait([link.ended], timeout=_TICK_S)
            if link.ended.done():
                continue
            link.misc()
            now = time.monotonic()
            if not self._stable and now - self._up_at >= STABLE_S:
                self._note_stable()
            if link.uplink_moved():
                self._moved_at = now  # a slow link that moves bytes is not dead
            oldest = next(iter(self._inflight.values()), None)
            if oldest is not None and now - max(oldest.sent, self._moved_at) > stall_s:
                self._aborted = True
                link.abort(f"no PUBACK and no bytes moving for {stall_s} s, the link looks dead")

    async def _say_goodbye(self, link: Link) -> None:
        with contextlib.suppress(LinkDown, TimeoutError):
            async with asyncio.timeout(_GOODBYE_TIMEOUT_S):
                await link.publish(self._status_topic, self._status_payload("offline"), 1, True)
                await link.disconnect()

    def _drop_link(self, link: Link) -> None:
        link.close()
        # in flight on a dead link: forgotten, resent from the buffer on the next connection
        self._inflight.clear()
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
        return len(self._inflight) + len(self._acked) + self._source.unsynced_acks()

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
        if topic is None:
            topic = self._o.topic.format(agent=self._agent, device=batch.device)
            self._topics[batch.device] = topic
        size = packet_size(topic, len(batch.payload))
        if size > self._health.limit:
            self._cut(batch, topic, size)
            return
        fut = link.publish(topic, batch.payload, self._o.qos, False)
        self._inflight[batch.seq] = _InFlight(batch.seq, fut, time.monotonic(), size)
        self.stats.inflight = len(self._inflight)
        fut.add_done_callback(partial(self._on_acked, batch.seq, batch.n_values, size))

    def _cut(self, batch: BatchLike, topic: str, size: int) -> None:
        """A stored batch the broker cannot take: queued again in pieces (new seqs), never sent."""
        limit = self._health.limit
        refused = self._source.resplit(
            batch.seq, batch.device, batch.payload, payload_budget(limit, topic)
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


def _ignore(fut: asyncio.Future[None]) -> None:
    """Let a future end unobserved without 'exception never retrieved' noise."""
    fut.add_done_callback(lambda f: None if f.cancelled() else f.exception())
