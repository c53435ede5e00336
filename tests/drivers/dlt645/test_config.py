"""DL/T 645 options: every problem located, defaults from the standard."""

from __future__ import annotations

from typing import Any

import pytest

from drivers.base import ConfigError
from drivers.dlt645 import SPEC
from drivers.dlt645.config import Dlt645Options


def options(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "connection": {"dlt645": {"port": "/dev/ttyUSB0"}},
        "protocol": {"address": "000000000161"},
        "tags": {"voltage_a": {"di": "02010100", "format": "XXX.X", "unit": "V"}},
    }
    base.update(over)
    return base


def problems(raw: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        SPEC.parse(raw)
    return {".".join(map(str, p.loc)): p.message for p in info.value.problems}


def test_defaults_are_the_standard_line_2400_8e1_and_four_fe() -> None:
    parsed = SPEC.parse(options())
    assert isinstance(parsed, Dlt645Options)
    line = parsed.connection.dlt645
    assert (line.baud, line.byte_size, line.parity, line.stop_bits) == (2400, 8, "E", 1)
    assert parsed.protocol.preamble == 4
    tag = parsed.tags["voltage_a"]
    assert (tag.di_value, tag.decimals, tag.size, tag.signed) == (0x02010100, 1, 2, False)
    assert parsed.endpoint().text == "dlt645 /dev/ttyUSB0 2400 8E1 address 000000000161"


def test_socket_url_is_a_tcp_serial_server_endpoint() -> None:
    parsed = SPEC.parse(options(connection={"dlt645": {"port": "socket://10.0.0.9:4001"}}))
    assert parsed.endpoint().tcp == ("10.0.0.9", 4001)


@pytest.mark.parametrize(
    ("di", "message"),
    [("0201010", "8 hex digits"), ("02010G00", "8 hex digits"), (2010100, "string")],
)
def test_bad_data_identifier(di: Any, message: str) -> None:
    found = problems(options(tags={"v": {"di": di, "format": "XXX.X"}}))
    assert message in found["tags.v.di"]


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("00000000016", "12 digits"),
        ("0000000001X1", "neither two digits nor the wildcard"),
        ("999999999999", "broadcast"),
        ("000000AAAAAA", "high pairs"),
    ],
)
def test_bad_address(address: str, message: str) -> None:
    assert message in problems(options(protocol={"address": address}))["protocol.address"]


def test_wildcard_addresses_are_accepted() -> None:
    assert SPEC.parse(options(protocol={"address": "aaaaaaaaaaaa"})).protocol.address == (
        "AAAAAAAAAAAA"
    )
    assert SPEC.parse(options(protocol={"address": "AAAAAA000161"}))


@pytest.mark.parametrize(
    ("fmt", "message"), [("XXX", "even count"), ("9.99", "write the format"), ("X.X.X", "format")]
)
def test_bad_format(fmt: str, message: str) -> None:
    assert (
        message in problems(options(tags={"v": {"di": "02010100", "format": fmt}}))["tags.v.format"]
    )


def test_unknown_keys_everywhere_are_located() -> None:
    raw = options(extra=1)
    raw["connection"]["dlt645"]["speed"] = 9600
    raw["protocol"]["unit_id"] = 1
    raw["tags"]["voltage_a"]["address"] = 3
    found = problems(raw)
    assert found["extra"] == "unknown key"
    assert found["connection.dlt645.speed"] == "unknown key"
    assert found["protocol.unit_id"] == "unknown key"
    assert found["tags.voltage_a.address"] == "unknown key"


def test_missing_pieces_are_reported_together() -> None:
    found = problems({"connection": {"dlt645": {}}, "protocol": {}})
    assert found["connection.dlt645.port"] == "is required"
    assert found["protocol.address"] == "is required"
    assert "at least one tag" in found["tags"]


def test_two_tags_of_one_identifier() -> None:
    tags = {
        "a": {"di": "02010100", "format": "XXX.X"},
        "b": {"di": "02010100", "format": "XXX.X"},
    }
    assert "also read by 'a'" in problems(options(tags=tags))["tags.b.di"]


def test_unknown_url_scheme() -> None:
    found = problems(options(connection={"dlt645": {"port": "tcp://1.2.3.4:5"}}))
    assert "unknown URL scheme" in found["connection.dlt645.port"]
