"""Pure tables: status codes -> quality/error, server values -> engineering values."""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass
from typing import Any

import pytest

from drivers.base import not_finite
from drivers.opcua.config import OpcuaTag
from drivers.opcua.quality import error_for, name, quality
from drivers.opcua.values import ValueProblem, coerce, stamp_ms


@pytest.mark.parametrize(
    ("code", "severity", "error"),
    [
        (0x00000000, "good", None),
        (0x00960000, "good", None),
        (0x40900000, "uncertain", None),
        (0x80340000, "bad", "BadNodeIdUnknown"),
        (0x803A0000, "bad", "BadNotReadable"),
        (0x80310000, "bad", "BadNoCommunication"),
        (0x808C0000, "bad", "BadSensorFailure"),
        (0x80340400, "bad", "BadNodeIdUnknown"),  # info bits do not change the meaning
        (0x80AB0000, "bad", "Bad 0x80AB0000"),
        (0xC0000000, "bad", "Bad 0xC0000000"),
    ],
)
def test_status_codes(code: int, severity: str, error: str | None) -> None:
    assert quality(code) == severity
    assert error_for(code) == error


def test_names_of_uncertain_codes() -> None:
    assert name(0x40900000) == "UncertainLastUsableValue"
    assert name(0x40AB0000) == "Uncertain 0x40AB0000"


class Colour(enum.IntEnum):
    RED = 3


@dataclass
class Text:  # shaped like asyncua's LocalizedText
    Text: str | None
    Locale: str | None = None


def _tag(**kw: Any) -> OpcuaTag:
    return OpcuaTag(node="i=1", **kw)


@pytest.mark.parametrize(
    ("raw", "tag", "expected"),
    [
        (True, _tag(), True),
        (7, _tag(), 7),
        (2.5, _tag(), 2.5),
        ("abc", _tag(), "abc"),
        (Colour.RED, _tag(), 3),
        (Text("Running", "en"), _tag(), "Running"),
        (Text(None), _tag(), ""),
        (b"\x01\xff", _tag(), "01ff"),
        (dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.UTC), _tag(), "2025-01-02T03:04:05+00:00"),
        (1500, _tag(scale=0.01), 15.0),
        (20, _tag(scale=0.5, offset=-5), 5.0),
        (1500, _tag(type="int", scale=0.01), 15),
        (2.6, _tag(type="int"), 3),
        (3, _tag(type="float"), 3.0),
        ("42", _tag(type="int"), 42),
        ("4.5", _tag(type="float"), 4.5),
        (1, _tag(type="bool"), True),
        ("off", _tag(type="bool"), False),
        (6, _tag(type="string"), "6"),
        (True, _tag(type="int"), 1),
    ],
)
def test_coerce(raw: Any, tag: OpcuaTag, expected: Any) -> None:
    value = coerce(raw, tag)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(
    ("raw", "tag", "message"),
    [
        (None, _tag(), "no value"),
        ([1, 2], _tag(), "arrays are not supported"),
        (object(), _tag(), "unsupported value type object"),
        ("abc", _tag(type="int"), "'abc' is not a number"),
        ("maybe", _tag(type="bool"), "'maybe' is not a bool"),
        ("abc", _tag(scale=2), "cannot scale a str value"),
        (True, _tag(scale=2), "cannot scale a bool value"),
        (float("nan"), _tag(type="int"), "nan is not an int"),
    ],
)
def test_coerce_problems(raw: Any, tag: OpcuaTag, message: str) -> None:
    with pytest.raises(ValueProblem) as info:
        coerce(raw, tag)
    assert str(info.value) == message


UTC = dt.UTC
GOOD = dt.datetime(2026, 12, 3, 8, 0, 0, tzinfo=UTC)
GOOD_MS = int(GOOD.timestamp() * 1000)
SERVER = dt.datetime(2026, 12, 3, 8, 0, 5, tzinfo=UTC)
SERVER_MS = int(SERVER.timestamp() * 1000)
NOW_MS = 1_796_300_000_000


@pytest.mark.parametrize(
    ("source", "server", "expected"),
    [
        (GOOD, SERVER, GOOD_MS),
        (None, SERVER, SERVER_MS),
        (dt.datetime(1, 1, 1), SERVER, SERVER_MS),  # DateTime.MinValue as .NET writes it
        (dt.datetime(1601, 1, 1), SERVER, SERVER_MS),  # FILETIME 0 as asyncua decodes it
        (dt.datetime(1970, 1, 1, tzinfo=UTC), SERVER, SERVER_MS),  # a PLC without a set clock
        (dt.datetime(9999, 12, 31), SERVER, SERVER_MS),  # DateTime.MaxValue
        (dt.datetime(1601, 1, 1), dt.datetime(1601, 1, 1), NOW_MS),
        (None, None, NOW_MS),
    ],
)
def test_an_absurd_source_timestamp_falls_back_to_the_server_then_to_now(
    source: dt.datetime | None, server: dt.datetime | None, expected: int
) -> None:
    assert stamp_ms(source, server, NOW_MS) == expected


def test_a_non_finite_double_is_a_tag_error_with_the_shared_text() -> None:
    for bad in (float("nan"), float("inf"), float("-inf")):
        with pytest.raises(ValueProblem) as caught:
            coerce(bad, _tag())
        assert str(caught.value) == not_finite(bad)
