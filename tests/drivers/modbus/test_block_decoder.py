"""The compiled block decoder agrees with decoding tag by tag, for any layout mix."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.modbus.decode import (
    BYTE_ORDERS,
    BlockDecoder,
    Decoded,
    TagLayout,
    _Block,
    _decode_each,
)

TYPES = ("int16", "uint16", "int32", "uint32", "float32", "int64", "uint64", "float64",
         "bool", "string")  # fmt: skip


@st.composite
def layouts(draw: st.DrawFn) -> list[TagLayout]:
    n = draw(st.integers(1, 12))
    out = []
    for i in range(n):
        type_ = draw(st.sampled_from(TYPES))
        out.append(
            TagLayout(
                name=f"t{i}",
                index=draw(st.integers(0, 20)),  # overlaps on purpose
                type=type_,
                order=draw(st.sampled_from(BYTE_ORDERS)),
                bit=draw(st.integers(0, 15)) if type_ == "bool" else None,
                length=draw(st.integers(1, 3)) if type_ == "string" else None,
                scale=draw(st.sampled_from([1.0, 0.1, 10.0])),
                value_offset=draw(st.sampled_from([0.0, -5.0])),
            )
        )
    return out


def _same(a: Decoded, b: Decoded) -> bool:
    if a.errors != b.errors or a.values.keys() != b.values.keys():
        return False
    for k, v in a.values.items():
        w = b.values[k]
        if isinstance(v, float) and isinstance(w, float) and math.isnan(v) and math.isnan(w):
            continue
        if v != w or type(v) is not type(w):
            return False
    return True


@settings(max_examples=300, deadline=None)
@given(layouts(), st.lists(st.integers(0, 65535), min_size=0, max_size=30))
def test_compiled_equals_tag_by_tag(lays: list[TagLayout], registers: list[int]) -> None:
    expected = Decoded()
    _decode_each(expected, _Block(registers), registers, lays)
    got = BlockDecoder(lays).decode(registers)
    assert _same(got, expected), (got, expected)


def test_decodes_into_given_dicts() -> None:
    into = Decoded({"old": 1}, {})
    out = BlockDecoder([TagLayout("a", 0, "int16"), TagLayout("b", 1, "uint16", scale=0.5)]).decode(
        [0xFFFF, 4], into
    )
    assert out is into
    assert into.values == {"old": 1, "a": -1, "b": 2.0}
