"""Pure line handling: bytes -> framed lines -> tag values or a garbage verdict.

No I/O and no pyserial here, so every case is a cheap table test.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from drivers.base import Value, not_finite
from drivers.serial.config import SerialOptions, SerialTag

DEFAULT_TRUE = frozenset({"1", "true", "yes", "on", "ok"})
"""Bool texts read as true when a tag gives neither true_values nor false_values."""

_SHOWN = 60  # characters of a garbage line kept for status


@dataclass(frozen=True, slots=True)
class TooLong:
    """A line that overran ``max_line``; its bytes were discarded up to the next terminator."""

    head: bytes


Frame = bytes | TooLong
"""One line without its terminator, or the marker of a discarded over-long line."""


class LineSplitter:
    """Cuts a byte stream into lines at ``terminator``, never holding more than ``max_line``.

    An over-long line yields one :class:`TooLong` and is skipped up to the next
    terminator, so a device that never sends the terminator cannot grow memory.
    Blank lines (a terminator alone) carry nothing and are skipped.
    """

    def __init__(self, terminator: bytes, max_line: int) -> None:
        if not terminator:
            raise ValueError("terminator cannot be empty")
        self._term = terminator
        self._max = max_line
        self._buf = bytearray()
        self._discarding = False

    @property
    def pending(self) -> bytes:
        """The start of an unfinished line (empty when none)."""
        return bytes(self._buf)

    def feed(self, data: bytes) -> list[Frame]:
        """Add received bytes; return every line they completed, in order."""
        self._buf += data
        out: list[Frame] = []
        while True:
            end = self._buf.find(self._term)
            if end < 0:
                break
            line = bytes(self._buf[:end])
            del self._buf[: end + len(self._term)]
            if self._discarding:
                self._discarding = False
            elif not line:
                continue
            elif len(line) > self._max:
                out.append(TooLong(line[:_SHOWN]))
            else:
                out.append(line)
        # Keep a possible partial terminator at the end; drop the rest of an over-long line.
        if len(self._buf) > self._max + len(self._term) - 1:
            if not self._discarding:
                out.append(TooLong(bytes(self._buf[:_SHOWN])))
                self._discarding = True
            keep = len(self._term) - 1
            del self._buf[: len(self._buf) - keep]
        return out


@dataclass(frozen=True, slots=True)
class Garbage:
    """A line that yields no values: why, and (the start of) what was received."""

    reason: str
    text: str

    def __str__(self) -> str:
        return f"{self.reason}: {self.text}"


@dataclass(slots=True)
class ParsedLine:
    """Values of every tag from one good line; ``failed`` when fail_when matched."""

    values: dict[str, Value] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    failed: bool = False


class LineParser:
    """Applies a device's regex to one line and converts each tag's group."""

    def __init__(self, options: SerialOptions) -> None:
        proto = options.protocol
        self._regex = re.compile(proto.parser.regex)
        self._encoding = proto.encoding
        self._max = proto.max_line
        self._tags: Mapping[str, SerialTag] = options.tags
        self._fields = {name: options.field_of(name) for name in options.tags}
        fail = proto.parser.fail_when
        self._fail = (fail.group, fail.equals) if fail else None

    def parse(self, frame: Frame) -> ParsedLine | Garbage:
        """One line (terminator removed) -> values and per-tag errors, or :class:`Garbage`."""
        if isinstance(frame, TooLong):
            return Garbage(f"line longer than {self._max} bytes", _show(frame.head) + "...")
        if len(frame) > self._max:
            return Garbage(f"line longer than {self._max} bytes", _show(frame[:_SHOWN]) + "...")
        try:
            text = frame.decode(self._encoding)
        except UnicodeDecodeError:
            return Garbage(f"not valid {self._encoding}", _show(frame))
        match = self._regex.fullmatch(text)
        if match is None:
            return Garbage("no match", _show(frame))
        out = ParsedLine()
        for name, tag in self._tags.items():
            raw = match.group(self._fields[name])
            if raw is None:
                out.errors[name] = f"field {self._fields[name]!r} absent from line"
                continue
            try:
                out.values[name] = convert(raw, tag)
            except ValueError as exc:
                out.errors[name] = str(exc)
        if self._fail is not None:
            out.failed = match.group(self._fail[0]) == self._fail[1]
        return out


def convert(raw: str, tag: SerialTag) -> Value:
    """One matched text -> the tag's typed, scaled value; ``ValueError`` with a short reason."""
    text = raw.strip()
    if tag.type == "string":
        return text
    if tag.type == "bool":
        return _to_bool(text, tag)
    try:
        number: int | float = int(text) if tag.type == "int" else float(text)
    except ValueError:
        raise ValueError(f"cannot read {_clip(text)!r} as {tag.type}") from None
    if isinstance(number, float) and not math.isfinite(number):
        raise ValueError(not_finite(number))
    if tag.scale is None and tag.offset is None:
        return number
    return number * (1.0 if tag.scale is None else tag.scale) + (tag.offset or 0.0)


def _to_bool(text: str, tag: SerialTag) -> bool:
    if tag.true_values is None and tag.false_values is None:
        return text.lower() in DEFAULT_TRUE
    if tag.false_values is None:
        return text in (tag.true_values or ())
    if tag.true_values is None:
        return text not in tag.false_values
    if text in tag.true_values:
        return True
    if text in tag.false_values:
        return False
    raise ValueError(f"{_clip(text)!r} is neither a true nor a false value")


def _clip(text: str) -> str:
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "..."


def _show(data: bytes) -> str:
    # repr-like and printable whatever arrived, so status output stays one clean line.
    return repr(data[:_SHOWN])[2:-1]
