"""Modbus TCP and RTU driver: the only module of the package that imports pymodbus.

Several devices (unit ids) behind one TCP gateway or on one serial line share
one pymodbus client through a :class:`SharedTransport`, which sends one request
at a time. pymodbus runs with no retries and no automatic reconnect: the
scheduler owns retries, and this module reconnects transparently on the next
request after any timeout or broken reply.

Why a timeout closes the client: a reply that arrives after we gave up could
otherwise be taken for the answer to the next request. On a shared serial line
the port is reopened by the very next request (of any unit), so one silent
unit never stops the others from being polled.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, cast

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException
from pymodbus.framer import FramerType
from pymodbus.pdu import ExceptionResponse

from drivers.base import (
    BaseDriver,
    ConfigError,
    ConfigProblem,
    DeviceUnavailable,
    Reading,
    Value,
    now_ms,
)
from drivers.modbus.config import ModbusOptions, RtuConnection, TcpConnection
from drivers.modbus.decode import BlockDecoder, Decoded, decode_all_orders, decode_bits
from drivers.modbus.plan import PlannedRead, Request, layout_of, plan_groups

_log = logging.getLogger(__name__)

EXCEPTION_NAMES = {
    0x01: "illegal function",
    0x02: "illegal data address",
    0x03: "illegal data value",
    0x04: "device failure",
    0x05: "acknowledge",
    0x06: "device busy",
    0x08: "memory parity error",
    0x0A: "gateway path unavailable",
    0x0B: "gateway target failed to respond",
}
_FUNCTION_CODES = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}
_CALLS = {
    "coil": "read_coils",
    "discrete": "read_discrete_inputs",
    "holding": "read_holding_registers",
    "input": "read_input_registers",
}


def exception_text(code: int) -> str:
    """``exception 02 illegal data address``: the reason given to the tags of a refused read."""
    return f"exception {code:02X} {EXCEPTION_NAMES.get(code, 'unknown')}".rstrip()


@dataclass(frozen=True, slots=True)
class ExceptionReply:
    """The device answered with a Modbus exception response."""

    code: int


Block = list[int] | list[bool]


# --------------------------------------------------------------------------- transports


class SharedTransport:
    """One pymodbus client for every unit behind one gateway or on one serial line."""

    def __init__(self, name: str, settings: TcpConnection | RtuConnection) -> None:
        self.name = name
        self.settings = settings
        self.users = 0
        self.lock = asyncio.Lock()
        self._client: AsyncModbusTcpClient | AsyncModbusSerialClient | None = None
        self._last_end = 0.0

    def _new_client(self) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
        # retries=0 and reconnect_delay=0: retries and reconnects are ours.
        s = self.settings
        if isinstance(s, TcpConnection):
            return AsyncModbusTcpClient(
                s.host, port=s.port, timeout=s.timeout, retries=0, reconnect_delay=0, name=self.name
            )
        return AsyncModbusSerialClient(
            s.port,
            framer=FramerType.RTU,
            baudrate=s.baud,
            bytesize=s.byte_size,
            parity=s.parity,
            stopbits=s.stop_bits,
            timeout=s.timeout,
            retries=0,
            reconnect_delay=0,
            name=self.name,
        )

    @property
    def connected(self) -> bool:
        """True while the client holds an open connection."""
        return self._client is not None and bool(self._client.connected)

    def drop(self) -> None:
        """Close the client; the next request opens a fresh one."""
        if self._client is not None:
            self._client.close()
            self._client = None

    async def connect(self, limit_s: float) -> None:
        """Open the connection now, so that ``connect()`` reports an unreachable device."""
        async with self.lock:
            await self._ensure_connected(limit_s)

    async def _ensure_connected(self, limit_s: float) -> None:
        if self.connected:
            return
        self.drop()
        client = self._new_client()
        try:
            async with asyncio.timeout(limit_s):
                ok = await client.connect()
        except TimeoutError as exc:
            client.close()
            raise DeviceUnavailable(f"{self.name}: no connection within {limit_s:g}s") from exc
        except asyncio.CancelledError:
            client.close()
            raise
        if not ok:
            client.close()
            raise DeviceUnavailable(f"{self.name}: cannot connect")
        _log.debug("%s: connected", self.name)
        self._client = client

    async def read(
        self, unit: int, request: Request, *, reply_s: float, connect_s: float, delay_s: float
    ) -> Block | ExceptionReply:
        """Send one read, one at a time on this transport; DeviceUnavailable when no valid reply."""
        async with self.lock:
            loop = asyncio.get_running_loop()
            wait = self._last_end + delay_s - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                await self._ensure_connected(connect_s)
                return await self._read_locked(unit, request, reply_s)
            finally:
                self._last_end = loop.time()

    async def _read_locked(
        self, unit: int, request: Request, reply_s: float
    ) -> Block | ExceptionReply:
        assert self._client is not None  # _ensure_connected succeeded
        call = getattr(self._client, _CALLS[request.function])
        try:
            async with asyncio.timeout(reply_s):
                response = await call(request.address, count=request.count, device_id=unit)
        except TimeoutError as exc:
            self.drop()
            raise DeviceUnavailable(f"unit {unit}: no reply within {reply_s:g}s") from exc
        except (ModbusException, OSError) as exc:
            self.drop()
            raise DeviceUnavailable(f"unit {unit}: no valid reply ({exc})") from exc
        except asyncio.CancelledError:
            self.drop()  # the reply may still come and must not meet the next request
            raise
        return self._check(unit, request, response)

    def _check(self, unit: int, request: Request, response: Any) -> Block | ExceptionReply:
        expected = _FUNCTION_CODES[request.function]
        if isinstance(response, ExceptionResponse) and response.function_code == expected | 0x80:
            return ExceptionReply(int(response.exception_code))
        if response.isError() or response.function_code != expected:
            self.drop()
            raise DeviceUnavailable(f"unit {unit}: reply does not match the request ({response})")
        if request.is_bits:
            return [bool(b) for b in response.bits]
        return [int(r) for r in response.registers]


_REGISTRIES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, TransportRegistry] = (
    weakref.WeakKeyDictionary()
)


class TransportRegistry:
    """Reference-counted shared transports, keyed by ``host:port`` or serial port."""

    def __init__(self) -> None:
        self._open: dict[str, SharedTransport] = {}

    @staticmethod
    def for_running_loop() -> TransportRegistry:
        """The registry of the running event loop (locks and clients belong to one loop)."""
        loop = asyncio.get_running_loop()
        registry = _REGISTRIES.get(loop)
        if registry is None:
            registry = _REGISTRIES[loop] = TransportRegistry()
        return registry

    def acquire(self, settings: TcpConnection | RtuConnection) -> SharedTransport:
        """The transport for ``settings``, shared with other devices on the same link."""
        key = _key(settings)
        transport = self._open.get(key)
        if transport is None:
            transport = self._open[key] = SharedTransport(key, settings)
        elif isinstance(settings, RtuConnection) and _line(settings) != _line(transport.settings):
            raise ConfigError(
                [
                    ConfigProblem(
                        ("connection", "modbus_rtu"),
                        f"{settings.port} is already open by another device with other "
                        "line settings (baud, parity, stop_bits, byte_size must match)",
                    )
                ]
            )
        transport.users += 1
        return transport

    def release(self, transport: SharedTransport) -> None:
        """Drop one user; the last one closes the connection."""
        transport.users -= 1
        if transport.users <= 0:
            transport.drop()
            if self._open.get(transport.name) is transport:
                del self._open[transport.name]

    def __len__(self) -> int:
        return len(self._open)


def _key(settings: TcpConnection | RtuConnection) -> str:
    if isinstance(settings, TcpConnection):
        return f"tcp://{settings.host}:{settings.port}"
    return settings.port


def _line(settings: TcpConnection | RtuConnection) -> tuple[object, ...]:
    if isinstance(settings, RtuConnection):
        return (settings.baud, settings.parity, settings.stop_bits, settings.byte_size)
    return ()


# --------------------------------------------------------------------------- driver


@dataclass(frozen=True, slots=True)
class RawTagRead:
    """What ``inspect`` found for one tag: raw words (or bits) and their decodings."""

    tag: str
    function: str
    address: int
    raw: tuple[int, ...] | tuple[bool, ...]
    value: Value | None
    error: str | None = None
    all_orders: dict[str, Value] = field(default_factory=dict)


class _CompiledPlans:
    """A device's requests and compiled decoders, shared by the devices with equal tags.

    Many devices of one profile have the same tags (the site loader gives them
    the same immutable tag models) and the same protocol options: their
    requests and decoders are equal, so they are planned and compiled once,
    and dropped with the last device that uses them. Decoders keep no state
    between calls, so one serves every device.
    """

    _live: ClassVar[weakref.WeakValueDictionary[Hashable, _CompiledPlans]] = (
        weakref.WeakValueDictionary()
    )

    def __init__(self, options: ModbusOptions) -> None:
        self.tags = tuple(options.tags.values())  # keeps the ids of the key valid
        self.plans = plan_groups(options)
        # Decoders compiled once: a poll repeats the same requests with the same layouts.
        self.decoders = {
            group: tuple((p, None if p.request.is_bits else BlockDecoder(p.layouts)) for p in plans)
            for group, plans in self.plans.items()
        }

    @classmethod
    def of(cls, options: ModbusOptions) -> _CompiledPlans:
        """The plans of ``options``: those of an equal device still running, else new ones."""
        key = (
            options.protocol.model_dump_json(),
            tuple((name, id(tag)) for name, tag in options.tags.items()),
        )
        found = cls._live.get(key)
        if found is None:
            found = cls(options)
            cls._live[key] = found
        return found


class ModbusDriver(BaseDriver):
    """One Modbus device (one unit id), over TCP or RTU."""

    def __init__(
        self, device_id: str, options: ModbusOptions, *, transports: TransportRegistry | None = None
    ) -> None:
        self.device_id = device_id
        self.options = options
        shared = _CompiledPlans.of(options)
        self._compiled = shared  # the devices using these plans keep them alive
        self.plans = shared.plans
        self._decoders = shared.decoders
        self._registry = transports
        self._transport: SharedTransport | None = None
        settings = options.connection.settings
        self._timeout = settings.timeout
        self._connect_timeout = (
            settings.connect_timeout if isinstance(settings, TcpConnection) else settings.timeout
        )

    async def connect(self) -> None:
        """Join (or open) the shared connection; DeviceUnavailable when it cannot be opened."""
        if self._transport is None:
            if self._registry is None:  # not `or`: an empty registry is falsy
                self._registry = TransportRegistry.for_running_loop()
            self._transport = self._registry.acquire(self.options.connection.settings)
        await self._transport.connect(self._connect_timeout)

    async def close(self) -> None:
        """Leave the shared connection (closed with its last user). Never raises."""
        if self._transport is not None and self._registry is not None:
            self._registry.release(self._transport)
        self._transport = None

    async def read(self, group: str) -> Reading:
        """Poll every tag of ``group`` once (a group without tags gives an empty reading).

        ``ts`` is the arrival of the first request's reply, not the start of the
        poll: behind a shared gateway or line the first request may wait long for
        other units. Tags served by later requests of the group were read after
        ``ts``, by at most the time those requests took (waits included).
        """
        reading = Reading(ts=now_ms())
        for index, (planned, decoder) in enumerate(self._decoders.get(group, ())):
            reply = await self._read(planned.request)
            if index == 0:
                reading.ts = now_ms()
            _fill(reading, planned, reply, decoder)
        return reading

    async def inspect(self, tags: Sequence[str]) -> list[RawTagRead]:
        """Read ``tags`` one by one for commissioning: raw words, value, every byte order."""
        unknown = [t for t in tags if t not in self.options.tags]
        if unknown:
            raise ConfigError([ConfigProblem(("tags", t), "no such tag") for t in unknown])
        return [await self._inspect_one(name) for name in tags]

    async def _inspect_one(self, name: str) -> RawTagRead:
        tag = self.options.tags[name]
        request = Request(tag.function, tag.address, tag.width, ((name, 0),))
        reply = await self._read(request)
        if isinstance(reply, ExceptionReply):
            return RawTagRead(name, tag.function, tag.address, (), None, exception_text(reply.code))
        planned = PlannedRead(request, (layout_of(name, tag, 0, self.options),))
        reading = Reading(ts=0)
        _fill(reading, planned, reply)
        raw = tuple(reply[: tag.width])
        orders: dict[str, Value] = {}
        if not request.is_bits and tag.width > 1 and len(reply) >= tag.width:
            orders = decode_all_orders([int(r) for r in raw], tag.type)
        value, error = reading.values.get(name), reading.errors.get(name)
        return RawTagRead(name, tag.function, tag.address, raw, value, error, orders)

    async def _read(self, request: Request) -> Block | ExceptionReply:
        if self._transport is None:
            raise DeviceUnavailable(f"{self.device_id}: not connected")
        return await self._transport.read(
            self.options.protocol.unit_id,
            request,
            reply_s=self._timeout,
            connect_s=self._connect_timeout,
            delay_s=self.options.protocol.inter_request_delay,
        )


def _fill(
    reading: Reading,
    planned: PlannedRead,
    reply: Block | ExceptionReply,
    decoder: BlockDecoder | None = None,
) -> None:
    request = planned.request
    if isinstance(reply, ExceptionReply):
        _fail_all(reading, planned, exception_text(reply.code))
        return
    # pymodbus pads bits to whole bytes; anything else of the wrong size is not our reply.
    expected = -(-request.count // 8) * 8 if request.is_bits else request.count
    if len(reply) != expected:
        unit = "bits" if request.is_bits else "registers"
        _fail_all(reading, planned, f"reply has {len(reply)} {unit}, expected {expected}")
        return
    if request.is_bits:
        decoded = decode_bits([bool(b) for b in reply], planned.layouts)
        reading.values.update(decoded.values)
        reading.errors.update(decoded.errors)
    else:
        # registers (_check made them ints), decoded straight into the reading's dicts
        into = Decoded(reading.values, reading.errors)
        (decoder or BlockDecoder(planned.layouts)).decode(cast(list[int], reply), into)


def _fail_all(reading: Reading, planned: PlannedRead, reason: str) -> None:
    reading.errors.update(dict.fromkeys((layout.name for layout in planned.layouts), reason))
