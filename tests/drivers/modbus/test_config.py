"""Config cases of the Modbus driver: every problem, located, with its exact message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from drivers.base import ConfigError
from drivers.modbus import SPEC, ModbusOptions
from drivers.modbus.config import RtuConnection, TcpConnection

TCP = {"modbus_tcp": {"host": "plc.local"}}
SAMPLE = Path(__file__).resolve().parents[3] / "drivers" / "modbus" / "sample.yaml"


def problems(options: dict[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
    with pytest.raises(ConfigError) as info:
        SPEC.parse(options)
    return [(p.loc, p.message) for p in info.value.problems]


def with_tags(**tags: dict[str, Any]) -> dict[str, Any]:
    return {"connection": TCP, "tags": tags}


CASES = [
    pytest.param(
        {"connection": TCP, "tags": {}, "extra": 1},
        [(("extra",), "unknown key")],
        id="unknown top-level key",
    ),
    pytest.param({"tags": {}}, [(("connection",), "is required")], id="missing connection"),
    pytest.param({"connection": TCP}, [(("tags",), "is required")], id="missing tags"),
    pytest.param(
        {"connection": TCP, "tags": ["a"]},
        [(("tags",), "must be a mapping of tag name to tag")],
        id="tags not a mapping",
    ),
    pytest.param(
        {"connection": {}, "tags": {}},
        [(("connection",), "give exactly one of modbus_tcp or modbus_rtu")],
        id="no connection kind",
    ),
    pytest.param(
        {
            "connection": {"modbus_tcp": {"host": "a"}, "modbus_rtu": {"port": "/dev/ttyUSB0"}},
            "tags": {},
        },
        [(("connection",), "give exactly one of modbus_tcp or modbus_rtu")],
        id="two connection kinds",
    ),
    pytest.param(
        {"connection": {"modbus_tpc": {"host": "a"}}, "tags": {}},
        [
            (("connection",), "give exactly one of modbus_tcp or modbus_rtu"),
            (("connection", "modbus_tpc"), "unknown key"),
        ],
        id="misspelt connection kind",
    ),
    pytest.param(
        {"connection": {"modbus_tcp": {"host": "a", "port": 70000, "timeout": "soon"}}, "tags": {}},
        [
            (
                ("connection", "modbus_tcp", "port"),
                "70000: Input should be less than or equal to 65535",
            ),
            (
                ("connection", "modbus_tcp", "timeout"),
                "'soon': expected a duration such as 500ms, 1s, 2m",
            ),
        ],
        id="bad tcp port and timeout",
    ),
    pytest.param(
        {
            "connection": {"modbus_rtu": {"port": "/dev/ttyUSB0", "parity": "X", "stop_bits": 3}},
            "tags": {},
        },
        [
            (("connection", "modbus_rtu", "parity"), "'X': Input should be 'N', 'E' or 'O'"),
            (("connection", "modbus_rtu", "stop_bits"), "3: Input should be 1 or 2"),
        ],
        id="bad serial settings",
    ),
    pytest.param(
        {
            "connection": TCP,
            "protocol": {"kind": "opcua", "unit_id": 300, "max_gap": -1},
            "tags": {},
        },
        [
            (("protocol", "kind"), "'opcua': Input should be 'modbus'"),
            (("protocol", "unit_id"), "300: Input should be less than or equal to 247"),
            (("protocol", "max_gap"), "-1: Input should be greater than or equal to 0"),
        ],
        id="bad protocol options",
    ),
    pytest.param(
        {"connection": TCP, "protocol": {"max_registers": 126, "bytes": "ABCD"}, "tags": {}},
        [
            (("protocol", "max_registers"), "126: Input should be less than or equal to 125"),
            (("protocol", "bytes"), "unknown key"),
        ],
        id="max_registers above the protocol limit",
    ),
    pytest.param(
        with_tags(t={"adress": 5}),
        [(("tags", "t", "address"), "is required"), (("tags", "t", "adress"), "unknown key")],
        id="unknown tag key",
    ),
    pytest.param(
        with_tags(t={"address": 70000}),
        [(("tags", "t", "address"), "70000: Input should be less than or equal to 65535")],
        id="address above 65535",
    ),
    pytest.param(
        with_tags(t={"address": True}),
        [(("tags", "t", "address"), "True: Input should be a valid integer")],
        id="address must be an integer",
    ),
    pytest.param(
        with_tags(t={"address": 65535, "type": "uint32"}),
        [
            (
                ("tags", "t", "address"),
                "uint32 at 0xffff needs 2 registers and would end at 0x10000, "
                "past the last address 0xffff",
            )
        ],
        id="value runs past the last address",
    ),
    pytest.param(
        with_tags(t={"address": 1, "function": "coil", "type": "uint16"}),
        [(("tags", "t", "type"), "a coil is one bit: type must be bool, not uint16")],
        id="coil must be bool",
    ),
    pytest.param(
        with_tags(t={"address": 1, "function": "discrete", "bit": 3}),
        [(("tags", "t", "bit"), "bit is only valid with type bool on holding or input registers")],
        id="bit on a discrete input",
    ),
    pytest.param(
        with_tags(t={"address": 1, "type": "uint16", "bit": 3}),
        [(("tags", "t", "bit"), "bit is only valid with type bool on holding or input registers")],
        id="bit on a uint16",
    ),
    pytest.param(
        with_tags(t={"address": 1, "function": "input", "type": "bool"}),
        [(("tags", "t", "bit"), "type bool on input registers needs bit (0-15)")],
        id="bool register without bit",
    ),
    pytest.param(
        with_tags(t={"address": 1, "type": "bool", "bit": 16}),
        [(("tags", "t", "bit"), "16: Input should be less than or equal to 15")],
        id="bit above 15",
    ),
    pytest.param(
        with_tags(t={"address": 1, "type": "string"}),
        [(("tags", "t", "length"), "is required for type string")],
        id="string without length",
    ),
    pytest.param(
        with_tags(t={"address": 1, "type": "uint32", "length": 2}),
        [(("tags", "t", "length"), "length is only valid with type string")],
        id="length without string",
    ),
    pytest.param(
        with_tags(t={"address": 1, "scale": 0}),
        [(("tags", "t", "scale"), "cannot be 0 (every value would read 0)")],
        id="scale 0",
    ),
    pytest.param(
        with_tags(t={"address": 1, "byte_order": "abcd"}),
        [(("tags", "t", "byte_order"), "'abcd': Input should be 'ABCD', 'BADC', 'CDAB' or 'DCBA'")],
        id="byte order is case sensitive",
    ),
    pytest.param(
        with_tags(a={"address": 0x7000, "type": "uint32"}, b={"address": 0x7001}),
        [(("tags", "b", "address"), "overlaps tag 'a' (holding 0x7000-0x7001)")],
        id="overlapping registers",
    ),
    pytest.param(
        with_tags(
            s={"address": 0x10, "type": "string", "length": 4},
            d={"address": 0x12, "type": "float64"},
        ),
        [(("tags", "d", "address"), "overlaps tag 's' (holding 0x0010-0x0013)")],
        id="overlap with a string",
    ),
    pytest.param(
        with_tags(word={"address": 0x3000}, signed={"address": 0x3000, "type": "int16"}),
        [(("tags", "word", "address"), "overlaps tag 'signed' (holding 0x3000)")],
        id="one register read as two whole values",
    ),
    pytest.param(
        with_tags(
            a={"address": 0x7000, "type": "uint32"}, b={"address": 0x7000, "type": "float32"}
        ),
        [(("tags", "b", "address"), "overlaps tag 'a' (holding 0x7000-0x7001)")],
        id="two multi-register tags of different types on the same registers",
    ),
    pytest.param(
        with_tags(t={"address": 1, "type": "string", "length": 2, "invalid": [0]}),
        [(("tags", "t", "invalid"), "is only valid with numeric types, not string")],
        id="invalid on a string",
    ),
    pytest.param(
        with_tags(t={"address": 1, "type": "bool", "bit": 0, "invalid": [1]}),
        [(("tags", "t", "invalid"), "is only valid with numeric types, not bool")],
        id="invalid on a bit",
    ),
    pytest.param(
        with_tags(t={"address": 1, "invalid": [0xFFFF, 0x10000, -0x8001]}),
        [
            (("tags", "t", "invalid", 1), "65536 does not fit in uint16 (16 bits)"),
            (("tags", "t", "invalid", 2), "-32769 does not fit in uint16 (16 bits)"),
        ],
        id="invalid value wider than the tag",
    ),
    pytest.param(
        {
            "connection": TCP,
            "protocol": {"invalid": {"int32": [0x80000000, 2**32]}},
            "tags": {},
        },
        [(("protocol", "invalid", "int32", 1), "4294967296 does not fit in int32 (32 bits)")],
        id="device-wide invalid value wider than its type",
    ),
    pytest.param(
        with_tags(t={"address": 1, "strip": False}),
        [(("tags", "t", "strip"), "is only valid with type string")],
        id="strip without string",
    ),
    pytest.param(
        with_tags(a={"address": 5, "function": "coil"}, b={"address": 5, "function": "coil"}),
        [(("tags", "b", "address"), "overlaps tag 'a' (coil 0x0005)")],
        id="same coil twice",
    ),
    pytest.param(
        {
            "connection": TCP,
            "protocol": {"max_registers": 10},
            "tags": {"sn": {"address": 0, "type": "string", "length": 20}},
        },
        [
            (
                ("tags", "sn", "length"),
                "needs 20 registers, more than protocol.max_registers (10) allows in one request",
            )
        ],
        id="tag wider than max_registers",
    ),
    pytest.param(
        {
            "connection": {"modbus_tcp": {}},
            "protocol": {"unit_id": -1},
            "tags": {
                "a": {"address": 1, "function": "coil", "type": "int16"},
                "b": {"address": 2, "type": "string"},
                "c": {"address": 3, "colour": "red"},
            },
        },
        [
            (("connection", "modbus_tcp", "host"), "is required"),
            (("protocol", "unit_id"), "-1: Input should be greater than or equal to 0"),
            (("tags", "c", "colour"), "unknown key"),
            (("tags", "a", "type"), "a coil is one bit: type must be bool, not int16"),
            (("tags", "b", "length"), "is required for type string"),
        ],
        id="every problem at once",
    ),
]


@pytest.mark.parametrize(("options", "expected"), CASES)
def test_config_problems(options: dict[str, Any], expected: list[object]) -> None:
    assert problems(options) == expected


def test_config_error_text_names_each_place() -> None:
    with pytest.raises(ConfigError) as info:
        SPEC.parse(with_tags(t={"address": 1, "type": "string"}))
    assert str(info.value) == "tags.t.length: is required for type string"


def test_valid_options_and_defaults() -> None:
    options = SPEC.parse(
        {
            "connection": {"modbus_tcp": {"host": "plc.local", "timeout": "500ms"}},
            "tags": {
                "freq": {"address": 0x7000, "scale": 0.01},
                "pump": {"address": 4, "function": "coil"},
                "b0": {"address": 0x3000, "type": "bool", "bit": 0},
                "b1": {"address": 0x3000, "type": "bool", "bit": 1},
                "same_address_other_space": {"address": 0x7000, "function": "input"},
            },
        }
    )
    assert isinstance(options, ModbusOptions)
    tcp = options.connection.settings
    assert isinstance(tcp, TcpConnection)
    assert (tcp.port, tcp.timeout, tcp.connect_timeout) == (502, 0.5, 3.0)
    proto = options.protocol
    assert (proto.unit_id, proto.byte_order, proto.max_registers, proto.max_bits) == (
        1,
        "ABCD",
        125,
        2000,
    )
    assert (proto.max_gap, proto.inter_request_delay) == (10, 0.0)
    assert options.tags["freq"].type == "uint16"
    assert options.tags["pump"].type == "bool"
    assert options.tags["freq"].group == "default"


def test_a_whole_register_and_its_bits_are_allowed_together() -> None:
    options = SPEC.parse(
        with_tags(
            status_word={"address": 0x7010},
            ready={"address": 0x7010, "type": "bool", "bit": 0},
            running={"address": 0x7010, "type": "bool", "bit": 1},
            fault={"address": 0x7010, "type": "bool", "bit": 3},
            status32={"address": 0x7020, "type": "uint32"},
            alarm={"address": 0x7021, "type": "bool", "bit": 15},  # a bit of its low word
        )
    )
    assert len(options.tags) == 6


def test_invalid_values_are_inherited_by_type_and_overridden_per_tag() -> None:
    options = SPEC.parse(
        {
            "connection": TCP,
            "protocol": {"invalid": {"uint16": [0xFFFF], "int16": [-32768, 0x7FFF]}},
            "tags": {
                "u": {"address": 1},
                "s": {"address": 2, "type": "int16"},
                "own": {"address": 3, "invalid": [0xFFFE]},
                "none": {"address": 4, "invalid": []},
                "wide": {"address": 5, "type": "uint32"},
                "text": {"address": 8, "type": "string", "length": 2},
            },
        }
    )
    got = {name: options.invalid_of(tag) for name, tag in options.tags.items()}
    # raw values as unsigned integers of the tag's width: -32768 is 0x8000
    assert got == {
        "u": (0xFFFF,),
        "s": (0x8000, 0x7FFF),
        "own": (0xFFFE,),
        "none": (),
        "wide": (),
        "text": (),
    }


def test_strip_defaults_to_true() -> None:
    options = SPEC.parse(with_tags(t={"address": 1, "type": "string", "length": 2}))
    assert options.tags["t"].strip is True


def test_rtu_defaults() -> None:
    options = SPEC.parse({"connection": {"modbus_rtu": {"port": "/dev/ttyUSB0"}}, "tags": {}})
    rtu = options.connection.settings
    assert isinstance(rtu, RtuConnection)
    assert (rtu.baud, rtu.parity, rtu.stop_bits, rtu.byte_size, rtu.timeout) == (
        9600,
        "N",
        1,
        8,
        1.0,
    )


def test_sample_yaml_is_valid_and_shows_every_option() -> None:
    raw = yaml.safe_load(SAMPLE.read_text(encoding="utf-8"))
    options = SPEC.parse(raw)
    assert options.protocol.model_dump().keys() == raw["protocol"].keys()
    assert options.connection.modbus_tcp is not None
    assert set(TcpConnection.model_fields) == set(raw["connection"]["modbus_tcp"])
    # The serial form is commented out in the sample; every one of its options is shown there.
    text = SAMPLE.read_text(encoding="utf-8")
    for key in RtuConnection.model_fields:
        assert f"#   {key}:" in text, key
    assert options.tags["energy_kwh"].byte_order == "CDAB"
    assert options.order_of(options.tags["running_freq_hz"]) == "ABCD"
    tag_keys = {key for tag in raw["tags"].values() for key in tag}
    assert tag_keys >= {
        "address",
        "function",
        "type",
        "bit",
        "length",
        "byte_order",
        "scale",
        "offset",
        "strip",
        "invalid",
    }


def test_spec_create_builds_a_driver_without_io() -> None:
    options = SPEC.parse(yaml.safe_load(SAMPLE.read_text(encoding="utf-8")))
    driver = SPEC.create("motor-01", options)
    assert driver.device_id == "motor-01"
    assert SPEC.protocol == "modbus"


def test_a_profile_level_invalid_list_reaches_every_tag_of_its_type(tmp_path: Path) -> None:
    from agent.site.loader import load_site

    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "meter.yaml").write_text(
        "profile: meter\nversion: 1\n"
        "protocol: {kind: modbus, invalid: {int16: [0x8000], uint32: [0xFFFFFFFF]}}\n"
        "tags:\n"
        "  p: {address: 0, type: int16}\n"
        "  e: {address: 2, type: uint32}\n"
        "  q: {address: 4, type: int16}\n",
        encoding="utf-8",
    )
    site = tmp_path / "site.yaml"
    site.write_text(
        "agent: {id: s}\nprofiles: [profiles]\ndevices:\n  - id: m\n    profile: meter\n"
        "    connection: {modbus_tcp: {host: 127.0.0.1}}\n"
        "    tags: {q: {invalid: []}}\n",
        encoding="utf-8",
    )
    options = load_site(site, env={}).device("m").options
    assert isinstance(options, ModbusOptions)
    got = {name: options.invalid_of(tag) for name, tag in options.tags.items()}
    assert got == {"p": (0x8000,), "e": (0xFFFFFFFF,), "q": ()}
