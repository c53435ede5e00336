"""The small interface every driver implements, and the error tree.

A driver turns one device's tags into :class:`Reading` objects. It is built
from validated options without any I/O (``DriverSpec.create``), connects and
closes with ``async with``, and does one poll per ``await driver.read(group)``.
Timing, backoff and retries belong to the agent's scheduler, not to drivers.

Every library exception is translated into one of the errors below right where
the protocol library is called, so the agent never sees a pymodbus or asyncua
exception type.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Hashable, Iterator, Mapping, MutableMapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Annotated, Any, Literal, NamedTuple, Protocol, Self, TypeVar, runtime_checkable
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictInt, ValidationError

Value = bool | int | float | str
"""A decoded, scaled engineering value."""


def now_ms() -> int:
    """Wall-clock time as epoch milliseconds UTC, the ``ts`` of a reading."""
    return time.time_ns() // 1_000_000


def monotonic_ms() -> int:
    """The monotonic clock in milliseconds: for intervals and heartbeats, never for ``ts``.

    A wall clock stepped by NTP or by hand (an hour back) must not stretch or
    shorten a heartbeat; the monotonic clock never steps.
    """
    return time.monotonic_ns() // 1_000_000


CLOCK_FLOOR_MS = 1_796_083_200_000
"""2026-12-01T00:00Z, the release date of this version: any time before it is wrong.

A box without a real-time clock boots in 1970 or 2000; a device (a PLC, an
OPC UA server) with an unset clock stamps values in 1601, 1970 or 2000.
"""

CLOCK_CEILING_MS = 7_258_118_400_000
"""2200-01-01T00:00Z: a timestamp after it is a placeholder (DateTime.MaxValue), not a time."""


def plausible_ms(ms: int) -> bool:
    """Whether an epoch-ms timestamp can be a real time (between the floor and the ceiling)."""
    return CLOCK_FLOOR_MS <= ms < CLOCK_CEILING_MS


def not_finite(value: float) -> str:
    """The tag error of a NaN or infinite float, the same text from every driver.

    The message is JSON, which has no NaN or infinity; and no instrument
    measures one: a device sends it for "no value" (a sensor fault, a
    division by zero in the PLC). So it is that tag's error, never a value.
    """
    return f"not a number ({value})"


@dataclass(slots=True)
class Reading:
    """One sample of some tags of one device.

    ``values`` holds the tags read fine; ``errors`` maps each tag that could not
    be read to a short reason (``"timeout"``, ``"illegal data address"``...).
    A tag is in one of the two, never both.
    """

    ts: int
    values: dict[str, Value] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    clock: str | None = None
    """Set by the agent when its own clock could not be trusted at read time
    (``"unset"``, ``"unsynced"``: see ``agent/clock.py``); None otherwise."""


# --------------------------------------------------------------------------- errors


class DriverError(Exception):
    """Base of every error a driver raises."""


class ConfigProblem(NamedTuple):
    """One thing wrong with a configuration, located by its key path."""

    loc: tuple[str | int, ...]
    message: str


class ConfigError(DriverError):
    """Static configuration error: never retried. Carries every problem found."""

    def __init__(self, problems: Sequence[ConfigProblem]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(f"{_dotted(p.loc)}: {p.message}" for p in self.problems))


class DeviceUnavailable(DriverError):
    """The device cannot be reached or stopped answering: retried with backoff."""


class PointError(DriverError):
    """One tag (or one block of tags) could not be read; the rest of the poll is fine."""


def _dotted(loc: Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top)"


def problems_from_validation_error(
    exc: ValidationError, prefix: tuple[str | int, ...] = ()
) -> list[ConfigProblem]:
    """Translate a pydantic error into our located problems with plain-English messages."""
    problems = []
    for err in exc.errors(include_url=False):
        loc = prefix + tuple(p for p in err["loc"] if not _is_union_tag(p))
        kind = err["type"]
        if kind == "extra_forbidden":
            message = "unknown key"
        elif kind == "missing":
            message = "is required"
        else:
            message = err["msg"]
            if message.startswith("Value error, "):
                message = message[len("Value error, ") :]
            if "input" in err and kind not in ("model_type", "dict_type"):
                message = f"{err['input']!r}: {message}"
        problems.append(ConfigProblem(loc, message))
    return problems


def _is_union_tag(part: Any) -> bool:
    # pydantic puts a function-validator's name in the loc, e.g. "function-before[...]".
    return isinstance(part, str) and ("[" in part and part.endswith("]"))


# --------------------------------------------------------------------------- units

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h)?\s*$")
_DURATION_FACTOR = {"ms": 0.001, "s": 1.0, None: 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMgG]i?[bB]?|[bB])?\s*$")


def parse_duration(value: Any) -> float:
    """``"500ms"``, ``"1s"``, ``"2m"``, ``"1h"`` or a number of seconds -> seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 500ms, 1s, 2m")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError("expected a duration such as 500ms, 1s, 2m")
        seconds = float(match.group(1)) * _DURATION_FACTOR[match.group(2)]
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


def parse_size(value: Any) -> int:
    """``"256MB"``, ``"64KiB"``, ``"1G"`` or a number of bytes -> bytes."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 64MB")
    if isinstance(value, int):
        size = value
    else:
        match = _SIZE.match(str(value))
        if not match:
            raise ValueError("expected a size such as 512KB, 64MB, 1GB")
        unit = (match.group(2) or "").lower()
        base = 1024 if "i" in unit else 1000
        power = {"": 0, "b": 0, "k": 1, "m": 2, "g": 3}[unit[:1]]
        size = int(float(match.group(1)) * base**power)
    if size < 0:
        raise ValueError("a size cannot be negative")
    return size


Duration = Annotated[float, BeforeValidator(parse_duration, json_schema_input_type=float | str)]
"""Seconds, written in config as ``500ms``, ``1s``, ``2m``..."""

ByteSize = Annotated[int, BeforeValidator(parse_size, json_schema_input_type=int | str)]
"""Bytes, written in config as ``256MB``, ``64KiB``..."""


# --------------------------------------------------------------------------- tags


_shared: ContextVar[dict[Hashable, Any] | None] = ContextVar("shared_parsing", default=None)


@contextmanager
def shared_parsing() -> Iterator[None]:
    """Within the block, drivers may parse equal option parts once and share the result.

    A site loads many devices of one profile: their tags are equal, so a
    driver can validate each distinct tag once and give every device the
    same (immutable) model, which saves the time and the memory of a copy
    per device. Outside the block :func:`parse_memo` is None. Blocks nest.
    """
    token = _shared.set({}) if _shared.get() is None else None
    try:
        yield
    finally:
        if token is not None:
            _shared.reset(token)


def parse_memo() -> dict[Hashable, Any] | None:
    """The memo of the current :func:`shared_parsing` block, None outside one."""
    return _shared.get()


class StrictModel(BaseModel):
    """Config model base: unknown keys are errors, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class TagBase(StrictModel):
    """Tag attributes every driver shares; drivers subclass it with their addressing."""

    group: str = Field("default", description="Poll group (its interval is set per device).")
    unit: str | None = Field(None, description="Engineering unit, for people and the cloud.")
    description: str | None = Field(None, description="One line for people.")
    deadband: float | None = Field(
        None,
        ge=0,
        description="Report only changes larger than this (absolute). Without deadband "
        "and heartbeat the tag is reported on every poll.",
    )
    heartbeat: Duration | None = Field(
        None, gt=0, description="Report at least this often even without a change."
    )
    writable: bool = Field(False, description="Writes are refused unless this is true.")


class SerialLine(StrictModel):
    """An RS-232/RS-485 line: a device path or a pyserial URL, and its character framing."""

    port: str = Field(min_length=1, description="/dev/ttyUSB0, socket://HOST:PORT, loop://...")
    baud: StrictInt = Field(9600, gt=0, description="Line speed; every unit on a line uses one.")
    parity: Literal["N", "E", "O"] = Field("N", description="N none, E even, O odd.")
    stop_bits: Literal[1, 2] = Field(1, description="Stop bits per character.")
    byte_size: Literal[7, 8] = Field(8, description="Data bits per character.")

    @property
    def framing(self) -> str:
        """Baud rate and character framing, ``9600 8N1``."""
        return f"{self.baud} {self.byte_size}{self.parity}{self.stop_bits}"

    def char_seconds(self) -> float:
        """Seconds one character takes on the wire (start, data, parity, stop bits)."""
        bits = 1 + self.byte_size + (0 if self.parity == "N" else 1) + self.stop_bits
        return bits / self.baud

    def load(self, seconds_per_second: float, kind: str) -> LineLoad:
        """This line's share taken by one device (its options hold it under ``connection.kind``)."""
        return LineLoad(
            self.port, seconds_per_second, self.baud, self.framing, ("connection", kind)
        )

    def endpoint(self, kind: str, detail: str = "") -> Endpoint:
        """Where this line is: a local port, or the TCP serial server of a pyserial URL."""
        framing = self.framing
        text = f"{kind} {self.port} {framing}" + (f" {detail}" if detail else "")
        if "://" in self.port:  # socket://HOST:PORT, rfc2217://HOST:PORT
            url = urlsplit(self.port)
            tcp = (url.hostname, url.port) if url.hostname and url.port else None
            return Endpoint(kind, text, tcp=tcp)
        return Endpoint(kind, text, serial_port=self.port)


M = TypeVar("M", bound=BaseModel)


def validate_section(
    model: type[M],
    options: Mapping[str, Any],
    key: str,
    problems: list[ConfigProblem],
    *,
    required: bool = True,
) -> M | None:
    """Validate ``options[key]`` with ``model``; problems located under ``key``, None if bad."""
    if key not in options:
        if required:
            problems.append(ConfigProblem((key,), "is required"))
            return None
        return model.model_validate({})
    try:
        return model.model_validate(options[key])
    except ValidationError as exc:
        problems.extend(problems_from_validation_error(exc, (key,)))
        return None


# --------------------------------------------------------------------------- driver


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a device is reached, for people (``text``) and for reachability checks.

    ``tcp`` is the host and port a TCP connect should reach (Modbus TCP, an
    OPC UA server, a TCP serial server behind ``socket://``); ``serial_port``
    the local device path of a serial line. Neither is set when the driver
    cannot tell (a ``loop://`` test URL).
    """

    kind: str
    text: str
    """E.g. ``modbus_tcp 10.0.0.21:502 unit 1``, ``modbus_rtu /dev/ttyUSB0 19200 8N1 unit 2``."""
    tcp: tuple[str, int] | None = None
    serial_port: str | None = None


@runtime_checkable
class DeviceOptions(Protocol):
    """What the agent needs from a driver's validated options."""

    @property
    def tags(self) -> Mapping[str, TagBase]: ...


@runtime_checkable
class HasEndpoint(Protocol):
    """Options that can say where their device is (every shipped driver's options)."""

    def endpoint(self) -> Endpoint:
        """Where the device is reached; no I/O."""
        ...


@runtime_checkable
class NamesSecretFiles(Protocol):
    """Options naming files that hold a secret (a client private key), to keep from others."""

    def secret_files(self) -> Mapping[str, Path]:
        """What each file holds (``the OPC UA client key``) -> the file, as the driver reads it."""
        ...


class Driver(Protocol):
    """One device (or one unit behind a gateway): connect, read, close."""

    device_id: str

    async def connect(self) -> None:
        """Open the connection; raise :class:`DeviceUnavailable` on failure."""

    async def close(self) -> None:
        """Close the connection; never raises."""

    async def read(self, group: str) -> Reading:
        """Poll every tag of ``group`` once.

        Raise :class:`DeviceUnavailable` when the device did not answer at all
        (the agent then reconnects with backoff); report tags that failed alone
        in ``Reading.errors``.
        """

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


@runtime_checkable
class Streaming(Protocol):
    """A driver that can push readings instead of being polled (OPC UA subscriptions,
    a serial line in listen mode). The agent consumes ``stream()`` while ``streams``
    is true for this device's options, and polls otherwise."""

    @property
    def streams(self) -> bool: ...

    def stream(self) -> AsyncIterator[Reading]:
        """Readings as the device sends them, until it fails (``DeviceUnavailable``)."""
        ...


@runtime_checkable
class Inspectable(Protocol):
    """A driver that can show what is behind its values (``edge-agent read --raw``)."""

    async def inspect(self, tags: Sequence[str]) -> Sequence[Any]:
        """One raw read of ``tags``: registers, bits, the value in other byte orders..."""
        ...


@runtime_checkable
class ReportsCounters(Protocol):
    """A driver that keeps counters of its own (garbage lines, dropped changes...)."""

    def counters(self) -> dict[str, object]:
        """Every counter by name, for status and metrics."""
        ...


@dataclass(frozen=True, slots=True)
class LineLoad:
    """One device's share of a shared serial line, as its driver estimates it."""

    link: str
    """The serial port: devices with the same value share the line."""
    seconds_per_second: float
    """Line time the polls need per second of wall time (1.0 = the whole line)."""
    baud: int
    framing: str
    """Baud rate and character framing (``9600 8N1``); devices on one line must agree."""
    settings: tuple[str, ...]
    """Where the line settings are in the device's options (``connection.modbus_rtu``)."""


@runtime_checkable
class EstimatesLineLoad(Protocol):
    """A driver spec that knows how much of a shared serial line a device's polls use."""

    def link_load(self, options: DeviceOptions, intervals: Mapping[str, float]) -> LineLoad | None:
        """The device's share of its line, None when it is not on a shared line."""
        ...


class VectorOutcome(NamedTuple):
    """What a driver decoded from a test vector: values, and the tags that failed and why."""

    values: dict[str, Value]
    errors: dict[str, str]


@runtime_checkable
class DecodesVectors(Protocol):
    """A driver spec that decodes a profile's test vectors with the driver's own pure
    decoder (``edge-agent profile test``): raw input as the device sends it -> values.

    ``profile`` is a profile's ``{"protocol": {...}, "tags": {...}}`` with its
    params at their defaults; no connection is needed and nothing is opened.
    """

    vector_input: Literal["registers", "line", "data"]
    """What a vector of this driver gives: Modbus ``registers`` of one tag, a serial ``line``,
    the ``data`` bytes of one DL/T 645 reply value."""

    def decode_vector(
        self, profile: Mapping[str, Any], tag: str | None, raw: Sequence[int] | str | bytes
    ) -> VectorOutcome:
        """Decode ``raw`` as the driver would; :class:`ConfigError` for invalid profile
        options, ``ValueError`` when ``raw`` does not fit (an unknown tag, a wrong length)."""
        ...


@runtime_checkable
class EditsAddress(Protocol):
    """A driver spec that can read and change a device's address in a raw site file
    section (``edge-agent init`` asks for each device's new address)."""

    def address_label(self, kind: str) -> str:
        """What to ask for, e.g. ``HOST[:PORT]``, ``serial port``, ``endpoint URL``."""
        ...

    def get_address(self, kind: str, section: Mapping[str, Any]) -> str:
        """The address as a person types it, from ``connection.<kind>``."""
        ...

    def set_address(self, kind: str, section: MutableMapping[str, Any], answer: str) -> None:
        """Write the typed address back into ``connection.<kind>``."""
        ...


class SerialPortAddress:
    """``EditsAddress`` for a driver whose device is found by its serial ``port`` alone."""

    def address_label(self, kind: str) -> str:
        """What ``edge-agent init`` asks for."""
        return "serial port"

    def get_address(self, kind: str, section: Mapping[str, Any]) -> str:
        """The port of ``connection.<kind>``."""
        return str(section.get("port", ""))

    def set_address(self, kind: str, section: MutableMapping[str, Any], answer: str) -> None:
        """Write a new port into ``connection.<kind>``."""
        section["port"] = answer


class BaseDriver:
    """Gives drivers ``async with`` on top of ``connect``/``close``."""

    device_id: str

    async def connect(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class DriverSpec(Protocol):
    """What a driver package exports as ``SPEC``; looked up through ``drivers.registry``."""

    protocol: str
    """The profile ``protocol.kind`` this driver speaks (``"modbus"``, ``"opcua"``...)."""

    options_model: type[BaseModel]
    """The pydantic model of ``{"connection", "protocol", "tags"}`` (for the JSON schema)."""

    def parse(self, options: Mapping[str, Any]) -> DeviceOptions:
        """Validate ``{"connection": {KIND: {...}}, "protocol": {...}, "tags": {...}}``.

        Raise :class:`ConfigError` listing every problem, located by key path
        inside ``options``. No I/O.
        """

    def create(self, device_id: str, options: DeviceOptions) -> Driver:
        """Build a driver from parsed options. No I/O."""
