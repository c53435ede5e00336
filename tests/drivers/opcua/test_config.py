"""OPC UA options: every sample loads, and bad options fail with located, exact messages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from drivers.base import ConfigError, ConfigProblem
from drivers.opcua import SPEC
from drivers.opcua.config import OpcuaOptions

ROOT = Path(__file__).resolve().parents[3]
ENDPOINT = "opc.tcp://127.0.0.1:4840/x"


def _options(conn: dict[str, Any] | None = None, **tags: Any) -> dict[str, Any]:
    return {
        "connection": {"opcua": {"endpoint": ENDPOINT, **(conn or {})}},
        "tags": tags or {"a": {"node": "ns=2;s=A"}},
    }


def _problems(options: Any) -> list[tuple[tuple[str | int, ...], str]]:
    with pytest.raises(ConfigError) as info:
        SPEC.parse(options)
    return [(p.loc, p.message) for p in info.value.problems]


def test_sample_yaml_parses_with_documented_defaults() -> None:
    sample = yaml.safe_load((ROOT / "drivers/opcua/sample.yaml").read_text())
    options = SPEC.parse(sample)
    assert isinstance(options, OpcuaOptions)
    conn = options.conn
    assert (conn.timeout, conn.session_timeout, conn.mode, conn.publishing_interval) == (
        5.0,
        30.0,
        "poll",
        1.0,
    )
    assert options.tags["cur_speed"].sampling_interval == 0.5
    assert set(options.group("fast")) == {"state_current", "cur_speed"}


def test_profile_tags_are_valid_opcua_tags() -> None:
    profile = yaml.safe_load((ROOT / "config/profiles/packml-line.yaml").read_text())
    options = SPEC.parse(
        {
            "connection": {"opcua": {"endpoint": ENDPOINT}},
            "protocol": profile["protocol"],
            "tags": profile["tags"],
        }
    )
    assert len(options.tags) == 9


def test_defaults() -> None:
    options = SPEC.parse(_options())
    assert options.conn.mode == "poll"
    assert options.conn.security_policy is None
    assert options.tags["a"].group == "default"


def test_a_bad_password_value_is_not_echoed() -> None:
    assert _problems(_options({"username": "u", "password": 12345})) == [
        (("connection", "opcua", "password"), "Input should be a valid string")
    ]


def test_password_is_never_shown() -> None:
    options = SPEC.parse(_options({"username": "u", "password": "hunter2"}))
    assert "hunter2" not in repr(options)
    assert "hunter2" not in str(options.model_dump())
    assert options.conn.password is not None
    assert options.conn.password.get_secret_value() == "hunter2"


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (
            _options(a={"node": "ns=2;s=A", "colour": "red"}),
            [(("tags", "a", "colour"), "unknown key")],
        ),
        (
            _options(a={"group": "fast"}),
            [(("tags", "a"), "give exactly one of node or browse_path")],
        ),
        (
            _options(a={"node": "ns=2;s=A", "browse_path": "0:Objects/2:A"}),
            [(("tags", "a"), "give exactly one of node or browse_path")],
        ),
        (
            _options(a={"node": "Line1.Speed"}),
            [
                (
                    ("tags", "a", "node"),
                    "'Line1.Speed': expected a NodeId such as ns=2;s=Line1.Speed,"
                    " i=2258 or nsu=urn:vendor:line;s=Speed",
                )
            ],
        ),
        (
            _options(a={"browse_path": "Objects/Line1"}),
            [
                (
                    ("tags", "a", "browse_path"),
                    "'Objects/Line1': expected a browse path from the"
                    " Root folder such as 0:Objects/2:Line1/2:Speed",
                )
            ],
        ),
        (
            _options(a={"node": "i=1", "type": "string", "scale": 2}),
            [(("tags", "a"), "scale/offset apply to numbers, not to type string")],
        ),
        (
            _options(a={"node": "i=1", "type": "double"}),
            [
                (
                    ("tags", "a", "type"),
                    "'double': Input should be 'bool', 'int', 'float' or 'string'",
                )
            ],
        ),
        (
            _options({"endpoint": "http://x"}),
            [
                (
                    ("connection", "opcua", "endpoint"),
                    "'http://x': expected opc.tcp://host:port/path",
                )
            ],
        ),
        (
            _options({"security_policy": "Basic256Sha256"}),
            [
                (
                    ("connection", "opcua"),
                    "security_policy Basic256Sha256 needs security_mode Sign or SignAndEncrypt",
                )
            ],
        ),
        (
            _options({"security_policy": "Basic256Sha256", "security_mode": "Sign"}),
            [
                (
                    ("connection", "opcua"),
                    "security_policy Basic256Sha256 needs certificate and private_key",
                )
            ],
        ),
        (
            _options({"password": "x"}),
            [(("connection", "opcua"), "password given without username")],
        ),
        (
            _options({"timeout": "soon"}),
            [
                (
                    ("connection", "opcua", "timeout"),
                    "'soon': expected a duration such as 500ms, 1s, 2m",
                )
            ],
        ),
        (
            _options({"mode": "push"}),
            [(("connection", "opcua", "mode"), "'push': Input should be 'poll' or 'subscribe'")],
        ),
        (
            {"connection": {"modbus_tcp": {"host": "x"}}, "tags": {}},
            [
                (("connection", "opcua"), "is required"),
                (("connection", "modbus_tcp"), "unknown key"),
            ],
        ),
        (
            {**_options(), "protocol": {"kind": "modbus"}},
            [(("protocol", "kind"), "'modbus': Input should be 'opcua'")],
        ),
    ],
)
def test_bad_options(options: dict[str, Any], expected: list[tuple[Any, str]]) -> None:
    assert _problems(options) == expected


def test_every_problem_is_reported_at_once() -> None:
    problems = _problems(
        _options({"mode": "push", "timeout": "x"}, a={"node": "bad"}, b={"colour": 1})
    )
    assert [loc for loc, _ in problems] == [
        ("connection", "opcua", "timeout"),
        ("connection", "opcua", "mode"),
        ("tags", "a", "node"),
        ("tags", "b", "colour"),
    ]


def test_config_error_text_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"tags\.a\.node: 'bad'"):
        SPEC.parse(_options(a={"node": "bad"}))
    assert ConfigProblem(("x",), "y") == (("x",), "y")
