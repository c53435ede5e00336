"""SPEC.parse: every problem reported at once, located by key path, with its exact message."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, cast

import pytest
import yaml

from drivers import registry
from drivers.base import ConfigError
from drivers.serial import SPEC, SerialOptions
from drivers.serial.config import FAIL_TAG_DESCRIPTION

ROOT = Path(__file__).resolve().parents[3]

BASE: dict[str, Any] = {
    "connection": {"serial": {"port": "/dev/ttyUSB0"}},
    "protocol": {"parser": {"regex": r"(?P<torque>\d+\.\d+) (?P<result>OK|NOK)"}},
    "tags": {"torque": {"unit": "Nm"}},
}


def with_changes(**sections: Any) -> dict[str, Any]:
    options = copy.deepcopy(BASE)
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(options.get(key), dict):
            options[key] = {**options[key], **value}
        else:
            options[key] = value
    return options


def problems(options: Any) -> list[tuple[tuple[str | int, ...], str]]:
    with pytest.raises(ConfigError) as info:
        SPEC.parse(options)
    return [(p.loc, p.message) for p in info.value.problems]


def test_registry_serves_this_spec() -> None:
    assert registry.spec_for("serial") is cast(object, SPEC)
    assert SPEC.protocol == "serial"


def test_defaults() -> None:
    parsed = SPEC.parse(BASE)
    assert isinstance(parsed, SerialOptions)
    conn = parsed.connection.serial
    assert (conn.baud, conn.parity, conn.stop_bits, conn.byte_size, conn.timeout) == (
        9600,
        "N",
        1,
        8,
        1.0,
    )
    proto = parsed.protocol
    assert (proto.mode, proto.request, proto.terminator, proto.encoding, proto.max_line) == (
        "listen",
        None,
        "\r\n",
        "ascii",
        512,
    )
    tag = parsed.tags["torque"]
    assert (tag.field, tag.type, tag.group, tag.unit) == (None, "float", "default", "Nm")
    assert parsed.field_of("torque") == "torque"
    assert parsed.terminator_bytes == b"\r\n"
    assert parsed.request_bytes is None


def test_request_mode_and_escapes() -> None:
    parsed = SPEC.parse(
        with_changes(
            protocol={
                "mode": "request",
                "request": "SI\\r\\n",
                "terminator": "\\n",
                "parser": BASE["protocol"]["parser"],
            },
            connection={
                "serial": {
                    "port": "socket://127.0.0.1:4001",
                    "timeout": "250ms",
                    "parity": "E",
                    "stop_bits": 2,
                    "byte_size": 7,
                    "baud": 19200,
                }
            },
        )
    )
    assert parsed.request_bytes == b"SI\r\n"
    assert parsed.terminator_bytes == b"\n"
    assert parsed.connection.serial.timeout == 0.25


def test_fail_when_adds_a_bool_tag_in_the_first_group() -> None:
    parsed = SPEC.parse(
        with_changes(
            protocol={
                "parser": {
                    **BASE["protocol"]["parser"],
                    "fail_when": {"group": "result", "equals": "NOK"},
                }
            },
            tags={"torque": {"group": "fast"}},
        )
    )
    extra = parsed.tags["result_ok"]
    assert (extra.field, extra.type, extra.false_values, extra.group, extra.description) == (
        "result",
        "bool",
        ["NOK"],
        "fast",
        FAIL_TAG_DESCRIPTION,
    )
    assert list(parsed.tags) == ["torque", "result_ok"]


CASES: list[tuple[str, Any, list[tuple[tuple[str | int, ...], str]]]] = [
    ("not a mapping", ["x"], [((), "expected a mapping")]),
    (
        "sections missing",
        {},
        [
            (("connection",), "is required"),
            (("protocol",), "is required"),
            (("tags",), "at least one tag is required"),
        ],
    ),
    ("unknown top-level key", with_changes(extra=1), [(("extra",), "unknown key")]),
    (
        "unknown keys everywhere",
        with_changes(
            connection={"serial": {"port": "/dev/x", "speed": 1}},
            protocol={"parser": {"regex": "(?P<torque>.)", "group": 1}},
            tags={"torque": {"adress": 3}},
        ),
        [
            (("connection", "serial", "speed"), "unknown key"),
            (("protocol", "parser", "group"), "unknown key"),
            (("tags", "torque", "adress"), "unknown key"),
        ],
    ),
    (
        "bad line settings",
        with_changes(
            connection={
                "serial": {
                    "port": "/dev/x",
                    "parity": "X",
                    "stop_bits": 3,
                    "byte_size": 9,
                    "baud": 0,
                    "timeout": "soon",
                }
            }
        ),
        [
            (("connection", "serial", "baud"), "0: Input should be greater than 0"),
            (("connection", "serial", "parity"), "'X': Input should be 'N', 'E' or 'O'"),
            (("connection", "serial", "stop_bits"), "3: Input should be 1 or 2"),
            (("connection", "serial", "byte_size"), "9: Input should be 7 or 8"),
            (
                ("connection", "serial", "timeout"),
                "'soon': expected a duration such as 500ms, 1s, 2m",
            ),
        ],
    ),
    (
        "unknown URL scheme",
        with_changes(connection={"serial": {"port": "tcp://1.2.3.4:5"}}),
        [
            (
                ("connection", "serial", "port"),
                "unknown URL scheme 'tcp'; use a device path such as /dev/ttyUSB0 or one of "
                "socket://HOST:PORT, rfc2217://HOST:PORT, loop://",
            )
        ],
    ),
    (
        "regex does not compile",
        with_changes(protocol={"parser": {"regex": "(?P<torque>\\d+"}}),
        [
            (
                ("protocol", "parser", "regex"),
                "invalid regular expression: missing ), unterminated subpattern at position 0",
            )
        ],
    ),
    (
        "regex without groups",
        with_changes(protocol={"parser": {"regex": "\\d+"}}),
        [
            (
                ("protocol", "parser", "regex"),
                "has no named group; name each field with (?P<name>...)",
            )
        ],
    ),
    (
        "tag name is not a group",
        with_changes(tags={"angle": {}}),
        [
            (
                ("tags", "angle"),
                "'angle' is not a named group of protocol.parser.regex (it has: result, torque)",
            )
        ],
    ),
    (
        "tag field is not a group",
        with_changes(tags={"t": {"field": "trq"}}),
        [
            (
                ("tags", "t", "field"),
                "'trq' is not a named group of protocol.parser.regex (it has: result, torque)",
            )
        ],
    ),
    (
        "request missing in request mode",
        with_changes(protocol={"mode": "request", "parser": BASE["protocol"]["parser"]}),
        [(("protocol", "request"), "is required when mode is request")],
    ),
    (
        "request in listen mode",
        with_changes(protocol={"request": "SI\r\n", "parser": BASE["protocol"]["parser"]}),
        [
            (
                ("protocol", "request"),
                "is only used when mode is request; remove it or set mode: request",
            )
        ],
    ),
    (
        "bad mode",
        with_changes(protocol={"mode": "poll", "parser": BASE["protocol"]["parser"]}),
        [(("protocol", "mode"), "'poll': Input should be 'request' or 'listen'")],
    ),
    (
        "wrong kind",
        with_changes(protocol={"kind": "modbus", "parser": BASE["protocol"]["parser"]}),
        [(("protocol", "kind"), "'modbus': Input should be 'serial'")],
    ),
    (
        "bad escape",
        with_changes(
            protocol={"mode": "request", "request": "SI\\e", "parser": BASE["protocol"]["parser"]}
        ),
        [(("protocol", "request"), "bad escape '\\e'; use \\r, \\n, \\t, \\0, \\\\ or \\xNN")],
    ),
    (
        "empty terminator",
        with_changes(protocol={"terminator": "", "parser": BASE["protocol"]["parser"]}),
        [(("protocol", "terminator"), "cannot be empty")],
    ),
    (
        "unknown encoding",
        with_changes(protocol={"encoding": "klingon", "parser": BASE["protocol"]["parser"]}),
        [(("protocol", "encoding"), "unknown encoding 'klingon'")],
    ),
    (
        "request not encodable",
        with_changes(
            protocol={"mode": "request", "request": "W€\r\n", "parser": BASE["protocol"]["parser"]}
        ),
        [(("protocol", "request"), "'W€\\r\\n' cannot be written in ascii")],
    ),
    (
        "max_line out of range",
        with_changes(protocol={"max_line": 0, "parser": BASE["protocol"]["parser"]}),
        [(("protocol", "max_line"), "0: Input should be greater than or equal to 1")],
    ),
    (
        "fail_when group unknown and tag name taken",
        with_changes(
            protocol={
                "parser": {
                    **BASE["protocol"]["parser"],
                    "fail_when": {"group": "res", "equals": "NOK", "tag": "torque"},
                }
            }
        ),
        [
            (
                ("protocol", "parser", "fail_when", "group"),
                "'res' is not a named group of protocol.parser.regex (it has: result, torque)",
            ),
            (
                ("protocol", "parser", "fail_when", "tag"),
                "'torque' is also a tag name; fail_when sets that tag itself, "
                "so rename the tag or set fail_when.tag",
            ),
        ],
    ),
    (
        "type-specific keys on the wrong type",
        with_changes(
            tags={
                "torque": {"true_values": ["OK"], "type": "float"},
                "result": {"type": "string", "scale": 2, "offset": 1},
            }
        ),
        [
            (("tags", "torque", "true_values"), "is only for type bool"),
            (("tags", "result", "scale"), "is only for types int and float"),
            (("tags", "result", "offset"), "is only for types int and float"),
        ],
    ),
    (
        "bad tag type",
        with_changes(tags={"torque": {"type": "double"}}),
        [
            (
                ("tags", "torque", "type"),
                "'double': Input should be 'bool', 'int', 'float' or 'string'",
            )
        ],
    ),
    (
        "errors in all sections at once",
        {
            "connection": {"serial": {}},
            "protocol": {"mode": "request", "parser": {"regex": "(?P<a>x)"}},
            "tags": {"b": {}},
        },
        [
            (("connection", "serial", "port"), "is required"),
            (("protocol", "request"), "is required when mode is request"),
            (("tags", "b"), "'b' is not a named group of protocol.parser.regex (it has: a)"),
        ],
    ),
]


@pytest.mark.parametrize(("options", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_config_errors(options: Any, expected: list[tuple[tuple[str | int, ...], str]]) -> None:
    assert problems(options) == expected


def test_error_text_is_dotted() -> None:
    with pytest.raises(ConfigError, match=r"^protocol\.request: is required when mode is request$"):
        SPEC.parse(with_changes(protocol={"mode": "request", "parser": BASE["protocol"]["parser"]}))


def test_sample_yaml_parses() -> None:
    sample = yaml.safe_load((ROOT / "drivers/serial/sample.yaml").read_text(encoding="utf-8"))
    parsed = SPEC.parse(sample)
    assert parsed.protocol.mode == "request"
    assert parsed.request_bytes == b"SI\r\n"
    assert set(parsed.tags) == {"weight", "stable", "display_unit"}


@pytest.mark.parametrize("name", ["mt-sics-scale", "torque-tool"])
def test_profiles_parse_with_a_site_connection(name: str) -> None:
    profile = yaml.safe_load((ROOT / f"config/profiles/{name}.yaml").read_text(encoding="utf-8"))
    assert profile["profile"] == name
    assert profile["protocol"]["kind"] == "serial"
    parsed = SPEC.parse(
        {
            "connection": {"serial": {"port": "/dev/ttyUSB0"}},
            "protocol": profile["protocol"],
            "tags": profile["tags"],
        }
    )
    assert {tag.group for tag in parsed.tags.values()} <= set(profile["poll_groups"])
    if name == "torque-tool":
        assert parsed.protocol.mode == "listen"
        assert "result_ok" in parsed.tags
    else:
        assert parsed.request_bytes == b"SI\r\n"
