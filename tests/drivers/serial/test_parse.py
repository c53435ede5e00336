"""Table tests of drivers.serial.parse: framing, matching, conversion, garbage verdicts."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.base import Value
from drivers.serial import SPEC
from drivers.serial.config import SerialOptions, SerialTag, unescape
from drivers.serial.parse import Garbage, LineParser, LineSplitter, ParsedLine, TooLong, convert

TORQUE_REGEX = (
    r"ID=(?P<id>\d+) T=(?P<torque>-?\d+(?:\.\d+)?)Nm A=(?P<angle>-?\d+(?:\.\d+)?)deg "
    r"(?P<result>OK|NOK)"
)
SCALE_REGEX = r"S (?P<status>[SDI+-])(?: +(?P<weight>-?\d+(?:\.\d+)?) +(?P<unit>\S+))? *"


def options(regex: str, tags: dict[str, Any], **protocol: Any) -> SerialOptions:
    return SPEC.parse(
        {
            "connection": {"serial": {"port": "loop://"}},
            "protocol": {"parser": {"regex": regex}, **protocol},
            "tags": tags,
        }
    )


def torque_parser(**protocol: Any) -> LineParser:
    parser = {"regex": TORQUE_REGEX, "fail_when": {"group": "result", "equals": "NOK"}}
    return LineParser(
        options(
            TORQUE_REGEX,
            {
                "tightening_id": {"field": "id", "type": "int"},
                "torque_nm": {"field": "torque"},
                "angle_deg": {"field": "angle"},
            },
            **{"parser": parser, **protocol},
        )
    )


def scale_parser() -> LineParser:
    return LineParser(
        options(
            SCALE_REGEX,
            {
                "weight": {},
                "stable": {"field": "status", "type": "bool", "true_values": ["S"]},
                "unit": {"type": "string"},
            },
        )
    )


# --------------------------------------------------------------------------- splitter

SPLITS: list[tuple[str, bytes, int, list[bytes], list[bytes | TooLong]]] = [
    ("one line", b"\r\n", 16, [b"abc\r\n"], [b"abc"]),
    ("two lines in one chunk", b"\r\n", 16, [b"a\r\nb\r\n"], [b"a", b"b"]),
    ("line across chunks", b"\r\n", 16, [b"ab", b"c\r", b"\nd"], [b"abc"]),
    ("terminator split", b"\r\n", 16, [b"abc\r", b"\n"], [b"abc"]),
    ("blank lines skipped", b"\r\n", 16, [b"\r\n\r\nx\r\n\r\n"], [b"x"]),
    ("lone CR kept inside a CRLF line", b"\r\n", 16, [b"a\rb\r\n"], [b"a\rb"]),
    ("LF terminator", b"\n", 16, [b"a\nb\n"], [b"a", b"b"]),
    ("exactly max_line", b"\r\n", 4, [b"abcd\r\n"], [b"abcd"]),
    ("one over max_line, complete", b"\r\n", 4, [b"abcde\r\n"], [TooLong(b"abcde")]),
    (
        "over-long then good",
        b"\r\n",
        4,
        [b"abcdefgh", b"ijk\r\nok\r\n"],
        [TooLong(b"abcdefgh"), b"ok"],
    ),
    (
        "over-long in many chunks reported once",
        b"\r\n",
        4,
        [b"xxxxxx", b"xxxxxx", b"xxxxxx", b"\r\nok\r\n"],
        [TooLong(b"xxxxxx"), b"ok"],
    ),
    ("no terminator yet", b"\r\n", 16, [b"abc"], []),
]


@pytest.mark.parametrize(
    ("term", "max_line", "chunks", "expected"), [s[1:] for s in SPLITS], ids=[s[0] for s in SPLITS]
)
def test_splitter(
    term: bytes, max_line: int, chunks: list[bytes], expected: list[bytes | TooLong]
) -> None:
    splitter = LineSplitter(term, max_line)
    frames: list[bytes | TooLong] = []
    for chunk in chunks:
        frames.extend(splitter.feed(chunk))
    assert frames == expected


def test_splitter_memory_is_bounded_without_terminator() -> None:
    splitter = LineSplitter(b"\r\n", 8)
    frames = []
    for _ in range(1000):
        frames.extend(splitter.feed(b"z" * 100))
    assert frames == [TooLong(b"z" * 60)]
    assert len(splitter.pending) <= 1


def test_splitter_keeps_partial_line() -> None:
    splitter = LineSplitter(b"\r\n", 16)
    splitter.feed(b"S S 1")
    assert splitter.pending == b"S S 1"


# --------------------------------------------------------------------------- lines

GOOD: list[tuple[str, bytes, dict[str, Value], dict[str, str], bool]] = [
    (
        "torque OK",
        b"ID=000042 T=12.07Nm A=183.4deg OK",
        {"tightening_id": 42, "torque_nm": 12.07, "angle_deg": 183.4, "result_ok": True},
        {},
        False,
    ),
    (
        "torque NOK keeps its values",
        b"ID=000043 T=14.61Nm A=201.9deg NOK",
        {"tightening_id": 43, "torque_nm": 14.61, "angle_deg": 201.9, "result_ok": False},
        {},
        True,
    ),
    (
        "negative torque",
        b"ID=7 T=-0.50Nm A=-3deg OK",
        {"tightening_id": 7, "torque_nm": -0.5, "angle_deg": -3.0, "result_ok": True},
        {},
        False,
    ),
]


@pytest.mark.parametrize(
    ("line", "values", "errors", "failed"), [g[1:] for g in GOOD], ids=[g[0] for g in GOOD]
)
def test_torque_lines(
    line: bytes, values: dict[str, Value], errors: dict[str, str], failed: bool
) -> None:
    result = torque_parser().parse(line)
    assert result == ParsedLine(values, errors, failed)
    assert type(values["tightening_id"]) is int


SCALE: list[tuple[str, bytes, dict[str, Value], dict[str, str]]] = [
    ("stable", b"S S     12.345 g", {"weight": 12.345, "stable": True, "unit": "g"}, {}),
    ("dynamic", b"S D     12.101 g", {"weight": 12.101, "stable": False, "unit": "g"}, {}),
    ("negative kg", b"S S     -0.250 kg", {"weight": -0.25, "stable": True, "unit": "kg"}, {}),
    ("trailing blanks", b"S S  1.0 g  ", {"weight": 1.0, "stable": True, "unit": "g"}, {}),
    (
        "overload has no weight",
        b"S +",
        {"stable": False},
        {"weight": "field 'weight' absent from line", "unit": "field 'unit' absent from line"},
    ),
]


@pytest.mark.parametrize(
    ("line", "values", "errors"), [s[1:] for s in SCALE], ids=[s[0] for s in SCALE]
)
def test_scale_lines(line: bytes, values: dict[str, Value], errors: dict[str, str]) -> None:
    assert scale_parser().parse(line) == ParsedLine(values, errors, False)


GARBAGE: list[tuple[str, bytes | TooLong, str, str]] = [
    ("no match", b"ES", "no match", "ES"),
    ("partial match only", b"ID=1 T=1.0Nm", "no match", "ID=1 T=1.0Nm"),
    ("noise", b"\xfe\x00~#noise#~\xff", "not valid ascii", "\\xfe\\x00~#noise#~\\xff"),
    ("split marker", TooLong(b"abc"), "line longer than 40 bytes", "abc..."),
    ("too long when given whole", b"x" * 41, "line longer than 40 bytes", "x" * 41 + "..."),
]


@pytest.mark.parametrize(
    ("frame", "reason", "text"), [g[1:] for g in GARBAGE], ids=[g[0] for g in GARBAGE]
)
def test_garbage(frame: bytes | TooLong, reason: str, text: str) -> None:
    result = torque_parser(max_line=40).parse(frame)
    assert isinstance(result, Garbage)
    assert (result.reason, result.text) == (reason, text)
    assert str(result) == f"{reason}: {text}"


def test_other_encoding_decodes() -> None:
    parser = LineParser(options(r"(?P<name>\w+)", {"name": {"type": "string"}}, encoding="latin-1"))
    assert parser.parse(b"M\xfcller") == ParsedLine({"name": "Müller"}, {}, False)


def test_conversion_error_is_one_tag_error() -> None:
    parser = LineParser(options(r"(?P<a>\S+) (?P<b>\S+)", {"a": {}, "b": {"type": "int"}}))
    assert parser.parse(b"1.5 x7") == ParsedLine({"a": 1.5}, {"b": "cannot read 'x7' as int"})


# --------------------------------------------------------------------------- conversion

CONVERT: list[tuple[str, dict[str, Any], str, Value]] = [
    ("float", {}, "12.5", 12.5),
    ("float exponent", {}, "1e3", 1000.0),
    ("int stays int", {"type": "int"}, "+0042", 42),
    ("int scaled", {"type": "int", "scale": 0.1}, "125", 12.5),
    ("offset only", {"offset": -273.15}, "300", 300 - 273.15),
    ("scale and offset", {"scale": 2, "offset": 1}, "3", 7.0),
    ("string stripped", {"type": "string"}, "  g ", "g"),
    ("bool default true", {"type": "bool"}, "OK", True),
    ("bool default false", {"type": "bool"}, "NOK", False),
    ("bool true_values", {"type": "bool", "true_values": ["S"]}, "S", True),
    ("bool true_values other", {"type": "bool", "true_values": ["S"]}, "D", False),
    ("bool false_values", {"type": "bool", "false_values": ["NOK"]}, "OK", True),
    ("bool false_values hit", {"type": "bool", "false_values": ["NOK"]}, "NOK", False),
    ("bool both true", {"type": "bool", "true_values": ["Y"], "false_values": ["N"]}, "Y", True),
    ("bool both false", {"type": "bool", "true_values": ["Y"], "false_values": ["N"]}, "N", False),
]


@pytest.mark.parametrize(
    ("tag", "text", "value"), [c[1:] for c in CONVERT], ids=[c[0] for c in CONVERT]
)
def test_convert(tag: dict[str, Any], text: str, value: Value) -> None:
    result = convert(text, SerialTag.model_validate(tag))
    assert result == pytest.approx(value) if isinstance(value, float) else result == value
    assert type(result) is type(value)


CONVERT_ERRORS: list[tuple[str, dict[str, Any], str, str]] = [
    ("float", {}, "abc", "cannot read 'abc' as float"),
    ("int from decimal", {"type": "int"}, "1.5", "cannot read '1.5' as int"),
    (
        "bool neither",
        {"type": "bool", "true_values": ["Y"], "false_values": ["N"]},
        "?",
        "'?' is neither a true nor a false value",
    ),
]


@pytest.mark.parametrize(
    ("tag", "text", "message"), [c[1:] for c in CONVERT_ERRORS], ids=[c[0] for c in CONVERT_ERRORS]
)
def test_convert_errors(tag: dict[str, Any], text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        convert(text, SerialTag.model_validate(tag))
    assert str(info.value) == message


# --------------------------------------------------------------------------- escapes

ESCAPES = [
    ("SI\r\n", "SI\r\n"),
    ("SI\\r\\n", "SI\r\n"),
    ("a\\tb\\\\c", "a\tb\\c"),
    ("\\x02STX\\x03", "\x02STX\x03"),
    ("\\0", "\0"),
]


@pytest.mark.parametrize(("text", "expected"), ESCAPES)
def test_unescape(text: str, expected: str) -> None:
    assert unescape(text) == expected


@pytest.mark.parametrize("text", ["\\q", "\\x4", "end\\"])
def test_unescape_refuses_unknown(text: str) -> None:
    with pytest.raises(ValueError, match="bad escape"):
        unescape(text)


# --------------------------------------------------------------------------- fuzz


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=30), st.integers(min_value=1, max_value=16))
def test_splitter_and_parser_take_any_bytes(chunks: list[bytes], max_line: int) -> None:
    splitter = LineSplitter(b"\r\n", max_line)
    parser = torque_parser(max_line=max_line)
    for chunk in chunks:
        for frame in splitter.feed(chunk):
            if isinstance(frame, bytes):
                assert 0 < len(frame) <= max_line
                assert b"\r\n" not in frame
            result = parser.parse(frame)
            assert isinstance(result, ParsedLine | Garbage)
        assert len(splitter.pending) <= max_line + 1


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=12).filter(lambda b: b"\n" not in b), max_size=8))
def test_splitter_returns_every_short_line_whatever_the_chunking(lines: list[bytes]) -> None:
    lines = [line.replace(b"\r", b"") for line in lines]
    stream = b"".join(line + b"\r\n" for line in lines)
    splitter = LineSplitter(b"\r\n", 16)
    frames = [f for i in range(0, len(stream), 3) for f in splitter.feed(stream[i : i + 3])]
    assert frames == [line for line in lines if line]


@pytest.mark.parametrize(("text", "shown"), [("nan", "nan"), ("inf", "inf"), ("-Infinity", "-inf")])
def test_non_finite_numbers_are_tag_errors_not_values(text: str, shown: str) -> None:
    # the same text as Modbus and OPC UA: drivers.base.not_finite
    parser = LineParser(options(r"W=(?P<w>\S+) N=(?P<n>\d+)", {"w": {}, "n": {"type": "int"}}))
    result = parser.parse(f"W={text} N=3".encode())
    assert result == ParsedLine({"n": 3}, {"w": f"not a number ({shown})"}, False)
