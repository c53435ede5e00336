"""Typed options of the Modbus driver, and the checks pydantic cannot express.

``parse_options`` validates each section separately so that one bad tag does not
hide the problems of the others: every problem is reported at once, located by
its key path inside the driver's ``options`` mapping.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Annotated, Any, Literal, cast

from pydantic import Field, Strict, ValidationError, model_validator

from drivers.base import (
    ConfigError,
    ConfigProblem,
    Duration,
    Endpoint,
    SerialLine,
    StrictModel,
    TagBase,
    parse_memo,
    problems_from_validation_error,
    validate_section,
)

ByteOrder = Literal["ABCD", "BADC", "CDAB", "DCBA"]
Function = Literal["holding", "input", "coil", "discrete"]
NumericType = Literal["int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64"]
DataType = Literal[NumericType, "bool", "string"]

BIT_FUNCTIONS: frozenset[str] = frozenset({"coil", "discrete"})
REGISTER_FUNCTIONS: frozenset[str] = frozenset({"holding", "input"})
PROTOCOL_MAX_REGISTERS = 125
PROTOCOL_MAX_BITS = 2000
LAST_ADDRESS = 0xFFFF

# Registers taken by each fixed-width type; strings take ``length`` registers.
TYPE_REGISTERS: dict[str, int] = {
    "bool": 1,
    "int16": 1,
    "uint16": 1,
    "int32": 2,
    "uint32": 2,
    "float32": 2,
    "int64": 4,
    "uint64": 4,
    "float64": 4,
}

StrictInt = Annotated[int, Strict()]
INVALID_TYPES: frozenset[str] = frozenset(TYPE_REGISTERS) - {"bool"}


class TcpConnection(StrictModel):
    """Modbus TCP (or a TCP gateway in front of RS-485 units)."""

    host: str = Field(min_length=1, description="The device or the TCP gateway, name or address.")
    port: StrictInt = Field(502, ge=1, le=65535, description="TCP port of the Modbus server.")
    timeout: Duration = Field(1.0, gt=0, description="Wait this long for each reply.")
    connect_timeout: Duration = Field(3.0, gt=0, description="Wait this long to connect.")


class RtuConnection(SerialLine):
    """Modbus RTU over a serial line (a device path or a pyserial URL)."""

    timeout: Duration = Field(1.0, gt=0, description="Wait this long for each reply.")


class Connection(StrictModel):
    """Exactly one of ``modbus_tcp`` or ``modbus_rtu``."""

    modbus_tcp: TcpConnection | None = Field(None, description="Over TCP.")
    modbus_rtu: RtuConnection | None = Field(None, description="Over an RS-485/RS-232 line.")

    @model_validator(mode="after")
    def _exactly_one(self) -> Connection:
        if (self.modbus_tcp is None) == (self.modbus_rtu is None):
            raise ValueError(_ONE_KIND)
        return self

    @property
    def settings(self) -> TcpConnection | RtuConnection:
        """The one connection kind that was given."""
        chosen = self.modbus_tcp or self.modbus_rtu
        assert chosen is not None  # guaranteed by the validator
        return chosen


class ProtocolOptions(StrictModel):
    """How to talk to this device (or unit) once connected."""

    kind: Literal["modbus"] = Field("modbus", description="The protocol; only modbus here.")
    unit_id: StrictInt = Field(
        1, ge=0, le=247, description="Unit (slave) id; a device entry's unit_id wins over it."
    )
    byte_order: ByteOrder = Field(
        "ABCD",
        description="Multi-register values: ABCD big-endian, BADC bytes swapped, "
        "CDAB low word first, DCBA little-endian.",
    )
    max_registers: StrictInt = Field(
        PROTOCOL_MAX_REGISTERS,
        ge=1,
        le=PROTOCOL_MAX_REGISTERS,
        description="Most registers one request reads.",
    )
    max_bits: StrictInt = Field(
        PROTOCOL_MAX_BITS,
        ge=1,
        le=PROTOCOL_MAX_BITS,
        description="Most coils or discrete inputs one request reads.",
    )
    max_gap: StrictInt = Field(
        10,
        ge=0,
        le=PROTOCOL_MAX_REGISTERS,
        description="Unused registers (or bits) read in between to merge two tags in one request.",
    )
    inter_request_delay: Duration = Field(
        0.0, description="Pause between two requests, for slow devices or RS-485 turnaround."
    )
    invalid: dict[NumericType, list[StrictInt]] = Field(
        default_factory=dict,
        description="Raw values meaning 'not available', per type; tags without their own "
        "invalid list use their type's.",
    )


class ModbusTag(TagBase):
    """One value on a Modbus device."""

    address: StrictInt = Field(
        ge=0, le=LAST_ADDRESS, description="Register (or bit) number from 0, as on the wire."
    )
    function: Function = Field(
        "holding", description="Register table: holding (FC3), input (FC4), coil, discrete."
    )
    type: DataType = Field(
        "uint16", description="How registers decode; bool for coils and discretes (their default)."
    )
    bit: StrictInt | None = Field(
        None, ge=0, le=15, description="Type bool: this bit of the register (0 = lowest)."
    )
    length: StrictInt | None = Field(
        None,
        ge=1,
        le=PROTOCOL_MAX_REGISTERS,
        description="Type string: registers of text (2 characters each).",
    )
    byte_order: ByteOrder | None = Field(
        None, description="This tag's byte order; default: protocol.byte_order."
    )
    scale: float = Field(1.0, description="value = raw * scale + offset.")
    offset: float = Field(0.0, description="Added after scale.")
    strip: bool = Field(
        True, description="string: drop spaces at both ends (NUL padding is always dropped)."
    )
    invalid: list[StrictInt] | None = Field(
        None,
        description="Raw values meaning 'not available' (the registers as one unsigned "
        "integer, as the manual writes it in hex); replaces protocol.invalid for this tag.",
    )

    @model_validator(mode="before")
    @classmethod
    def _default_type(cls, data: Any) -> Any:
        # The natural type depends on the function: a coil is a bool, a register a uint16.
        if isinstance(data, Mapping) and "type" not in data:
            bits = data.get("function") in BIT_FUNCTIONS
            return {**data, "type": "bool" if bits else "uint16"}
        return data

    @property
    def width(self) -> int:
        """Registers (or bits, for coils and discretes) this tag occupies."""
        if self.function in BIT_FUNCTIONS:
            return 1
        if self.type == "string":
            return self.length or 1
        return TYPE_REGISTERS[self.type]

    @property
    def is_bit_of_register(self) -> bool:
        """A bool taken from one bit of a holding or input register."""
        return self.function in REGISTER_FUNCTIONS and self.bit is not None


class ModbusOptions(StrictModel):
    """Validated options of one Modbus device (one unit id)."""

    connection: Connection
    protocol: ProtocolOptions = ProtocolOptions()
    tags: dict[str, ModbusTag]

    def endpoint(self) -> Endpoint:
        """``modbus_tcp HOST:PORT unit N`` or ``modbus_rtu PORT BAUD 8N1 unit N``."""
        unit = f"unit {self.protocol.unit_id}"
        tcp = self.connection.modbus_tcp
        if tcp is not None:
            text = f"modbus_tcp {tcp.host}:{tcp.port} {unit}"
            return Endpoint("modbus_tcp", text, tcp=(tcp.host, tcp.port))
        rtu = self.connection.modbus_rtu
        assert rtu is not None  # exactly one kind, guaranteed by the validator
        return rtu.endpoint("modbus_rtu", unit)

    def order_of(self, tag: ModbusTag) -> ByteOrder:
        """The byte order that applies to ``tag`` (its own, else the device's)."""
        return tag.byte_order or self.protocol.byte_order

    def invalid_of(self, tag: ModbusTag) -> tuple[int, ...]:
        """Raw values of ``tag`` that mean "not available", as unsigned integers of its width.

        The tag's own list, else the device's list for the tag's type; none for
        bits and strings.
        """
        if tag.type not in INVALID_TYPES:
            return ()
        numeric = cast(NumericType, tag.type)  # not bool or string: checked above
        values = tag.invalid if tag.invalid is not None else self.protocol.invalid.get(numeric)
        mask = (1 << (16 * tag.width)) - 1
        return tuple(dict.fromkeys(v & mask for v in values or ()))


# --------------------------------------------------------------------------- parsing

_TOP_KEYS = ("connection", "protocol", "tags")


def parse_options(options: Mapping[str, Any]) -> ModbusOptions:
    """Validate driver options; raise :class:`ConfigError` listing every problem."""
    problems: list[ConfigProblem] = [
        ConfigProblem((key,), "unknown key") for key in options if key not in _TOP_KEYS
    ]
    connection = _parse_connection(options, problems)
    protocol = validate_section(ProtocolOptions, options, "protocol", problems, required=False)
    tags = _parse_tags(options.get("tags"), problems)
    if protocol is not None:
        problems += _cross_tag_problems(tags, protocol)
        for type_, values in protocol.invalid.items():
            problems += _width_problems(("protocol", "invalid", type_), type_, values)
    if problems or connection is None or protocol is None:
        raise ConfigError(problems)
    # every part is validated: built without a second pass (and a copy of every tag dict)
    return ModbusOptions.model_construct(connection=connection, protocol=protocol, tags=tags)


_KINDS = ("modbus_tcp", "modbus_rtu")
_ONE_KIND = "give exactly one of modbus_tcp or modbus_rtu"


def _parse_connection(
    options: Mapping[str, Any], problems: list[ConfigProblem]
) -> Connection | None:
    raw = options.get("connection")
    if isinstance(raw, Mapping) and sum(kind in raw for kind in _KINDS) != 1:
        # Said here rather than by the model, whose message would quote the whole mapping.
        problems.append(
            ConfigProblem(("connection",), "give exactly one of modbus_tcp or modbus_rtu")
        )
        problems += [
            ConfigProblem(("connection", k), "unknown key") for k in raw if k not in _KINDS
        ]
        return None
    return validate_section(Connection, options, "connection", problems, required=True)


def _parse_tags(raw: Any, problems: list[ConfigProblem]) -> dict[str, ModbusTag]:
    if raw is None:
        problems.append(ConfigProblem(("tags",), "is required"))
        return {}
    if not isinstance(raw, Mapping):
        problems.append(ConfigProblem(("tags",), "must be a mapping of tag name to tag"))
        return {}
    memo = parse_memo()
    tags: dict[str, ModbusTag] = {}
    later: list[ConfigProblem] = []  # checks across fields, after every validation problem
    for name, body in raw.items():
        key = _tag_key(body) if memo is not None else None
        found = memo.get(key) if memo is not None and key is not None else None
        if found is None:
            found = _parse_tag(body)
            if memo is not None and key is not None:
                memo[key] = found
        tag, own = found
        here = ("tags", str(name))
        if tag is None:
            problems += [ConfigProblem((*here, *p.loc), p.message) for p in own]
            continue
        tags[str(name)] = tag
        later += [ConfigProblem((*here, *p.loc), p.message) for p in own]
    problems += later
    if memo is None or not tags:
        return tags
    # equal tags are the same models: devices of one profile share the whole mapping too
    shared: dict[str, ModbusTag] = memo.setdefault(
        ("modbus-tags", *((name, id(tag)) for name, tag in tags.items())), tags
    )
    return shared


_TagParse = tuple[ModbusTag | None, list[ConfigProblem]]


def _parse_tag(body: Any) -> _TagParse:
    """One tag and its problems (locs relative to it): the model's, else the checks'."""
    try:
        tag = ModbusTag.model_validate(body)
    except ValidationError as exc:
        return None, problems_from_validation_error(exc, ())
    return tag, tag_problems(tag)


def _tag_key(body: Any) -> Hashable | None:
    """What makes two tag bodies parse alike (types too: 1 and True differ), None if unhashable."""
    if not isinstance(body, Mapping):
        return None
    key = ("modbus-tag", *((k, v.__class__, v) for k, v in body.items()))
    try:
        hash(key)
    except TypeError:
        return None
    return key


def tag_problems(tag: ModbusTag) -> list[ConfigProblem]:
    """Checks of one tag that span several fields; locs are relative to the tag."""
    problems: list[ConfigProblem] = []
    bits = tag.function in BIT_FUNCTIONS
    if bits and tag.type != "bool":
        problems.append(
            ConfigProblem(
                ("type",), f"a {tag.function} is one bit: type must be bool, not {tag.type}"
            )
        )
    if tag.bit is not None and (bits or tag.type != "bool"):
        problems.append(
            ConfigProblem(
                ("bit",), "bit is only valid with type bool on holding or input registers"
            )
        )
    if not bits and tag.type == "bool" and tag.bit is None:
        problems.append(
            ConfigProblem(("bit",), f"type bool on {tag.function} registers needs bit (0-15)")
        )
    if tag.type == "string" and tag.length is None:
        problems.append(ConfigProblem(("length",), "is required for type string"))
    if tag.type != "string" and tag.length is not None:
        problems.append(ConfigProblem(("length",), "length is only valid with type string"))
    end = tag.address + tag.width - 1
    if end > LAST_ADDRESS:
        problems.append(
            ConfigProblem(
                ("address",),
                f"{tag.type} at {tag.address:#06x} needs {tag.width} registers "
                f"and would end at {end:#x}, past the last address 0xffff",
            )
        )
    if tag.scale == 0:
        problems.append(ConfigProblem(("scale",), "cannot be 0 (every value would read 0)"))
    return problems + _option_problems(tag)


def _option_problems(tag: ModbusTag) -> list[ConfigProblem]:
    """``strip`` and ``invalid`` given where they cannot apply, or values too wide."""
    problems: list[ConfigProblem] = []
    if tag.type != "string" and "strip" in tag.model_fields_set:
        problems.append(ConfigProblem(("strip",), "is only valid with type string"))
    if tag.invalid is not None:
        if tag.type in INVALID_TYPES:
            problems += _width_problems(("invalid",), tag.type, tag.invalid)
        else:
            problems.append(
                ConfigProblem(("invalid",), f"is only valid with numeric types, not {tag.type}")
            )
    return problems


def _width_problems(
    loc: tuple[str | int, ...], type_: str, values: list[int]
) -> list[ConfigProblem]:
    """Raw values that cannot be held by ``type_``: unsigned, or signed written negative."""
    bits = 16 * TYPE_REGISTERS[type_]
    return [
        ConfigProblem((*loc, i), f"{v} does not fit in {type_} ({bits} bits)")
        for i, v in enumerate(values)
        if not -(1 << (bits - 1)) <= v < (1 << bits)
    ]


def _cross_tag_problems(
    tags: Mapping[str, ModbusTag], protocol: ProtocolOptions
) -> list[ConfigProblem]:
    problems: list[ConfigProblem] = []
    for name, tag in tags.items():
        if tag.function in REGISTER_FUNCTIONS and tag.width > protocol.max_registers:
            key = "length" if tag.type == "string" else "type"
            problems.append(
                ConfigProblem(
                    ("tags", name, key),
                    f"needs {tag.width} registers, more than protocol.max_registers "
                    f"({protocol.max_registers}) allows in one request",
                )
            )
    return problems + overlap_problems(tags)


def span_text(function: str, start: int, width: int) -> str:
    """``holding 0x7000-0x7001``: how a register range is shown in messages."""
    if width == 1:
        return f"{function} {start:#06x}"
    return f"{function} {start:#06x}-{start + width - 1:#06x}"


def overlap_problems(tags: Mapping[str, ModbusTag]) -> list[ConfigProblem]:
    """Tags whose registers (or bits) overlap another tag's in the same function space.

    A register holds one value, so two tags that read whole registers may not
    share one. A ``bit`` tag only reads, so it may share its register with other
    bit tags and with the tag of the whole value (a status word and its bits come
    from the same read). The later tag (by address, then name) of an overlapping
    pair carries the problem.
    """
    problems: list[ConfigProblem] = []
    ordered = sorted(tags.items(), key=lambda item: (item[1].function, item[1].address, item[0]))
    active: list[tuple[str, ModbusTag]] = []
    for name, tag in ordered:
        active = [
            (n, t)
            for n, t in active
            if t.function == tag.function and t.address + t.width > tag.address
        ]
        for other_name, other in active:
            if not (tag.is_bit_of_register or other.is_bit_of_register):
                where = span_text(other.function, other.address, other.width)
                message = f"overlaps tag {other_name!r} ({where})"
                problems.append(ConfigProblem(("tags", name, "address"), message))
                break
        active.append((name, tag))
    return problems
