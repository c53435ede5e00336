"""The OPC UA driver: the only module of ``drivers/`` that imports asyncua.

Two modes, chosen by ``connection.opcua.mode``:

* ``poll`` (default): ``await driver.read(group)`` reads every node of the group
  in one Read service call.
* ``subscribe``: ``connect()`` creates one subscription with a monitored item
  per tag (sampling interval and absolute deadband from the tag); the agent
  consumes ``async for reading in driver.stream()``. ``driver.streams`` is True
  in this mode. ``read(group)`` still works, for one-off reads.

asyncua does not reconnect by itself here (its auto-reconnect is off: the
agent's scheduler owns backoff) and a connect on a dead link can hang, so every
asyncua call runs under our own ``asyncio.timeout``. A dead session (our
timeout, a transport error, or asyncua's keepalive probe calling back) raises
:class:`DeviceUnavailable`; the next ``connect()`` builds a new ``Client``,
resolves browse paths again and restores the subscription.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, cast

from asyncua import ua
from asyncua.client.client import Client
from asyncua.crypto import security_policies, uacrypto
from asyncua.ua import status_codes
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.uaerrors import UaError, UaStatusCodeError

from drivers.base import BaseDriver, DeviceUnavailable, DriverError, Reading, Value, now_ms
from drivers.opcua.certs import Material, load_credentials
from drivers.opcua.config import OpcuaOptions, OpcuaTag
from drivers.opcua.quality import error_for, name
from drivers.opcua.values import ValueProblem, coerce, stamp_ms

_log = logging.getLogger(__name__)

QUEUE_SIZE = 10_000
"""Data changes held for ``stream()``; past it the oldest are dropped and counted."""

_ABSOLUTE_DEADBAND = 1  # DeadbandType.Absolute (OPC 10000-4, 7.22.2)


@dataclass(slots=True)
class _Change:
    ts: int
    tag: str
    value: Value | None = None
    error: str | None = None


@dataclass(slots=True)
class _Lost:
    reason: str


class _Feed:
    """Data changes waiting for ``stream()``: bounded, drop-oldest, with a peek."""

    def __init__(self, driver: OpcuaDriver) -> None:
        self._items: deque[_Change | _Lost] = deque()
        self._ready = asyncio.Event()
        self._driver = driver

    def push(self, item: _Change | _Lost) -> None:
        if len(self._items) >= QUEUE_SIZE:
            self._items.popleft()
            self._driver.dropped_changes += 1
        self._items.append(item)
        self._ready.set()

    async def get(self) -> _Change | _Lost:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()

    def take_if(self, ts: int, seen: Reading) -> _Change | None:
        """The next change if it has timestamp ``ts`` and a tag not yet in ``seen``."""
        nxt = self._items[0] if self._items else None
        if not isinstance(nxt, _Change) or nxt.ts != ts:
            return None
        if nxt.tag in seen.values or nxt.tag in seen.errors:
            return None
        self._items.popleft()
        return nxt


@dataclass
class _Session:
    """One connection: a fresh asyncua Client and what was resolved on it."""

    client: Client
    feed: _Feed
    nodes: dict[str, ua.NodeId] = field(default_factory=dict)
    unresolved: dict[str, str] = field(default_factory=dict)
    handles: dict[int, str] = field(default_factory=dict)
    lost: str | None = None


class OpcuaDriver(BaseDriver):
    """One OPC UA server (see the module docstring for the two modes)."""

    def __init__(self, device_id: str, options: OpcuaOptions) -> None:
        self.device_id = device_id
        self.options = options
        self.streams: bool = options.conn.mode == "subscribe"
        """True when the agent must consume :meth:`stream` instead of polling."""
        self.dropped_changes = 0
        """Data changes dropped because ``stream()`` was not consumed fast enough."""
        self._session: _Session | None = None

    # ------------------------------------------------------------------ lifecycle

    async def connect(self) -> None:
        """Open a new session (always a new Client), resolve nodes, subscribe if asked."""
        await self.close()
        conn = self.options.conn
        client = Client(conn.endpoint, timeout=conn.timeout, watchdog_intervall=conn.timeout)
        client.session_timeout = int(conn.session_timeout * 1000)
        client.application_uri = conn.application_uri
        if conn.username:
            client.set_user(conn.username)
        if conn.password is not None:
            client.set_password(conn.password.get_secret_value())
        session = _Session(client, _Feed(self))
        client.connection_lost_callback = self._lost_callback(session)
        try:
            async with self._call(session, f"connect to {conn.endpoint}", _connect_budget(conn)):
                await self._secure(client)
                await client.connect()
            await self._resolve(session)
            if self.streams:
                await self._subscribe(session)
        except BaseException:
            await _discard(client, conn.timeout)
            raise
        self._session = session
        _log.debug("%s: connected to %s", self.device_id, conn.endpoint)

    async def close(self) -> None:
        """Close the session (deleting its subscription); never raises."""
        session, self._session = self._session, None
        if session is None:
            return
        session.feed.push(_Lost("driver closed"))
        await _discard(session.client, self.options.conn.timeout)

    # ------------------------------------------------------------------ poll

    async def read(self, group: str) -> Reading:
        """Read every tag of ``group`` in one Read call; bad status codes go to ``errors``."""
        session = self._live()
        tags = self.options.group(group)
        unresolved = session.unresolved
        reading = Reading(ts=0, errors={t: unresolved[t] for t in tags if t in unresolved})
        names = [t for t in tags if t in session.nodes]
        if names:
            params = ua.ReadParameters()
            params.TimestampsToReturn = ua.TimestampsToReturn.Both
            params.NodesToRead = [_read_value_id(session.nodes[t]) for t in names]
            async with self._call(session, "read", self.options.conn.timeout):
                results = await session.client.uaclient.read(params)
            if len(results) != len(names):
                # Never attribute a value to the wrong tag.
                count = f"{len(results)} values for {len(names)} nodes"
                raise self._dead(session, f"server answered {count}")
            stamps = [
                self._fill(reading, tag, tags[tag], dv)
                for tag, dv in zip(names, results, strict=True)
            ]
            reading.ts = max((s for s in stamps if s is not None), default=0)
        reading.ts = reading.ts or now_ms()
        return reading

    def _fill(self, reading: Reading, tag: str, spec: OpcuaTag, dv: ua.DataValue) -> int | None:
        change = _change(tag, spec, dv)
        if change.error is not None:
            reading.errors[tag] = change.error
            return None
        assert change.value is not None
        reading.values[tag] = change.value
        # only a usable device timestamp takes part in the group's newest; 0 = none
        return stamp_ms(dv.SourceTimestamp, dv.ServerTimestamp, 0) or None

    # ------------------------------------------------------------------ subscribe

    async def stream(self) -> AsyncIterator[Reading]:
        """Yield data changes as they arrive (subscribe mode), until the session dies.

        Changes that arrive together with the same source timestamp are merged
        into one :class:`Reading`; two changes of one tag are never merged, so a
        queued burst comes out as several readings in order. Raises
        :class:`DeviceUnavailable` when the session is lost (after yielding what
        arrived before the loss); the agent then closes, backs off and connects.
        """
        if not self.streams:
            raise RuntimeError("stream() needs connection.opcua.mode: subscribe")
        session = self._live()
        idle = max(3 * self.options.conn.publishing_interval, self.options.conn.timeout)
        while True:
            try:
                async with asyncio.timeout(idle):
                    item = await session.feed.get()
            except TimeoutError:
                await self._probe(session)
                continue
            if isinstance(item, _Lost):
                raise DeviceUnavailable(f"{self.device_id}: {item.reason}")
            yield _merge(item, session.feed)

    async def _subscribe(self, session: _Session) -> None:
        conn = self.options.conn
        first = Reading(ts=now_ms(), errors=dict(session.unresolved))
        names = list(session.nodes)
        async with self._call(session, "create subscription", conn.timeout * 2):
            sub = await session.client.create_subscription(
                conn.publishing_interval * 1000, _Handler(self, session)
            )
            requests = [self._monitor_request(session, i + 1, n) for i, n in enumerate(names)]
            results = await sub.create_monitored_items(requests) if requests else []
        for tag, result in zip(names, results, strict=True):
            if isinstance(result, ua.StatusCode):
                first.errors[tag] = result.name
        for tag, error in first.errors.items():
            session.feed.push(_Change(first.ts, tag, error=error))

    def _monitor_request(
        self, session: _Session, handle: int, tag: str
    ) -> ua.MonitoredItemCreateRequest:
        spec = self.options.tags[tag]
        session.handles[handle] = tag
        params = ua.MonitoringParameters()
        params.ClientHandle = handle
        interval = spec.sampling_interval
        if interval is None:
            interval = self.options.conn.publishing_interval
        params.SamplingInterval = interval * 1000
        params.QueueSize = 10  # keeps every change between two publishes, each with its timestamp
        params.DiscardOldest = True
        if spec.deadband is not None:
            params.Filter = ua.DataChangeFilter(
                Trigger=ua.DataChangeTrigger.StatusValue,
                DeadbandType=_ABSOLUTE_DEADBAND,
                DeadbandValue=spec.deadband,
            )
        request = ua.MonitoredItemCreateRequest()
        request.ItemToMonitor = _read_value_id(session.nodes[tag])
        request.MonitoringMode = ua.MonitoringMode.Reporting
        request.RequestedParameters = params
        return request

    async def _probe(self, session: _Session) -> None:
        """Nothing arrived for a while: check the session is alive with a cheap read."""
        if session.lost is not None:
            raise DeviceUnavailable(f"{self.device_id}: {session.lost}")
        state = session.client.get_node(ua.NodeId(ua.Int32(ObjectIds.Server_ServerStatus_State)))
        async with self._call(session, "keepalive read", self.options.conn.timeout):
            await state.read_value()

    # ------------------------------------------------------------------ resolution

    async def _resolve(self, session: _Session) -> None:
        """Turn every tag's address into a NodeId, once per connection."""
        tags = self.options.tags
        timeout = self.options.conn.timeout
        uris: list[str] = []
        if any(t.node and t.node.startswith("nsu=") for t in tags.values()):
            async with self._call(session, "read namespace array", timeout):
                uris = list(await session.client.get_namespace_array())
        paths = {name: t.browse_path for name, t in tags.items() if t.browse_path}
        for tag, spec in tags.items():
            if spec.node:
                _resolve_node(session, tag, spec.node, uris)
        if paths:
            root = ua.NodeId(ua.Int32(ObjectIds.RootFolder))
            async with self._call(session, "translate browse paths", timeout):
                results = await session.client.translate_browsepaths(
                    root, [_relative_path(p) for p in paths.values()]
                )
            for (tag, path), result in zip(paths.items(), results, strict=True):
                if result.StatusCode.is_good() and result.Targets:
                    target = result.Targets[0].TargetId
                    session.nodes[tag] = ua.NodeId(
                        target.Identifier, target.NamespaceIndex, target.NodeIdType
                    )
                else:
                    reason = result.StatusCode.name
                    session.unresolved[tag] = f"browse path {path} not found ({reason})"

    # ------------------------------------------------------------------ errors

    @asynccontextmanager
    async def _call(self, session: _Session, what: str, limit: float) -> AsyncIterator[None]:
        """Run asyncua calls under our timeout; translate whatever they raise."""
        scope = asyncio.timeout(limit)
        try:
            async with scope:
                yield
        except DriverError:
            raise
        except TimeoutError as exc:
            # asyncua's own per-request timeout may fire before our budget does.
            waited = limit if scope.expired() else self.options.conn.timeout
            raise self._dead(session, f"{what}: no answer within {waited:g}s") from exc
        except UaStatusCodeError as exc:
            raise self._dead(session, f"{what}: {_status_name(exc.code)}") from exc
        except UaError as exc:
            raise self._dead(session, f"{what}: {self._ua_reason(exc)}") from exc
        except (OSError, ValueError, RuntimeError) as exc:
            raise self._dead(session, f"{what}: {exc or type(exc).__name__}") from exc

    def _ua_reason(self, exc: UaError) -> str:
        text = str(exc) or type(exc).__name__
        # asyncua's find_endpoint wording: the server lists no endpoint for our security.
        if text.startswith("No matching endpoints"):
            conn = self.options.conn
            policy, mode = conn.security_policy or "None", conn.security_mode or "None"
            return (
                f"the server offers no endpoint with security_policy {policy} and"
                f" security_mode {mode}; set both to one it offers"
            )
        return text

    def _dead(self, session: _Session, reason: str) -> DeviceUnavailable:
        if session.lost is None:
            session.lost = reason
            session.feed.push(_Lost(reason))
        return DeviceUnavailable(f"{self.device_id}: {reason}")

    def _live(self) -> _Session:
        session = self._session
        if session is None:
            raise DeviceUnavailable(f"{self.device_id}: not connected")
        if session.lost is not None:
            raise DeviceUnavailable(f"{self.device_id}: {session.lost}")
        return session

    def _lost_callback(self, session: _Session) -> Any:
        async def lost(exc: Exception) -> None:
            # asyncua's keepalive probe failed or the socket closed.
            self._dead(session, f"connection lost ({exc or type(exc).__name__})")

        return lost

    async def _secure(self, client: Client) -> None:
        conn = self.options.conn
        if not conn.secure:
            return
        # The config refuses Basic256Sha256 without both files.
        assert conn.certificate is not None
        assert conn.private_key is not None
        creds = await asyncio.to_thread(
            load_credentials,
            conn.certificate,
            conn.private_key,
            conn.server_certificate,
            conn.application_uri,
        )
        pinned = creds.server_certificate
        await client.set_security(
            security_policies.SecurityPolicyBasic256Sha256,
            certificate=_material(creds.certificate),
            private_key=_material(creds.private_key),
            server_certificate=_material(pinned) if pinned else None,
            mode=getattr(ua.MessageSecurityMode, conn.security_mode or "SignAndEncrypt"),
        )


class _Handler:
    """asyncua subscription callbacks -> the session's queue (sync: never blocks publishing)."""

    def __init__(self, driver: OpcuaDriver, session: _Session) -> None:
        self._driver = driver
        self._session = session

    def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
        item = data.monitored_item
        tag = self._session.handles.get(item.ClientHandle)
        if tag is not None:
            self._session.feed.push(_change(tag, self._driver.options.tags[tag], item.Value))

    def status_change_notification(self, status: ua.StatusChangeNotification) -> None:
        if status.Status.is_bad():
            self._driver._dead(self._session, f"subscription {status.Status.name}")


# ---------------------------------------------------------------------- helpers


def _connect_budget(conn: Any) -> float:
    # Hello, channel, session, activate (and the endpoint list with security):
    # each gets the per-request timeout, but a dead link must fail within one budget.
    return float(conn.timeout) * (3 if conn.secure else 2)


def _material(material: Material) -> uacrypto.CertProperties:
    # Bytes with an explicit format: asyncua would otherwise guess it from a suffix.
    return uacrypto.CertProperties(material.content, extension=material.format)


def _status_name(code: int) -> str:
    """``BadCertificateUntrusted``...: our table first, then asyncua's full one."""
    known = name(code)
    if not known.startswith(("Good 0x", "Uncertain 0x", "Bad 0x")):
        return known
    masked = code & 0xFFFF0000
    if masked in status_codes.code_to_name_doc:
        return str(status_codes.code_to_name_doc[masked][0])
    return known


def _read_value_id(node: ua.NodeId) -> ua.ReadValueId:
    rv = ua.ReadValueId()
    rv.NodeId = node
    rv.AttributeId = AttributeIds.Value
    return rv


def _relative_path(path: str) -> ua.RelativePath:
    elements = []
    for part in path.split("/"):
        index, browse_name = part.split(":", 1)
        element = ua.RelativePathElement()
        element.ReferenceTypeId = ua.NodeId(ua.Int32(ObjectIds.HierarchicalReferences))
        cast(Any, element).IsInverse = False  # ua.Boolean is a marker type, bool at run time
        element.TargetName = ua.QualifiedName(browse_name, ua.Int16(int(index)))
        elements.append(element)
    return ua.RelativePath(Elements=elements)


def _resolve_node(session: _Session, tag: str, text: str, uris: list[str]) -> None:
    parsed = ua.NodeId.from_string(text)
    uri = getattr(parsed, "NamespaceUri", None)
    if uri is None:
        session.nodes[tag] = ua.NodeId(parsed.Identifier, parsed.NamespaceIndex, parsed.NodeIdType)
    elif uri in uris:
        index = ua.Int16(uris.index(uri))
        session.nodes[tag] = ua.NodeId(parsed.Identifier, index, parsed.NodeIdType)
    else:
        session.unresolved[tag] = f"namespace {uri} not on server"


def _change(tag: str, spec: OpcuaTag, dv: ua.DataValue) -> _Change:
    ts = stamp_ms(dv.SourceTimestamp, dv.ServerTimestamp, now_ms())
    status = dv.StatusCode.value if dv.StatusCode is not None else 0
    error = error_for(status)
    if error is not None:
        return _Change(ts, tag, error=error)
    try:
        return _Change(ts, tag, value=coerce(dv.Value.Value if dv.Value else None, spec))
    except ValueProblem as exc:
        return _Change(ts, tag, error=str(exc))


def _merge(first: _Change, feed: _Feed) -> Reading:
    reading = Reading(ts=first.ts)
    _add(reading, first)
    while (nxt := feed.take_if(first.ts, reading)) is not None:
        _add(reading, nxt)
    return reading


def _add(reading: Reading, change: _Change) -> None:
    if change.error is not None:
        reading.errors[change.tag] = change.error
    elif change.value is not None:
        reading.values[change.tag] = change.value


async def _discard(client: Client, limit: float) -> None:
    """Disconnect politely within ``limit`` seconds, then drop the socket regardless."""
    try:
        async with asyncio.timeout(limit):
            await client.disconnect()
    except Exception as exc:  # closing must never raise
        _log.debug("disconnect: %r", exc)
    with suppress(Exception):
        client.uaclient.disconnect_socket()
