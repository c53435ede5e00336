"""The running agent: buffer, one publisher per destination, device pollers, status.

Start order is buffer, publishers, devices; stop is the reverse: pollers stop,
everything read so far is committed, the publishers drain what they can within
a bounded time (side by side), then the buffer closes. Whatever a destination
has not confirmed stays in the buffer for its next start.

Each destination (:mod:`agent.runtime.destinations`) publishes from its own
view of the one buffer: a destination that is down holds back only its own
cursor. A device that stops answering (or answers again) is told to every
publisher, so the dialects that announce it (Sparkplug DDEATH/DBIRTH, gateway
sub-device status) can.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from agent import __version__, logs
from agent.buffer import Buffer, BufferStats
from agent.clock import system_clock
from agent.errors import StorageError
from agent.north.destination import Destination
from agent.north.link import MqttOptions, Publisher
from agent.north.options import PublisherStats, payload_budget
from agent.paths import AgentPointer, remove_pointer, write_pointer
from agent.private import private_dir
from agent.runtime.destinations import connection_options, destinations
from agent.runtime.facts import Facts
from agent.runtime.metrics import MetricsState
from agent.runtime.metrics_http import MetricsService
from agent.runtime.poller import DevicePoller
from agent.runtime.reload import ReloadPlan, plan_reload
from agent.runtime.sessions import device_facts, machine_facts, make_session
from agent.site.device import DeviceConfig
from agent.site.loader import Site, load_site
from agent.site.permissions import readable_by_others
from agent.site.source import ConfigFileError
from agent.status.document import (
    BrokerStatus,
    DestinationStatus,
    DeviceStatus,
    StatusDocument,
    buffer_status,
)
from agent.status.server import StatusServer
from drivers.base import DeviceOptions, HasEndpoint, now_ms

if TYPE_CHECKING:
    from agent.compute.plan import MachinePlan

log = logging.getLogger(__name__)

DRAIN_TIMEOUT_S = 5.0
RESTART_MIN_S = 1.0  # a failed publisher is started again after this, doubling
RESTART_MAX_S = 60.0
FLUSH_TIMEOUT_S = 20.0


def mqtt_options(site: Site) -> MqttOptions:
    """The publisher's options from a site's ``mqtt`` section (the ``mqtt`` destination's)."""
    return connection_options(site, site.mqtt, password=site.mqtt_password)


def message_budget(site: Site) -> int:
    """The largest payload a batch may have so that its PUBLISH fits mqtt.max_message_size."""
    longest = site.mqtt.topic.format(agent=site.agent.id, device="d" * 64)  # ids: <= 64 chars
    return payload_budget(site.mqtt.max_message_size, longest)


def destination_budget(destination: Destination, agent_id: str) -> int:
    """The largest stored payload an edge-json destination takes as one PUBLISH."""
    mqtt = destination.mqtt
    longest = mqtt.topic.format(agent=agent_id, device="d" * 64)  # ids: <= 64 chars
    return payload_budget(mqtt.max_message_size, longest)


class Agent:
    """One agent process for one site file."""

    def __init__(self, site: Site, plans: tuple[MachinePlan, ...] | None = None) -> None:
        """``plans``: the site's machines (default: built from its ``analytics:`` block;
        :class:`~agent.site.source.ConfigFileError` if a rule cannot be built)."""
        self.site = site
        if plans is None:
            plans = ()
            if site.analytics is not None:  # the computing modules only for a site with machines
                from agent.runtime.machines import plan_machines

                plans = plan_machines(site)
        self.started = time.monotonic()
        self.started_ms = now_ms()
        self.destinations = destinations(site)
        self.buffer = Buffer(
            site.buffer_path,
            agent_id=site.agent.id,
            max_bytes=site.buffer.max_size,
            on_full=site.buffer.on_full,
            synchronous=site.buffer.synchronous,
            commit_interval=site.buffer.commit_interval,
            max_message_bytes=message_budget(site),
            destinations=[d.id for d in self.destinations],
        )
        self.facts = Facts(self.buffer, plans)
        self.publishers = {d.id: self._make_publisher(d, site) for d in self.destinations}
        self.pollers = [self._poller(d) for d in site.devices]
        self.metrics = MetricsService(
            site.metrics, site.agent.id, self.metrics_state, self._publish_side
        )
        self.status = StatusServer(site.status_socket, self.snapshot, self.metrics.text)
        self._stop = asyncio.Event()
        self._group: asyncio.TaskGroup | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._publishing: dict[str, asyncio.Task[None]] = {}
        self._reloading = asyncio.Lock()
        self.ready = asyncio.Event()
        """Set once the buffer is open and every task runs; cleared when stopping."""

    @property
    def publisher(self) -> Publisher:
        """The first destination's publisher (the ``mqtt`` section's when it publishes)."""
        return next(iter(self.publishers.values()))

    def _make_publisher(self, destination: Destination, site: Site) -> Publisher:
        """A publisher for ``destination`` on its view of the buffer.

        Raise ``ValueError`` (and the like) for a topic it cannot format.
        """
        view = self.buffer.view(destination.id)
        facts = {**device_facts(site.devices), **machine_facts(self.facts.plans)}
        session = make_session(destination, site.agent.id, facts)
        if session is None:  # the stored message is sent as it is: cut below its limit
            view.max_message_bytes = destination_budget(destination, site.agent.id)
        return Publisher(
            destination.mqtt, view, site.agent.id, session, dialect=destination.dialect
        )

    def _poller(self, device: DeviceConfig) -> DevicePoller:
        return DevicePoller(
            device,
            self.buffer,
            on_state=self._device_state,
            on_reading=self.facts.reading if self.facts.plans else None,
        )

    def _device_state(self, device: str, answers: bool) -> None:
        for publisher in self.publishers.values():
            publisher.device_state(device, answers)

    def request_stop(self) -> None:
        """Ask the agent to stop (signal handlers call this)."""
        self._stop.set()

    def request_reload(self) -> None:
        """Re-read the site file and apply it (SIGHUP); see :mod:`agent.runtime.reload`."""
        if self._group is not None and self.ready.is_set():
            self._group.create_task(self.reload(), name="reload")
        else:
            log.warning("reload ignored: the agent is starting or stopping; send SIGHUP again")

    async def reload(self) -> bool:
        """Apply the site file as it is now; False (and the running config kept) if refused."""
        async with self._reloading:
            if self._stop.is_set():
                # queued behind a stop that has already cancelled every poller: new
                # ones started now would never be cancelled and the stop would hang
                log.info("reload skipped: the agent is stopping")
                return False
            new = await asyncio.to_thread(self._load_new)
            if new is None:
                return False
            plan = plan_reload(self.site, new)
            if plan.needs_restart:
                log.error(
                    "reload refused, the running config is kept: changing %s needs a restart",
                    ", ".join(plan.needs_restart),
                )
                return False
            if new.secrets - self.site.secrets:  # a new password must never reach a log line
                logs.add_secrets(new.secrets)
            # built before anything changes: a broker setting no publisher can be
            # made from refuses the reload instead of leaving the agent without one
            publishers = self._publishers_for(plan, new)
            if publishers is None:
                return False
            await self._apply(plan, new, publishers)
            log.info("reloaded %s: %s", self.site.file, plan.summary())
            return True

    def _publishers_for(self, plan: ReloadPlan, new: Site) -> dict[str, Publisher] | None:
        """The publishers a reload replaces: the ``mqtt`` one when its section changed, and
        every dialect destination when devices changed (its births and facts name them)."""
        devices_changed = bool(plan.added or plan.removed or plan.changed)
        replace = {}
        for destination in destinations(new):
            edge_json = destination.dialect == "edge-json"
            mqtt = destination.id == "mqtt" and edge_json
            if (mqtt and plan.mqtt_changed) or (not edge_json and devices_changed):
                replace[destination.id] = destination
        made = {}
        for dest_id, destination in replace.items():
            try:
                made[dest_id] = self._make_publisher(destination, new)
            except (ValueError, KeyError, IndexError) as exc:  # a topic it cannot format
                log.error(  # noqa: TRY400
                    "reload refused, the running config is kept: %s: %r", dest_id, exc
                )
                return None
        return made

    def _load_new(self) -> Site | None:
        problems: list[Any] = []
        try:
            return load_site(self.site.file)
        except ConfigFileError as exc:
            problems = exc.problems
        log.error(
            "reload refused, the running config is kept: %d problems in %s",
            len(problems),
            self.site.file,
        )
        for problem in problems:
            log.error("  %s", problem)
        return None

    async def _apply(self, plan: ReloadPlan, new: Site, publishers: dict[str, Publisher]) -> None:
        assert self._group is not None
        gone = {*plan.removed, *(d.id for d in plan.changed)}
        stopping = [self._tasks.pop(i) for i in gone if i in self._tasks]
        for task in stopping:
            task.cancel()
        await asyncio.gather(*stopping, return_exceptions=True)
        self.pollers = [p for p in self.pollers if p.device.id not in gone]
        for device in (*plan.added, *plan.changed):
            self._start_poller(self._poller(device))
        self.site = new
        self.destinations = destinations(new)  # the same ids: changing those needs a restart
        if plan.log_level is not None:
            logs.set_level(plan.log_level[1])
        for dest_id, publisher in publishers.items():
            with contextlib.suppress(Exception):
                await self.publishers[dest_id].stop(drain_timeout=1.0)
            old = self._publishing.pop(dest_id, None)
            if old is not None:
                old.cancel()
            for poller in self.pollers:  # its session starts knowing every device online
                if not poller.answering:
                    publisher.device_state(poller.device.id, False)
            self.publishers[dest_id] = publisher
            self._start_publisher(dest_id)

    def _start_publisher(self, dest_id: str) -> None:
        assert self._group is not None
        self._publishing[dest_id] = self._group.create_task(
            self._publish(dest_id, self.publishers[dest_id]), name=f"publisher:{dest_id}"
        )

    async def _publish(self, dest_id: str, publisher: Publisher) -> None:
        """Run one destination's publisher; if it fails, log it and start it again.

        A publisher handles its own broker and dialect faults; what still ends
        it (a bug) must not end the agent's other destinations and pollers.
        The restarts back off from RESTART_MIN_S to RESTART_MAX_S.
        """
        delay = RESTART_MIN_S
        while True:
            started = time.monotonic()
            try:
                await publisher.run()
            except Exception:
                if time.monotonic() - started > RESTART_MAX_S:
                    delay = RESTART_MIN_S  # it ran a good while: not a crash loop
                log.exception(
                    "destination %s: the publisher failed; started again in %.0f s", dest_id, delay
                )
            else:
                return
            await asyncio.sleep(delay)
            delay = min(2 * delay, RESTART_MAX_S)

    def _start_poller(self, poller: DevicePoller) -> None:
        assert self._group is not None
        self.pollers.append(poller)
        self._tasks[poller.device.id] = self._group.create_task(
            poller.run(), name=f"device:{poller.device.id}"
        )

    async def run(self, on_ready: Callable[[], object] | None = None) -> None:
        """Run until :meth:`request_stop`; flushes and drains on the way out."""
        # refused (UnsafePath) when another account could redirect our files or
        # put its own socket in place of ours (agent.private)
        site = self.site
        for folder in dict.fromkeys(
            (site.data_dir, site.buffer_path.parent, site.status_socket.parent)
        ):
            private_dir(folder, "the data dir" if folder == site.data_dir else "the folder", 0o750)
        async with self.buffer:
            await self.status.start()
            pointer = AgentPointer(
                self.site.agent.id,
                os.getpid(),
                str(self.site.status_socket),
                str(self.site.buffer_path),
                str(self.site.file),
            )
            write_pointer(pointer)
            try:
                await self.metrics.start()
                await self._run_tasks(on_ready)
            finally:
                remove_pointer(self.site.agent.id, os.getpid())
                await self.metrics.close()
                await self.status.close()

    async def _run_tasks(self, on_ready: Callable[[], object] | None) -> None:
        await self.facts.start()  # before the first reading: machines resume their state
        async with asyncio.TaskGroup() as group:
            self._group = group
            computing = (
                group.create_task(self.facts.run(), name="facts") if self.facts.plans else None
            )
            for dest_id in self.publishers:
                self._start_publisher(dest_id)
            reporting = group.create_task(self.metrics.run(), name="metrics")
            pollers, self.pollers = self.pollers, []
            for poller in pollers:
                self._start_poller(poller)
            for warning in [*self.site.warnings, *readable_by_others(self.site)]:
                log.warning("%s", warning)
            log.info(
                "agent %s started: %d devices, publishing to %s",
                self.site.agent.id,
                len(self.pollers),
                ", ".join(
                    f"{d.id} ({d.dialect}, {d.mqtt.host}:{d.mqtt.port})" for d in self.destinations
                ),
            )
            self.ready.set()
            if on_ready is not None:
                on_ready()
            await self._stop.wait()
            self.ready.clear()
            reporting.cancel()
            async with self._reloading:  # a reload in progress finishes first
                polling = list(self._tasks.values())
                for task in polling:
                    task.cancel()
                await asyncio.gather(*polling, return_exceptions=True)
                if computing is not None:
                    computing.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await computing
                    try:
                        self.facts.commit(now_ms(), force=True)  # the last reads' facts too
                    except Exception:  # the stop goes on: flush and drain what is there
                        log.exception("machine facts: the last commit failed")
                try:
                    async with asyncio.timeout(FLUSH_TIMEOUT_S):
                        await self.buffer.flush()
                except (TimeoutError, StorageError) as exc:
                    # a disk that stopped answering must not hold the stop forever
                    log.error(  # noqa: TRY400 - a known condition, no traceback needed
                        "buffer not flushed on stop (%s): readings of the last "
                        "commit interval may be lost",
                        exc or "timeout",
                    )
                await asyncio.gather(
                    *(p.stop(drain_timeout=DRAIN_TIMEOUT_S) for p in self.publishers.values()),
                    return_exceptions=True,
                )
                for task in self._publishing.values():
                    task.cancel()
        log.info("agent %s stopped", self.site.agent.id)

    async def snapshot(self) -> StatusDocument:
        """The status document (:mod:`agent.status.document`)."""
        now = now_ms()
        buffer = await self.buffer.stats()
        first = self.destinations[0]
        doc: StatusDocument = {
            "agent": {
                "id": self.site.agent.id,
                "version": __version__,
                "pid": os.getpid(),
                "uptime_s": round(time.monotonic() - self.started, 1),
                "config": str(self.site.file),
            },
            "devices": {p.device.id: _device_status(p, now) for p in self.pollers},
            "broker": _broker_status(
                first, self.publishers[first.id].stats, self.buffer.refused_readings
            ),
            "destinations": {
                d.id: _destination_status(d, self.publishers[d.id], buffer, now)
                for d in self.destinations
            },
            "buffer": buffer_status(buffer, str(self.site.buffer_path), now),
            "metrics": self.metrics.describe(),
            "serial_lines": {
                u.link: {
                    "baud": u.baud,
                    "utilisation": round(u.utilisation, 3),
                    "devices": list(u.devices),
                }
                for u in self.site.links
            },
            "clock": system_clock().report(),
        }
        if self.facts.plans:
            doc["machines"] = self.facts.status(now)
        return doc

    def _publish_side(self, topic: str, payload: bytes) -> bool:
        # the metrics summary is edge-json: to the first edge-json destination, if any
        # (looked up each time: a reload may replace the publisher)
        for d in self.destinations:
            if d.dialect == "edge-json":
                return self.publishers[d.id].publish_side(topic, payload)
        return False

    async def metrics_state(self) -> MetricsState:
        """Every counter at this moment, for the metrics endpoint and summaries."""
        return MetricsState(
            agent_id=self.site.agent.id,
            version=__version__,
            uptime_s=time.monotonic() - self.started,
            now_ms=now_ms(),
            devices={p.device.id: p.stats for p in self.pollers},
            publisher=self.publisher.stats,
            buffer=await self.buffer.stats(),
            publishers={d: p.stats for d, p in self.publishers.items()},
        )


def _broker_status(d: Destination, pub: PublisherStats, refused_readings: int) -> BrokerStatus:
    return {
        "host": d.mqtt.host,
        "port": d.mqtt.port,
        "connected": pub.connected,
        "last_error": pub.last_error,
        "messages_published": pub.messages_published,
        "values_published": pub.values_published,
        "reconnects": pub.reconnects,
        "inflight": pub.inflight,
        "early_disconnects": pub.early_disconnects,
        "oversized_split": pub.oversized_split,
        "oversized_refused": refused_readings,  # at put and at a cut
    }


def _destination_status(
    d: Destination, publisher: Publisher, buffer: BufferStats, now: int
) -> DestinationStatus:
    pub = publisher.stats
    mine = next((x for x in buffer.destinations if x.id == d.id), None)
    oldest = None if mine is None else mine.oldest_created_ms
    return {
        "dialect": d.dialect,
        "host": d.mqtt.host,
        "port": d.mqtt.port,
        "connected": pub.connected,
        "ready": publisher.ready,
        "last_error": pub.last_error,
        "messages_published": pub.messages_published,
        "values_published": pub.values_published,
        "packets_published": pub.packets_published,
        "refused_by_cloud": pub.refused_by_cloud,
        "refused_by_dialect": pub.refused_by_dialect,
        "dialect_errors": pub.dialect_errors,
        "reconnects": pub.reconnects,
        "inflight": pub.inflight,
        "pending_batches": buffer.pending_batches if mine is None else mine.pending_batches,
        "oldest_pending_age_s": None if oldest is None else round((now - oldest) / 1000, 1),
        "never_received": buffer.dropped_batches if mine is None else mine.never_received,
    }


def _device_status(poller: DevicePoller, now: int) -> DeviceStatus:
    stats = poller.stats
    return {
        "state": stats.state,
        "endpoint": _endpoint_text(poller.device.options),
        "profile": poller.device.profile,
        "last_ok_ms": stats.last_ok_ms,
        "last_ok_age_s": None
        if stats.last_ok_ms is None
        else round((now - stats.last_ok_ms) / 1000, 1),
        "polls_ok": stats.polls_ok,
        "polls_failed": stats.polls_failed,
        "overruns": stats.overruns,
        "reconnects": stats.reconnects,
        "last_error": stats.last_error,
        "values_per_second": round(stats.values_per_second(), 1),
        "last_poll_ms": None if stats.last_poll_ms is None else round(stats.last_poll_ms, 1),
        "driver": poller.driver_stats(),
    }


def _endpoint_text(options: DeviceOptions) -> str | None:
    # Every shipped driver says where its device is; a third-party one may not.
    return options.endpoint().text if isinstance(options, HasEndpoint) else None
