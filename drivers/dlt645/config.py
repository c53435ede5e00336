"""Typed options of the DL/T 645-2007 driver, and the checks pydantic cannot express.

Pure: no I/O. :func:`parse_options` validates ``{"connection", "protocol",
"tags"}`` and raises one :class:`ConfigError` listing every problem, each
located by its key path.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, StrictInt, TypeAdapter, ValidationError, field_validator

from drivers.base import (
    ConfigError,
    ConfigProblem,
    Duration,
    Endpoint,
    SerialLine,
    StrictModel,
    TagBase,
    problems_from_validation_error,
    validate_section,
)
from drivers.dlt645.frame import BROADCAST, MAX_DATA, address_bytes

URL_SCHEMES = ("socket", "rfc2217", "loop", "spy", "alt", "hwgrep")
_DI = re.compile(r"^[0-9A-Fa-f]{8}$")
_FORMAT = re.compile(r"^(X+)(?:\.(X+))?$")


class Dlt645Line(SerialLine):
    """An RS-485 line of meters (or a TCP serial server behind ``socket://``).

    The standard's default is 2400 baud, 8 data bits, even parity, 1 stop bit.
    """

    baud: StrictInt = Field(2400, gt=0, description="Line speed; DL/T 645 meters default to 2400.")
    parity: Literal["N", "E", "O"] = Field(
        "E", description="N, E or O; DL/T 645 lines use even parity (E)."
    )
    timeout: Duration = Field(
        1.0, gt=0, description="Longest wait for one reply (the standard allows 500 ms)."
    )


class Connection(StrictModel):
    """``connection: {dlt645: {...}}``."""

    dlt645: Dlt645Line = Field(description="The RS-485 line (or TCP serial server) of the meter.")


class Dlt645Protocol(StrictModel):
    """Which meter on the line, and how to wake it."""

    kind: Literal["dlt645"] = Field("dlt645", description="The protocol; only dlt645 here.")
    address: str = Field(
        description="12 digits as printed on the meter (000000000161); AAAAAAAAAAAA reaches "
        "the only meter of a line, and AA in the high pairs is a wildcard."
    )
    preamble: StrictInt = Field(4, ge=0, le=8, description="FE wake-up bytes before a request.")
    inter_request_delay: Duration = Field(
        0.0, description="Silence kept after each exchange, for slow meters."
    )

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        if value == BROADCAST:
            raise ValueError("999999999999 is the broadcast address: no meter answers a read to it")
        address_bytes(value)  # ValueError with the reason
        upper = value.upper()
        pairs = [upper[i : i + 2] for i in range(0, 12, 2)]
        first_digit = next((i for i, p in enumerate(pairs) if p != "AA"), 6)
        if any(p == "AA" for p in pairs[first_digit:]):
            raise ValueError("AA may only stand for the high pairs (AAAAAA000161), not low ones")
        return upper


class Dlt645Tag(TagBase):
    """One data identifier of the meter, and how its BCD value reads."""

    di: str = Field(description="Data identifier DI3..DI0 in hex, e.g. 02010100 (voltage A).")
    format: str = Field(
        description="The standard's data format: XXX.X, XXX.XXX, XXXXXX.XX... "
        "(one X per BCD digit; the point sets the decimals)."
    )
    signed: bool = Field(False, description="The top bit is the sign (currents, powers, PF).")
    scale: float = Field(1.0, description="Multiplies the decoded value (kW -> W, CT ratio).")

    @field_validator("di")
    @classmethod
    def _di(cls, value: str) -> str:
        if not _DI.match(value):
            raise ValueError("a data identifier is 8 hex digits, e.g. 02010100")
        return value.upper()

    @field_validator("format")
    @classmethod
    def _format(cls, value: str) -> str:
        match = _FORMAT.match(value.upper())
        if not match:
            raise ValueError("write the format as the standard does: XXX.X, XXXXXX.XX, XX.XXXX")
        digits = len(match.group(1)) + len(match.group(2) or "")
        if digits % 2:
            raise ValueError(f"{digits} digits: BCD takes two digits a byte, so an even count")
        if digits // 2 > MAX_DATA - 4:
            raise ValueError("longer than a read reply can carry")
        return value.upper()

    @property
    def di_value(self) -> int:
        """The data identifier as a number."""
        return int(self.di, 16)

    @property
    def decimals(self) -> int:
        """Implied decimals of the value."""
        _, _, frac = self.format.partition(".")
        return len(frac)

    @property
    def size(self) -> int:
        """Bytes of the value in the reply."""
        return len(self.format.replace(".", "")) // 2


class Dlt645Options(StrictModel):
    """Validated options of one meter (``SPEC.parse`` returns this)."""

    connection: Connection
    protocol: Dlt645Protocol
    tags: dict[str, Dlt645Tag]

    def endpoint(self) -> Endpoint:
        """``dlt645 PORT 2400 8E1 address 000000000161``."""
        return self.connection.dlt645.endpoint("dlt645", f"address {self.protocol.address}")


_TOP_KEYS = ("connection", "protocol", "tags")
_TAGS = TypeAdapter(dict[str, Dlt645Tag])


def parse_options(options: Mapping[str, Any]) -> Dlt645Options:
    """Validate a meter's options; raise :class:`ConfigError` with every problem."""
    if not isinstance(options, Mapping):
        raise ConfigError([ConfigProblem((), "expected a mapping")])
    problems = [ConfigProblem((str(k),), "unknown key") for k in options if k not in _TOP_KEYS]
    connection = validate_section(Connection, options, "connection", problems)
    protocol = validate_section(Dlt645Protocol, options, "protocol", problems)
    tags = _tags(options, problems)
    if connection is not None:
        problems.extend(_check_port(connection.dlt645.port))
    if tags is not None:
        problems.extend(_duplicates(tags))
    if problems or connection is None or protocol is None or tags is None:
        raise ConfigError(problems)
    return Dlt645Options(connection=connection, protocol=protocol, tags=tags)


def _tags(options: Mapping[str, Any], problems: list[ConfigProblem]) -> dict[str, Dlt645Tag] | None:
    raw = options.get("tags")
    if not raw:
        problems.append(ConfigProblem(("tags",), "at least one tag is required"))
        return None
    try:
        return _TAGS.validate_python(raw)
    except ValidationError as exc:
        problems.extend(problems_from_validation_error(exc, ("tags",)))
        return None


def _duplicates(tags: Mapping[str, Dlt645Tag]) -> list[ConfigProblem]:
    # Two tags of one identifier would cost two exchanges for one value.
    seen: dict[str, str] = {}
    out: list[ConfigProblem] = []
    for name, tag in tags.items():
        other = seen.setdefault(tag.di, name)
        if other != name:
            out.append(ConfigProblem(("tags", name, "di"), f"{tag.di} is also read by {other!r}"))
    return out


def _check_port(port: str) -> list[ConfigProblem]:
    if "://" not in port or port.split("://", 1)[0].lower() in URL_SCHEMES:
        return []
    return [
        ConfigProblem(
            ("connection", "dlt645", "port"),
            f"unknown URL scheme {port.split('://', 1)[0]!r}; use a device path such as "
            "/dev/ttyUSB0 or socket://HOST:PORT (a TCP serial server), rfc2217://HOST:PORT",
        )
    ]
