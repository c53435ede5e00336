"""Pure decoding: the registers (or bits) of one request -> each tag's value.

A block is packed once into its wire bytes (big-endian registers, as they
travel on the line) and every tag is unpacked from it with ``struct``. The four
byte orders name where the bytes of the value ``A B C D`` (most significant
first) sit on the wire:

- ``ABCD``: big-endian words, high word first (the Modbus default);
- ``BADC``: bytes swapped inside each word, high word first;
- ``CDAB``: low word first, big-endian bytes inside each word;
- ``DCBA``: fully little-endian.

64-bit types extend the pattern (``CDAB`` and ``DCBA`` reverse the order of all
four words). With the bytes of each word swapped once for the whole block,
every order becomes a plain big- or little-endian read:
ABCD = big-endian over the wire bytes, DCBA = little-endian over them,
BADC = big-endian over the swapped bytes, CDAB = little-endian over them.
"""

from __future__ import annotations

import functools
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

from drivers.base import Value, not_finite

BYTE_ORDERS = ("ABCD", "BADC", "CDAB", "DCBA")

# struct code and width in registers of each numeric type.
_NUMERIC: dict[str, tuple[str, int]] = {
    "int16": ("h", 1),
    "uint16": ("H", 1),
    "int32": ("i", 2),
    "uint32": ("I", 2),
    "float32": ("f", 2),
    "int64": ("q", 4),
    "uint64": ("Q", 4),
    "float64": ("d", 4),
}
_SWAPPED_ORDERS = frozenset({"BADC", "CDAB"})
_LITTLE_ORDERS = frozenset({"CDAB", "DCBA"})


@dataclass(frozen=True, slots=True)
class TagLayout:
    """How to take one tag out of a block.

    ``index`` is the tag's first register (or bit) counted from the block start;
    ``length`` is the string length in registers; ``bit`` picks one bit of a
    register for a bool; ``value_offset`` is added after ``scale``; ``strip``
    drops the spaces around a string; ``invalid`` lists raw values (the tag's
    registers as one unsigned integer, in its byte order) that mean "not available".
    """

    name: str
    index: int
    type: str
    order: str = "ABCD"
    bit: int | None = None
    length: int | None = None
    scale: float = 1.0
    value_offset: float = 0.0
    strip: bool = True
    invalid: tuple[int, ...] = ()

    @property
    def width(self) -> int:
        """Registers taken by this tag in a register block."""
        if self.type == "string":
            return self.length or 1
        if self.type == "bool":
            return 1
        return _NUMERIC[self.type][1]


@dataclass(slots=True)
class Decoded:
    """Values of the tags that decoded, and a reason for each one that did not."""

    values: dict[str, Value] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


class _Block:
    """The wire bytes of a register block, plus (lazily) the same bytes swapped per word."""

    __slots__ = ("_swapped", "wire")

    def __init__(self, registers: Sequence[int]) -> None:
        self.wire = struct.pack(f">{len(registers)}H", *registers)
        self._swapped: bytes | None = None

    def buffer(self, order: str) -> bytes:
        if order not in _SWAPPED_ORDERS:
            return self.wire
        if self._swapped is None:
            swapped = bytearray(len(self.wire))
            swapped[0::2] = self.wire[1::2]
            swapped[1::2] = self.wire[0::2]
            self._swapped = bytes(swapped)
        return self._swapped


def decode_registers(registers: Sequence[int], layouts: Sequence[TagLayout]) -> Decoded:
    """Decode every tag of a register block; a tag past the block's end gets an error."""
    return BlockDecoder(layouts).decode(registers)


@dataclass(frozen=True, slots=True)
class _Run:
    """Numeric tags read from one buffer (wire or swapped) with one endianness, by one unpack."""

    swapped: bool
    unpack: struct.Struct
    names: tuple[str, ...]


class BlockDecoder:
    """:func:`decode_registers` for one fixed set of layouts, compiled once per request.

    A poll decodes the same layouts every time, so the per-tag work (type lookup,
    format, offset) is done here once: the numeric tags that share a buffer and an
    endianness and do not overlap become ONE ``struct`` format with pad bytes for
    the gaps, unpacked in a single call. Scale, offset and the NaN check are then
    applied only to the tags that need them. Bits of registers, strings, overlapping
    tags, and any block shorter than the layouts expect take the per-tag path.
    """

    def __init__(self, layouts: Sequence[TagLayout]) -> None:
        self.layouts = tuple(layouts)
        self._end = max((lay.index + lay.width for lay in self.layouts), default=0)
        groups: dict[tuple[bool, str], list[TagLayout]] = {}
        slow: list[TagLayout] = []
        for lay in self.layouts:
            # "not available" compares raw bits, done tag by tag (few tags have it)
            if lay.type in _NUMERIC and not lay.invalid:
                key = (lay.order in _SWAPPED_ORDERS, "<" if lay.order in _LITTLE_ORDERS else ">")
                groups.setdefault(key, []).append(lay)
            else:
                slow.append(lay)
        self._runs: list[_Run] = []
        for (swapped, endian), members in groups.items():
            self._runs.append(_compile_run(swapped, endian, members, slow))
        self._slow = tuple(slow)
        # tags whose unpacked number needs more work, done as _raw_value + _store do it
        self._adjust = tuple(
            (lay.name, lay.scale, lay.value_offset, _NUMERIC[lay.type][0])
            for lay in self.layouts
            if lay.type in _NUMERIC and lay not in slow
            and (lay.scale != 1 or lay.value_offset != 0 or lay.type.startswith("float"))
        )  # fmt: skip

    def decode(self, registers: Sequence[int], into: Decoded | None = None) -> Decoded:
        """Decode every tag of ``registers`` (a reply to the request these layouts belong to).

        The results are added to ``into`` when given (and returned), else to a new
        :class:`Decoded`.
        """
        out = Decoded() if into is None else into
        try:
            block = _Block(registers)
        except struct.error:
            for layout in self.layouts:
                out.errors[layout.name] = "register value outside 0-65535"
            return out
        if len(registers) < self._end:
            _decode_each(out, block, registers, self.layouts)
            return out
        values = out.values
        for run in self._runs:
            buffer = block.buffer("BADC" if run.swapped else "ABCD")
            values.update(zip(run.names, run.unpack.unpack_from(buffer), strict=True))
        for name, scale, offset, code in self._adjust:
            raw = cast(float, values[name])  # numeric: these layouts were unpacked by struct
            if not math.isfinite(raw):
                del values[name]
                out.errors[name] = not_finite(raw)
                continue
            if code == "f":
                raw = shortest_float32(raw)
            values[name] = apply_scale(raw, scale, offset)
        _decode_each(out, block, registers, self._slow)
        return out


def _compile_run(
    swapped: bool, endian: str, members: list[TagLayout], slow: list[TagLayout]
) -> _Run:
    """One struct format over ``members`` in address order; overlapping ones go to ``slow``."""
    fmt, names, pos = endian, [], 0
    for lay in sorted(members, key=lambda m: m.index):
        start = lay.index * 2
        if start < pos:  # shares bytes with the previous tag: cannot be in one format
            slow.append(lay)
            continue
        code, width = _NUMERIC[lay.type]
        fmt += f"{start - pos}x{code}" if start > pos else code
        names.append(lay.name)
        pos = start + width * 2
    return _Run(swapped, struct.Struct(fmt), tuple(names))


def _decode_each(
    out: Decoded, block: _Block, registers: Sequence[int], layouts: Sequence[TagLayout]
) -> None:
    for layout in layouts:
        if layout.index + layout.width > len(registers):
            out.errors[layout.name] = "reply too short for this tag"
            continue
        if layout.invalid:
            bits = _raw_bits(block, layout)
            if bits in layout.invalid:
                out.errors[layout.name] = not_available(bits, layout.width)
                continue
        raw = _raw_value(block, registers, layout)
        _store(out, layout, raw)


def decode_bits(bits: Sequence[bool], layouts: Sequence[TagLayout]) -> Decoded:
    """Decode every tag of a coil or discrete-input block."""
    out = Decoded()
    for layout in layouts:
        if layout.index >= len(bits):
            out.errors[layout.name] = "reply too short for this tag"
        else:
            out.values[layout.name] = bool(bits[layout.index])
    return out


def decode_value(registers: Sequence[int], type_: str, order: str = "ABCD") -> Value:
    """The raw (unscaled) value of ``type_`` held in ``registers`` read in ``order``."""
    layout = TagLayout("value", 0, type_, order, length=len(registers), bit=None)
    if type_ == "bool":
        raise ValueError("a bool in a register needs a bit: use decode_registers")
    if layout.width > len(registers):
        raise ValueError(f"{type_} needs {layout.width} registers, got {len(registers)}")
    return _raw_value(_Block(registers), registers, layout)


def decode_all_orders(registers: Sequence[int], type_: str) -> dict[str, Value]:
    """``{order: raw value}`` for each byte order: the commissioning view of a tag."""
    return {order: decode_value(registers, type_, order) for order in BYTE_ORDERS}


def apply_scale(raw: Value, scale: float, offset: float) -> Value:
    """``raw * scale + offset``; integers stay integers when scale is 1 and offset 0.

    A scaled integer is rounded to the decimals of ``scale`` and ``offset``
    (raw 1234 x 0.1 is 123.4, not 123.40000000000001): the register held an
    exact decimal, and the message should too.
    """
    if isinstance(raw, bool | str):
        return raw
    if scale == 1 and offset == 0:
        return raw
    value = raw * scale + offset
    if isinstance(raw, int):
        return round(value, _decimals(scale, offset))
    return value


@functools.lru_cache(maxsize=1024)
def _decimals(scale: float, offset: float) -> int:
    return max(_places(scale), _places(offset))


def _places(number: float) -> int:
    text = f"{number:.15g}"
    if "e" in text:
        mantissa, _, exponent = text.partition("e")
        return max(0, _places(float(mantissa)) - int(exponent))
    return len(text.partition(".")[2])


def shortest_float32(value: float) -> float:
    """The shortest decimal that is still the same float32 (what the device meant).

    A float32 widened to a Python float prints as 228.95823669433594; the device
    holds 228.95824. Seven significant digits are not always enough to round-trip
    a float32, so try 7, 8, then 9 (always enough).
    """
    packed = struct.pack(">f", value)
    for digits in (7, 8):
        shorter = float(f"{value:.{digits}g}")
        if struct.pack(">f", shorter) == packed:
            return shorter
    return float(f"{value:.9g}")


def _raw_value(block: _Block, registers: Sequence[int], layout: TagLayout) -> Value:
    if layout.type == "bool":
        bit = layout.bit or 0
        return bool((registers[layout.index] >> bit) & 1)
    if layout.type == "string":
        return _string(block, layout)
    code, _ = _NUMERIC[layout.type]
    endian = "<" if layout.order in _LITTLE_ORDERS else ">"
    buffer = block.buffer(layout.order)
    value: Value = struct.unpack_from(endian + code, buffer, layout.index * 2)[0]
    if code == "f" and isinstance(value, float) and math.isfinite(value):
        return shortest_float32(value)
    return value


def _raw_bits(block: _Block, layout: TagLayout) -> int:
    """The tag's registers as one unsigned integer, most significant byte first."""
    start = layout.index * 2
    data = block.buffer(layout.order)[start : start + layout.width * 2]
    return int.from_bytes(data, "little" if layout.order in _LITTLE_ORDERS else "big")


def not_available(raw: int, width: int) -> str:
    """``not available (0xFFFF)``: the error of a tag whose raw value is one of its invalid ones."""
    return f"not available (0x{raw:0{width * 4}X})"


def _string(block: _Block, layout: TagLayout) -> str:
    # Characters travel in register order; only the bytes inside each word may be
    # swapped (BADC, DCBA), the word order of text is never reversed.
    swapped = layout.order in ("BADC", "DCBA")
    buffer = block.buffer("BADC" if swapped else "ABCD")
    start = layout.index * 2
    text = buffer[start : start + (layout.length or 1) * 2]
    # Devices pad fixed-length text fields with NUL or spaces, at either end;
    # NUL is never text, spaces may be (``strip: false`` keeps them).
    text = text.strip(b"\x00 " if layout.strip else b"\x00")
    return text.decode("utf-8", errors="replace")


def _store(out: Decoded, layout: TagLayout, raw: Value) -> None:
    if isinstance(raw, float) and not math.isfinite(raw):
        out.errors[layout.name] = not_finite(raw)
        return
    out.values[layout.name] = apply_scale(raw, layout.scale, layout.value_offset)
