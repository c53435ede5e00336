"""The simulators' own encoder, checked against hand-written register literals."""

from __future__ import annotations

import pytest

from simulators.encode import encode_number, encode_string, register_count

NUMBERS = [
    # (value, type, byte order, expected words) - all literals written out by hand
    (0x1234, "uint16", "ABCD", [0x1234]),
    (0x1234, "uint16", "BADC", [0x3412]),
    (0x1234, "uint16", "CDAB", [0x1234]),
    (0x1234, "uint16", "DCBA", [0x3412]),
    (65535, "uint16", "ABCD", [0xFFFF]),
    (-2, "int16", "ABCD", [0xFFFE]),
    (-2, "int16", "BADC", [0xFEFF]),
    (-32768, "int16", "ABCD", [0x8000]),
    (0x12345678, "uint32", "ABCD", [0x1234, 0x5678]),
    (0x12345678, "uint32", "BADC", [0x3412, 0x7856]),
    (0x12345678, "uint32", "CDAB", [0x5678, 0x1234]),
    (0x12345678, "uint32", "DCBA", [0x7856, 0x3412]),
    (-2, "int32", "ABCD", [0xFFFF, 0xFFFE]),
    (-2, "int32", "CDAB", [0xFFFE, 0xFFFF]),
    (-2, "int32", "BADC", [0xFFFF, 0xFEFF]),
    (-2, "int32", "DCBA", [0xFEFF, 0xFFFF]),
    (1.0, "float32", "ABCD", [0x3F80, 0x0000]),
    (1.0, "float32", "CDAB", [0x0000, 0x3F80]),
    (1.0, "float32", "BADC", [0x803F, 0x0000]),
    (1.0, "float32", "DCBA", [0x0000, 0x803F]),
    (-2.5, "float32", "ABCD", [0xC020, 0x0000]),
    (230.2, "float32", "ABCD", [0x4366, 0x3333]),
    (0x0102030405060708, "uint64", "ABCD", [0x0102, 0x0304, 0x0506, 0x0708]),
    (0x0102030405060708, "uint64", "BADC", [0x0201, 0x0403, 0x0605, 0x0807]),
    (0x0102030405060708, "uint64", "CDAB", [0x0708, 0x0506, 0x0304, 0x0102]),
    (0x0102030405060708, "uint64", "DCBA", [0x0807, 0x0605, 0x0403, 0x0201]),
    (-1, "int64", "ABCD", [0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF]),
    (-256, "int64", "CDAB", [0xFF00, 0xFFFF, 0xFFFF, 0xFFFF]),
    (1.0, "float64", "ABCD", [0x3FF0, 0x0000, 0x0000, 0x0000]),
    (1.0, "float64", "CDAB", [0x0000, 0x0000, 0x0000, 0x3FF0]),
    (1.0, "float64", "DCBA", [0x0000, 0x0000, 0x0000, 0xF03F]),
    (3.0, "uint16", "ABCD", [0x0003]),  # an integral float is accepted for an int type
]


@pytest.mark.parametrize(("value", "type_name", "order", "words"), NUMBERS)
def test_encode_number(value: float, type_name: str, order: str, words: list[int]) -> None:
    assert encode_number(value, type_name, order) == words


@pytest.mark.parametrize(
    ("value", "type_name"),
    [(65536, "uint16"), (-1, "uint16"), (32768, "int16"), (2**32, "uint32"), (1.5, "int32"),
     (-(2**63) - 1, "int64"), (float("nan"), "uint16")],
)  # fmt: skip
def test_out_of_range_integers_are_refused(value: float, type_name: str) -> None:
    with pytest.raises(ValueError, match=r"range|integer"):
        encode_number(value, type_name)


def test_unknown_type_and_order_are_refused() -> None:
    with pytest.raises(ValueError, match="numeric"):
        encode_number(1, "int8")
    with pytest.raises(ValueError, match="byte order"):
        encode_number(1, "uint32", "ABDC")


@pytest.mark.parametrize(
    ("text", "length", "order", "words"),
    [
        ("AB", 2, "ABCD", [0x4142, 0x0000]),
        ("ABC", 2, "ABCD", [0x4142, 0x4300]),
        ("AB", 1, "BADC", [0x4241]),
        ("ABCD", 2, "DCBA", [0x4241, 0x4443]),
        ("ABCD", 2, "CDAB", [0x4142, 0x4344]),
    ],
)
def test_encode_string(text: str, length: int, order: str, words: list[int]) -> None:
    assert encode_string(text, length, order) == words


def test_string_too_long_is_refused() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        encode_string("ABCDE", 2)


@pytest.mark.parametrize(
    ("type_name", "length", "count"),
    [("bool", None, 1), ("int16", None, 1), ("uint32", None, 2), ("float32", None, 2),
     ("int64", None, 4), ("float64", None, 4), ("string", 5, 5)],
)  # fmt: skip
def test_register_count(type_name: str, length: int | None, count: int) -> None:
    assert register_count(type_name, length) == count
