"""The MQTT JSON message: exact bytes, round trips, clear errors."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.message import (
    decode_message,
    encodable,
    encode_message,
    encode_parts,
    splice_seq,
)
from drivers.base import Reading, not_finite

EXAMPLE = (
    b'{"v":1,"agent":"line-a-box-1","device":"motor-01","seq":42,"readings":[{"ts":1764270000123,'
    b'"values":{"speed_rpm":1480,"current_a":12.3},"errors":{"temp_c":"timeout"}}]}'
)


def test_encodes_the_documented_example_byte_for_byte() -> None:
    reading = Reading(
        ts=1764270000123,
        values={"speed_rpm": 1480, "current_a": 12.3},
        errors={"temp_c": "timeout"},
    )
    assert encode_message("line-a-box-1", "motor-01", 42, [reading]) == EXAMPLE


def test_errors_are_left_out_when_empty() -> None:
    data = encode_message("a", "d", 1, [Reading(ts=5, values={"x": True})])
    assert (
        data
        == b'{"v":1,"agent":"a","device":"d","seq":1,"readings":[{"ts":5,"values":{"x":true}}]}'
    )


def test_several_readings_and_none() -> None:
    readings = [Reading(ts=1, values={"a": 1}), Reading(ts=2, errors={"a": "timeout"})]
    message = decode_message(encode_message("ag", "dev", 7, readings))
    assert message["readings"] == [
        {"ts": 1, "values": {"a": 1}},
        {"ts": 2, "values": {}, "errors": {"a": "timeout"}},
    ]
    assert decode_message(encode_message("ag", "dev", 8, []))["readings"] == []


def test_parts_spliced_with_a_seq_equal_the_whole_message() -> None:
    readings = [Reading(ts=3, values={"s": 'é"q'}, errors={"t": "bad"})]
    head, tail = encode_parts("box", "m", readings)
    for seq in (1, 9, 10, 123456789012):
        assert splice_seq(head, seq, tail) == encode_message("box", "m", seq, readings)


def test_unencodable_value_is_a_value_error_naming_the_device() -> None:
    with pytest.raises(ValueError, match="motor-9"):
        encode_message("a", "motor-9", 1, [Reading(ts=1, values={"big": 2**70})])


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"v": 2, "agent": "a"}', "version"),
        (b'{"agent": "a"}', "version"),
        (b'{"v": 1, "agent": "a", "device": "d", "seq": "1", "readings": []}', "'seq'"),
        (b'{"v": 1, "agent": "a", "device": "d", "seq": 1}', "'readings'"),
        (b'{"v": 1, "agent": "a", "device": "d", "seq": 1, "readings": [3]}', r"readings\[0\]"),
        (
            b'{"v": 1, "agent": "a", "device": "d", "seq": 1, "readings": [{"values": {}}]}',
            r"readings\[0\]\.ts",
        ),
    ],
)
def test_decode_rejects_bad_messages_clearly(data: bytes, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        decode_message(data)


values = st.dictionaries(
    st.text(max_size=8),
    st.one_of(
        st.booleans(),
        st.integers(-(2**63), 2**63 - 1),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=20),
    ),
    max_size=5,
)
readings = st.builds(
    Reading,
    ts=st.integers(0, 2**45),
    values=values,
    errors=st.dictionaries(st.text(max_size=8), st.text(max_size=10), max_size=3),
)


@settings(max_examples=200)
@given(
    agent=st.text(max_size=12),
    device=st.text(max_size=12),
    seq=st.integers(1, 2**62),
    batch=st.lists(readings, max_size=4),
)
def test_round_trip(agent: str, device: str, seq: int, batch: list[Reading]) -> None:
    message = decode_message(encode_message(agent, device, seq, batch))
    assert (message["agent"], message["device"], message["seq"]) == (agent, device, seq)
    assert len(message["readings"]) == len(batch)
    for got, want in zip(message["readings"], batch, strict=True):
        assert got["ts"] == want.ts
        assert got["values"] == want.values
        assert got.get("errors", {}) == want.errors
        assert ("errors" in got) == bool(want.errors)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_a_non_finite_float_is_refused_never_sent_as_null(bad: float) -> None:
    # orjson writes NaN and infinity as null: a consumer would read "no value"
    with pytest.raises(ValueError, match="not a number"):
        encode_parts("a", "d", [Reading(ts=1, values={"x": bad, "y": 2.0})])


@pytest.mark.parametrize(("bad", "text"), [(float("nan"), "nan"), (float("-inf"), "-inf")])
def test_encodable_makes_a_non_finite_float_a_tag_error(bad: float, text: str) -> None:
    fixed = encodable(Reading(ts=1, values={"x": bad, "y": 2.0, "s": "null"}))
    assert fixed.values == {"y": 2.0, "s": "null"}
    assert fixed.errors == {"x": f"not a number ({text})"}
    assert fixed.errors["x"] == not_finite(bad)


def test_a_string_or_tag_named_null_is_no_false_alarm() -> None:
    _, tail = encode_parts("a", "d", [Reading(ts=1, values={"null": "null"})])
    assert b'"null":"null"' in tail


def test_the_clock_flag_is_written_only_when_set() -> None:
    plain = decode_message(encode_message("a", "d", 1, [Reading(ts=1, values={"x": 1})]))
    assert "clock" not in plain["readings"][0]
    flagged = Reading(ts=1, values={"x": 1}, clock="unset")
    message = decode_message(encode_message("a", "d", 1, [flagged]))
    assert message["readings"][0]["clock"] == "unset"
