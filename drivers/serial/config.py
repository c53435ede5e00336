"""Typed options of the plain serial (ASCII line) driver, and their cross-checks.

Pure: no I/O. :func:`parse_options` validates the ``{"connection", "protocol",
"tags"}`` mapping the agent hands over and raises one :class:`ConfigError`
listing every problem, each located by its key path.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, TypeAdapter, ValidationError

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

Loc = tuple[str | int, ...]

# URL schemes pyserial's serial_for_url understands; anything else is a typo.
URL_SCHEMES = ("socket", "rfc2217", "loop", "spy", "alt", "hwgrep")

FAIL_TAG_DESCRIPTION = (
    "False when the device marked the line as failed (protocol.parser.fail_when)."
)


class SerialConnection(SerialLine):
    """Where the device is: a device path or a pyserial URL, and the line settings."""

    timeout: Duration = Field(1.0, gt=0, description="Longest wait for one reply line.")


class Connection(StrictModel):
    """``connection: {serial: {...}}``."""

    serial: SerialConnection = Field(description="The serial line.")


class FailWhen(StrictModel):
    """A line whose ``group`` equals ``equals`` is a failure reported by the device (e.g. NOK)."""

    group: str = Field(description="Regex group holding the verdict.")
    equals: str = Field(description="The verdict text that means failed, e.g. NOK.")
    tag: str = Field("result_ok", min_length=1, description="Bool tag set false on a failure.")


class ParserOptions(StrictModel):
    """How a line becomes values: one regular expression with named groups."""

    regex: str = Field(min_length=1, description="Python regex; (?P<name>...) names a field.")
    fail_when: FailWhen | None = Field(None, description="Turn a device verdict into a tag.")


class SerialProtocol(StrictModel):
    """How the device talks: request/reply or a line per event."""

    kind: Literal["serial"] = Field("serial", description="The protocol; only serial here.")
    mode: Literal["request", "listen"] = Field(
        "listen", description="listen: the device sends lines; request: send request each poll."
    )
    request: str | None = Field(
        None, description="Text sent each poll in request mode; escapes such as \\r allowed."
    )
    terminator: str = Field("\r\n", description="End of a line, both ways.")
    encoding: str = Field("ascii", description="Character encoding of the line.")
    max_line: int = Field(
        512, ge=1, le=65536, description="Longer lines are dropped as garbage (counted)."
    )
    parser: ParserOptions = Field(description="How a line becomes values.")


class SerialTag(TagBase):
    """One value taken from a named group of the line regex."""

    field: str | None = Field(None, description="Regex group name; the tag name when unset.")
    type: Literal["bool", "int", "float", "string"] = Field(
        "float", description="How the field's text converts."
    )
    scale: float | None = Field(None, description="int and float: value = raw * scale + offset.")
    offset: float | None = Field(None, description="int and float: added after scale.")
    true_values: list[str] | None = Field(None, description="Type bool: texts that mean true.")
    false_values: list[str] | None = Field(None, description="Type bool: texts that mean false.")


class SerialOptions(StrictModel):
    """Validated options of one serial device (``SPEC.parse`` returns this)."""

    connection: Connection
    protocol: SerialProtocol
    tags: dict[str, SerialTag]

    def endpoint(self) -> Endpoint:
        """``serial PORT BAUD 8N1`` (or the TCP serial server of a ``socket://`` URL)."""
        return self.connection.serial.endpoint("serial", self.protocol.mode)

    def field_of(self, tag: str) -> str:
        """The regex group a tag reads."""
        return self.tags[tag].field or tag

    @property
    def request_bytes(self) -> bytes | None:
        """The request to send, encoded, or None in listen mode."""
        proto = self.protocol
        if proto.request is None:
            return None
        return unescape(proto.request).encode(proto.encoding)

    @property
    def terminator_bytes(self) -> bytes:
        """The line terminator, encoded."""
        return unescape(self.protocol.terminator).encode(self.protocol.encoding)


# --------------------------------------------------------------------------- escapes

_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{2}|.|$)", re.DOTALL)
_SIMPLE = {"r": "\r", "n": "\n", "t": "\t", "\\": "\\", "0": "\0"}


def unescape(text: str) -> str:
    r"""Turn ``\r \n \t \0 \\ \xNN`` written literally (single-quoted YAML) into characters.

    Double-quoted YAML already did this; text without a backslash is returned unchanged.
    Raise ``ValueError`` for any other backslash sequence.
    """
    if "\\" not in text:
        return text

    def one(match: re.Match[str]) -> str:
        seq = match.group(1)
        if seq in _SIMPLE:
            return _SIMPLE[seq]
        if len(seq) == 3 and seq.startswith("x"):
            return chr(int(seq[1:], 16))
        raise ValueError(f"bad escape '\\{seq}'; use \\r, \\n, \\t, \\0, \\\\ or \\xNN")

    return _ESCAPE.sub(one, text)


# --------------------------------------------------------------------------- parsing


def parse_options(options: Mapping[str, Any]) -> SerialOptions:
    """Validate a device's options; raise :class:`ConfigError` with every problem."""
    if not isinstance(options, Mapping):
        raise ConfigError([ConfigProblem((), "expected a mapping")])
    problems = [
        ConfigProblem((str(key),), "unknown key")
        for key in options
        if key not in ("connection", "protocol", "tags")
    ]
    connection = validate_section(Connection, options, "connection", problems)
    protocol = validate_section(SerialProtocol, options, "protocol", problems)
    tags = _tags(options, problems)
    if protocol is not None:
        problems.extend(_check_protocol(protocol))
    if connection is not None:
        problems.extend(_check_port(connection.serial.port))
    if protocol is not None and tags is not None:
        problems.extend(_check_tags(protocol, tags))
    if problems or connection is None or protocol is None or tags is None:
        raise ConfigError(problems)
    return SerialOptions(
        connection=connection, protocol=protocol, tags=_with_fail_tag(protocol, tags)
    )


_TAGS = TypeAdapter(dict[str, SerialTag])


def _tags(options: Mapping[str, Any], problems: list[ConfigProblem]) -> dict[str, SerialTag] | None:
    raw = options.get("tags")
    if raw is None or raw == {}:
        problems.append(ConfigProblem(("tags",), "at least one tag is required"))
        return None
    try:
        return _TAGS.validate_python(raw)
    except ValidationError as exc:
        problems.extend(problems_from_validation_error(exc, ("tags",)))
        return None


def _check_protocol(proto: SerialProtocol) -> list[ConfigProblem]:
    out: list[ConfigProblem] = []
    try:
        codecs.lookup(proto.encoding)
    except LookupError:
        out.append(ConfigProblem(("protocol", "encoding"), f"unknown encoding {proto.encoding!r}"))
        return out
    if proto.mode == "request" and proto.request is None:
        out.append(ConfigProblem(("protocol", "request"), "is required when mode is request"))
    if proto.mode == "listen" and proto.request is not None:
        out.append(
            ConfigProblem(
                ("protocol", "request"),
                "is only used when mode is request; remove it or set mode: request",
            )
        )
    for key in ("request", "terminator"):
        text = getattr(proto, key)
        if text is not None:
            out.extend(_check_text(("protocol", key), text, proto.encoding))
    try:
        re.compile(proto.parser.regex)
    except re.error as exc:
        out.append(
            ConfigProblem(("protocol", "parser", "regex"), f"invalid regular expression: {exc}")
        )
    return out


def _check_text(loc: Loc, text: str, encoding: str) -> list[ConfigProblem]:
    try:
        value = unescape(text)
    except ValueError as exc:
        return [ConfigProblem(loc, str(exc))]
    if not value:
        return [ConfigProblem(loc, "cannot be empty")]
    try:
        value.encode(encoding)
    except UnicodeEncodeError:
        return [ConfigProblem(loc, f"{text!r} cannot be written in {encoding}")]
    return []


def _check_port(port: str) -> list[ConfigProblem]:
    if "://" not in port:
        return []
    scheme = port.split("://", 1)[0].lower()
    if scheme in URL_SCHEMES:
        return []
    return [
        ConfigProblem(
            ("connection", "serial", "port"),
            f"unknown URL scheme {scheme!r}; use a device path such as /dev/ttyUSB0 "
            "or one of socket://HOST:PORT, rfc2217://HOST:PORT, loop://",
        )
    ]


def _check_tags(proto: SerialProtocol, tags: Mapping[str, SerialTag]) -> list[ConfigProblem]:
    try:
        groups = set(re.compile(proto.parser.regex).groupindex)
    except re.error:
        return []  # already reported against the regex itself
    if not groups:
        return [
            ConfigProblem(
                ("protocol", "parser", "regex"),
                "has no named group; name each field with (?P<name>...)",
            )
        ]
    known = ", ".join(sorted(groups))
    out: list[ConfigProblem] = []
    for name, tag in tags.items():
        field = tag.field or name
        if field not in groups:
            where: Loc = ("tags", name, "field") if tag.field else ("tags", name)
            out.append(
                ConfigProblem(
                    where,
                    _not_a_group(field, known),
                )
            )
        out.extend(_check_tag_kind(name, tag))
    fail = proto.parser.fail_when
    if fail is not None:
        if fail.group not in groups:
            out.append(
                ConfigProblem(
                    ("protocol", "parser", "fail_when", "group"),
                    _not_a_group(fail.group, known),
                )
            )
        if fail.tag in tags:
            out.append(
                ConfigProblem(
                    ("protocol", "parser", "fail_when", "tag"),
                    f"{fail.tag!r} is also a tag name; fail_when sets that tag itself, "
                    "so rename the tag or set fail_when.tag",
                )
            )
    return out


def _not_a_group(name: str, known: str) -> str:
    return f"{name!r} is not a named group of protocol.parser.regex (it has: {known})"


def _check_tag_kind(name: str, tag: SerialTag) -> list[ConfigProblem]:
    out: list[ConfigProblem] = []
    if tag.type != "bool":
        out.extend(
            ConfigProblem(("tags", name, key), "is only for type bool")
            for key in ("true_values", "false_values")
            if getattr(tag, key) is not None
        )
    if tag.type in ("bool", "string"):
        out.extend(
            ConfigProblem(("tags", name, key), "is only for types int and float")
            for key in ("scale", "offset")
            if getattr(tag, key) is not None
        )
    return out


def _with_fail_tag(proto: SerialProtocol, tags: dict[str, SerialTag]) -> dict[str, SerialTag]:
    fail = proto.parser.fail_when
    if fail is None:
        return tags
    # The extra tag joins the first tag's poll group: that group is known to exist, and in
    # request mode a group of its own would cost an extra request per interval.
    group = next(iter(tags.values())).group
    extra = SerialTag(
        field=fail.group,
        type="bool",
        false_values=[fail.equals],
        group=group,
        description=FAIL_TAG_DESCRIPTION,
    )
    return {**tags, fail.tag: extra}
