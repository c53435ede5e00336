"""Table tests of drivers.modbus.decode: wire bytes written by hand or by struct.pack."""

from __future__ import annotations

import math
import struct

import pytest

from drivers.modbus.decode import (
    Decoded,
    TagLayout,
    _Block,
    _decode_each,
    apply_scale,
    decode_all_orders,
    decode_bits,
    decode_registers,
    decode_value,
)

ORDERS = ("ABCD", "BADC", "CDAB", "DCBA")


def regs(data: bytes) -> list[int]:
    return list(struct.unpack(f">{len(data) // 2}H", data))


# Hand-written wire bytes of one value in each byte order.
LITERALS = [
    (
        "uint16",
        0x1234,
        {"ABCD": b"\x12\x34", "BADC": b"\x34\x12", "CDAB": b"\x12\x34", "DCBA": b"\x34\x12"},
    ),
    (
        "int16",
        -2,
        {"ABCD": b"\xff\xfe", "BADC": b"\xfe\xff", "CDAB": b"\xff\xfe", "DCBA": b"\xfe\xff"},
    ),
    (
        "uint32",
        0x11223344,
        {
            "ABCD": b"\x11\x22\x33\x44",
            "BADC": b"\x22\x11\x44\x33",
            "CDAB": b"\x33\x44\x11\x22",
            "DCBA": b"\x44\x33\x22\x11",
        },
    ),
    (
        "int32",
        -2,
        {
            "ABCD": b"\xff\xff\xff\xfe",
            "BADC": b"\xff\xff\xfe\xff",
            "CDAB": b"\xff\xfe\xff\xff",
            "DCBA": b"\xfe\xff\xff\xff",
        },
    ),
    (
        "float32",
        1.5,  # 0x3FC00000
        {
            "ABCD": b"\x3f\xc0\x00\x00",
            "BADC": b"\xc0\x3f\x00\x00",
            "CDAB": b"\x00\x00\x3f\xc0",
            "DCBA": b"\x00\x00\xc0\x3f",
        },
    ),
    (
        "uint64",
        0x1122334455667788,
        {
            "ABCD": b"\x11\x22\x33\x44\x55\x66\x77\x88",
            "BADC": b"\x22\x11\x44\x33\x66\x55\x88\x77",
            "CDAB": b"\x77\x88\x55\x66\x33\x44\x11\x22",
            "DCBA": b"\x88\x77\x66\x55\x44\x33\x22\x11",
        },
    ),
    (
        "int64",
        -3,
        {
            "ABCD": b"\xff\xff\xff\xff\xff\xff\xff\xfd",
            "BADC": b"\xff\xff\xff\xff\xff\xff\xfd\xff",
            "CDAB": b"\xff\xfd\xff\xff\xff\xff\xff\xff",
            "DCBA": b"\xfd\xff\xff\xff\xff\xff\xff\xff",
        },
    ),
    (
        "float64",
        -2.5,  # 0xC004000000000000
        {
            "ABCD": b"\xc0\x04\x00\x00\x00\x00\x00\x00",
            "BADC": b"\x04\xc0\x00\x00\x00\x00\x00\x00",
            "CDAB": b"\x00\x00\x00\x00\x00\x00\xc0\x04",
            "DCBA": b"\x00\x00\x00\x00\x00\x00\x04\xc0",
        },
    ),
]


@pytest.mark.parametrize(
    ("type_", "expected", "order", "wire"),
    [(t, v, o, w[o]) for t, v, w in LITERALS for o in ORDERS],
)
def test_literal_wire_bytes(type_: str, expected: float, order: str, wire: bytes) -> None:
    assert decode_value(regs(wire), type_, order) == expected
    out = decode_registers(regs(wire), [TagLayout("t", 0, type_, order)])
    assert out.values == {"t": expected}
    assert type(out.values["t"]) is type(expected)


# Where each wire byte comes from in the big-endian bytes of the value (test-side table).
PERMUTATION = {
    2: {"ABCD": [0, 1], "BADC": [1, 0], "CDAB": [0, 1], "DCBA": [1, 0]},
    4: {"ABCD": [0, 1, 2, 3], "BADC": [1, 0, 3, 2], "CDAB": [2, 3, 0, 1], "DCBA": [3, 2, 1, 0]},
    8: {
        "ABCD": [0, 1, 2, 3, 4, 5, 6, 7],
        "BADC": [1, 0, 3, 2, 5, 4, 7, 6],
        "CDAB": [6, 7, 4, 5, 2, 3, 0, 1],
        "DCBA": [7, 6, 5, 4, 3, 2, 1, 0],
    },
}
SAMPLES: dict[str, tuple[str, list[float]]] = {
    "int16": ("h", [-32768, -1, 0, 1, 12345, 32767]),
    "uint16": ("H", [0, 1, 0x8000, 0xFFFF]),
    "int32": ("i", [-(2**31), -123456789, 0, 2**31 - 1]),
    "uint32": ("I", [0, 0xDEADBEEF, 2**32 - 1]),
    "int64": ("q", [-(2**63), -1, 2**62 + 12345, 2**63 - 1]),
    "uint64": ("Q", [0, 0x0102030405060708, 2**64 - 1]),
    "float32": ("f", [0.0, -1.0, 3.25, 1e-10, 123456.0]),
    "float64": ("d", [0.0, -1.0, math.pi, 1e300, -2.5e-300]),
}


def wire_bytes(code: str, value: float, order: str) -> bytes:
    big = struct.pack(">" + code, value)
    return bytes(big[i] for i in PERMUTATION[len(big)][order])


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("type_", sorted(SAMPLES))
def test_every_type_in_every_order(type_: str, order: str) -> None:
    code, values = SAMPLES[type_]
    for value in values:
        wire = wire_bytes(code, value, order)
        got = decode_value(regs(wire), type_, order)
        expected = struct.unpack(">" + code, struct.pack(">" + code, value))[0]
        if code == "f":
            # float32 comes back as the shortest decimal of the same float32
            assert struct.pack(">f", got) == struct.pack(">f", expected), (order, value)
            assert len(repr(got)) <= len(repr(expected))
        else:
            assert got == expected, (type_, order, value)


def test_block_decodes_each_tag_at_its_index() -> None:
    block = (
        b"\x00\x2a"  # 0: uint16 42
        + b"\x00\x00\x3f\xc0"  # 1-2: float32 1.5, CDAB
        + b"\xbe\xef"  # 3: not read (gap)
        + b"\xff\xff\xff\xfe"  # 4-5: int32 -2, ABCD
        + b"\x80\x05"  # 6: bits 0, 2 and 15 set
    )
    layouts = [
        TagLayout("a", 0, "uint16"),
        TagLayout("b", 1, "float32", "CDAB"),
        TagLayout("c", 4, "int32"),
        TagLayout("bit0", 6, "bool", bit=0),
        TagLayout("bit1", 6, "bool", bit=1),
        TagLayout("bit2", 6, "bool", bit=2),
        TagLayout("bit15", 6, "bool", bit=15),
    ]
    out = decode_registers(regs(block), layouts)
    assert out.errors == {}
    assert out.values == {
        "a": 42,
        "b": 1.5,
        "c": -2,
        "bit0": True,
        "bit1": False,
        "bit2": True,
        "bit15": True,
    }


@pytest.mark.parametrize(
    ("wire", "order", "length", "expected"),
    [
        (b"HELLO\x00", "ABCD", 3, "HELLO"),
        (b"EHLL\x00O", "BADC", 3, "HELLO"),
        (b"HELLO\x00", "CDAB", 3, "HELLO"),
        (b"EHLL\x00O", "DCBA", 3, "HELLO"),
        (b"AB  ", "ABCD", 2, "AB"),
        (b"\x00\x00AB", "ABCD", 2, "AB"),
        (b"MD500-4T", "ABCD", 4, "MD500-4T"),
        (b"\x00\x00\x00\x00", "ABCD", 2, ""),
    ],
)
def test_strings(wire: bytes, order: str, length: int, expected: str) -> None:
    out = decode_registers(regs(wire), [TagLayout("s", 0, "string", order, length=length)])
    assert out.values == {"s": expected}


def test_string_inside_a_block() -> None:
    wire = b"\x00\x01" + b"SN-0042\x00" + b"\x00\x02"
    out = decode_registers(regs(wire), [TagLayout("s", 1, "string", length=4)])
    assert out.values == {"s": "SN-0042"}


@pytest.mark.parametrize(
    ("raw", "scale", "offset", "expected"),
    [
        (1234, 1.0, 0.0, 1234),
        (1234, 0.01, 0.0, 12.34),
        (1234, 0.1, -40.0, 83.4),
        (100, 1.0, -40.0, 60.0),
        (-5, 2.0, 0.0, -10.0),
        (1.5, 1.0, 0.0, 1.5),
        (True, 10.0, 1.0, True),
        ("text", 2.0, 0.0, "text"),
    ],
)
def test_scale_and_offset(raw: float, scale: float, offset: float, expected: object) -> None:
    got = apply_scale(raw, scale, offset)
    assert got == pytest.approx(expected)
    assert type(got) is type(expected)


def test_scaled_tag_in_block() -> None:
    out = decode_registers(regs(b"\x04\xd2"), [TagLayout("hz", 0, "uint16", scale=0.01)])
    assert out.values["hz"] == pytest.approx(12.34)
    out = decode_registers(regs(b"\x04\xd2"), [TagLayout("n", 0, "uint16")])
    assert out.values["n"] == 1234
    assert isinstance(out.values["n"], int)


def test_tag_past_the_end_of_a_short_block_is_an_error() -> None:
    out = decode_registers([1, 2], [TagLayout("ok", 0, "uint16"), TagLayout("far", 1, "uint32")])
    assert out.values == {"ok": 1}
    assert out.errors == {"far": "reply too short for this tag"}


def test_nan_and_infinity_are_errors_not_values() -> None:
    nan = regs(struct.pack(">f", float("nan")))
    inf = regs(struct.pack(">d", float("inf")))
    out = decode_registers(nan + inf, [TagLayout("n", 0, "float32"), TagLayout("i", 2, "float64")])
    assert out.values == {}
    assert set(out.errors) == {"n", "i"}
    assert out.errors["n"].startswith("not a number")


def test_register_out_of_range_is_an_error() -> None:
    out = decode_registers([70000], [TagLayout("x", 0, "uint16")])
    assert out.errors == {"x": "register value outside 0-65535"}


def test_bits() -> None:
    bits = [True, False, True, False, False, False, False, True]
    out = decode_bits(
        bits, [TagLayout("a", 0, "bool"), TagLayout("b", 1, "bool"), TagLayout("h", 7, "bool")]
    )
    assert out.values == {"a": True, "b": False, "h": True}
    out = decode_bits(bits, [TagLayout("far", 8, "bool")])
    assert out.errors == {"far": "reply too short for this tag"}


def test_decode_all_orders() -> None:
    got = decode_all_orders(regs(b"\x3f\xc0\x00\x00"), "float32")
    assert set(got) == set(ORDERS)
    assert got["ABCD"] == 1.5
    assert struct.pack(">f", got["BADC"]) == b"\xc0\x3f\x00\x00"
    assert struct.pack(">f", got["CDAB"]) == b"\x00\x00\x3f\xc0"
    assert struct.pack("<f", got["DCBA"]) == b"\x3f\xc0\x00\x00"
    assert decode_all_orders(regs(b"\x00\x01\x00\x02"), "uint32") == {
        "ABCD": 0x00010002,
        "BADC": 0x01000200,
        "CDAB": 0x00020001,
        "DCBA": 0x02000100,
    }


def test_decode_value_refuses_short_input_and_bare_bool() -> None:
    with pytest.raises(ValueError, match="needs 2 registers"):
        decode_value([1], "uint32")
    with pytest.raises(ValueError, match="needs a bit"):
        decode_value([1], "bool")


@pytest.mark.parametrize(
    ("wire", "shown"),
    [
        (b"\x43\x64\xf5\x4f", 228.95824),  # an SDM630 voltage: not 228.95823669433594
        (b"\x3d\xcc\xcc\xcd", 0.1),
        (b"\x47\x04\x18\xd2", 33816.82),
    ],
)
def test_float32_reads_as_its_shortest_decimal(wire: bytes, shown: float) -> None:
    assert decode_value(regs(wire), "float32") == shown


@pytest.mark.parametrize(
    ("raw", "scale", "offset", "value"),
    [
        (1234, 0.1, 0.0, 123.4),
        (5000, 0.01, 0.0, 50.0),
        (7, 0.05, -40.0, -39.65),
        (3, 1e-5, 0.0, 3e-05),
        (-15, 0.1, 0.0, -1.5),
    ],
)
def test_scaled_integers_keep_the_decimals_of_the_scale(
    raw: int, scale: float, offset: float, value: float
) -> None:
    assert apply_scale(raw, scale, offset) == value
    assert repr(apply_scale(raw, scale, offset)) == repr(value)


@pytest.mark.parametrize(
    ("wire", "strip", "expected"),
    [
        (b"  AB  ", True, "AB"),
        (b"  AB  ", False, "  AB  "),
        (b"AB  \x00\x00", False, "AB  "),  # NUL is padding, never text
        (b"\x00\x00AB  ", False, "AB  "),
        (b"AB \x00\x00\x00", True, "AB"),
    ],
)
def test_string_strip_option(wire: bytes, strip: bool, expected: str) -> None:
    layout = TagLayout("s", 0, "string", length=3, strip=strip)
    assert decode_registers(regs(wire), [layout]).values == {"s": expected}


def test_a_whole_register_and_its_bits_decode_from_one_block() -> None:
    layouts = [
        TagLayout("status_word", 0, "uint16"),
        TagLayout("ready", 0, "bool", bit=0),
        TagLayout("running", 0, "bool", bit=1),
        TagLayout("fault", 0, "bool", bit=3),
    ]
    out = decode_registers([0b1001], layouts)
    assert out.errors == {}
    assert out.values == {"status_word": 9, "ready": True, "running": False, "fault": True}


NA = "not available"


@pytest.mark.parametrize(
    ("wire", "type_", "order", "invalid", "expected"),
    [
        (b"\xff\xff", "uint16", "ABCD", (0xFFFF,), f"{NA} (0xFFFF)"),
        (b"\xff\xfe", "uint16", "ABCD", (0xFFFF,), 0xFFFE),
        (b"\x80\x00", "int16", "ABCD", (0x8000,), f"{NA} (0x8000)"),
        (b"\x7f\xff", "int16", "ABCD", (0x7FFF, 0x8000), f"{NA} (0x7FFF)"),
        (b"\x00\x80", "int16", "BADC", (0x8000,), f"{NA} (0x8000)"),  # raw = after byte order
        (b"\x80\x00\x00\x00", "int32", "ABCD", (0x80000000,), f"{NA} (0x80000000)"),
        (b"\x00\x00\x80\x00", "int32", "CDAB", (0x80000000,), f"{NA} (0x80000000)"),
        (b"\x00\x00\x80\x00", "int32", "ABCD", (0x80000000,), 0x8000),
        (b"\xff\xff\xff\xff", "uint32", "ABCD", (0xFFFF,), 0xFFFFFFFF),  # not the 16-bit one
        (b"\xff\x7f\xff\xff", "float32", "ABCD", (0xFF7FFFFF,), f"{NA} (0xFF7FFFFF)"),
        (b"\x00" * 8, "uint64", "ABCD", (0,), f"{NA} (0x{0:016X})"),
    ],
)
def test_invalid_raw_values_become_not_available(
    wire: bytes, type_: str, order: str, invalid: tuple[int, ...], expected: object
) -> None:
    layout = TagLayout("t", 0, type_, order, scale=0.1, invalid=invalid)
    for decode in (decode_registers, _per_tag):
        out = decode(regs(wire), [layout])
        if isinstance(expected, str):
            assert (out.values, out.errors) == ({}, {"t": expected})
        else:
            assert out.errors == {}
            assert isinstance(expected, int)
            assert out.values["t"] == pytest.approx(expected * 0.1)


def _per_tag(registers: list[int], layouts: list[TagLayout]) -> Decoded:
    out = Decoded()
    _decode_each(out, _Block(registers), registers, layouts)
    return out
