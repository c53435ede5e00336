"""F13: fuzzed register blocks against the Modbus decoder, fuzzed configs against the loader.

Pass: encode-then-decode round-trips hold for every type and byte order; any
block with any layout decodes to values and per-tag errors, never an
exception; any site file, however broken, gives ``ConfigFileError`` (with
``file:line`` problems) and never another exception.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.site.loader import load_site
from agent.site.source import ConfigFileError
from drivers.modbus.decode import BYTE_ORDERS, TagLayout, decode_registers, decode_value
from simulators.encode import encode_number

NUMERIC = ["int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64"]
_FMT = {"int16": "h", "uint16": "H", "int32": "i", "uint32": "I", "int64": "q", "uint64": "Q",
        "float32": "f", "float64": "d"}  # fmt: skip
FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip


@st.composite
def typed_raw(draw: st.DrawFn) -> tuple[str, int | float]:
    type_name = draw(st.sampled_from(NUMERIC))
    size = struct.calcsize(_FMT[type_name])
    raw_bytes = draw(st.binary(min_size=size, max_size=size))
    (value,) = struct.unpack(">" + _FMT[type_name], raw_bytes)
    return type_name, value


@FUZZ
@given(typed=typed_raw(), order=st.sampled_from(BYTE_ORDERS))
def test_f13_encode_decode_round_trip(typed: tuple[str, int | float], order: str) -> None:
    type_name, raw = typed
    words = encode_number(raw, type_name, order) if not _is_nan(raw) else None
    if words is None:
        return  # NaN: not a value a device reports through the simulator's encoder
    got = decode_value(words, type_name, order)
    if type_name == "float32":  # reported as the shortest decimal with the same float32 bits
        assert isinstance(got, float)
        assert struct.pack(">f", got) == struct.pack(">f", raw)
    else:
        assert got == raw


def _is_nan(value: int | float) -> bool:
    return isinstance(value, float) and math.isnan(value)


layouts = st.lists(
    st.builds(
        TagLayout,
        name=st.text("abcxyz", min_size=1, max_size=4),
        index=st.integers(0, 40),
        type=st.sampled_from([*NUMERIC, "bool", "string"]),
        order=st.sampled_from(BYTE_ORDERS),
        bit=st.one_of(st.none(), st.integers(0, 15)),
        length=st.one_of(st.none(), st.integers(1, 10)),
        scale=st.sampled_from([1.0, 0.1, 0.01, 10.0, -1.0]),
        value_offset=st.sampled_from([0.0, -40.0, 273.15]),
    ),
    max_size=12,
)


@FUZZ
@given(registers=st.lists(st.integers(0, 0xFFFF), max_size=48), tags=layouts)
def test_f13_any_block_decodes_without_exception(
    registers: list[int], tags: list[TagLayout]
) -> None:
    unique = list({t.name: t for t in tags}.values())
    decoded = decode_registers(registers, unique)
    assert set(decoded.values).isdisjoint(decoded.errors)
    assert set(decoded.values) | set(decoded.errors) <= {t.name for t in unique}


KEYS = ["agent", "id", "mqtt", "host", "port", "buffer", "max_size", "devices", "profile",
        "connection", "modbus_tcp", "modbus_rtu", "opcua", "tags", "address", "type", "group",
        "poll_groups", "default", "unit_id", "timeout", "keepalive", "data_dir", "tls",
        "endpoint", "scale", "byte_order", "function", "enabled", "x"]  # fmt: skip
leaves = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(allow_nan=True),
    st.text(max_size=12), st.sampled_from(["1s", "10ms", "64MB", "generic-counter", "${NOPE}",
                                           "127.0.0.1", "uint16", "holding", "ABCD", "-1"]),
)  # fmt: skip
trees = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.sampled_from(KEYS), children, max_size=5),
    ),
    max_leaves=25,
)

VALID: dict[str, Any] = {
    "agent": {"id": "fuzz", "data_dir": "data"},
    "mqtt": {"host": "127.0.0.1", "port": 1883},
    "devices": [{"id": "c1", "profile": "generic-counter",
                 "connection": {"modbus_tcp": {"host": "127.0.0.1", "port": 502}}}],
}  # fmt: skip


def _expect_config_error(tmp_path: Path, text: str) -> None:
    site = tmp_path / "site.yaml"
    site.write_text(text, encoding="utf-8")
    error: ConfigFileError | None = None
    try:
        load_site(site, env={})
    except ConfigFileError as exc:  # the only exception type allowed out of the loader
        error = exc
    if error is not None:
        assert error.problems, "a ConfigFileError names at least one problem"
        assert all(str(p) for p in error.problems)


@FUZZ
@given(tree=trees)
def test_f13_random_site_files_only_raise_config_errors(tmp_path: Path, tree: Any) -> None:
    _expect_config_error(tmp_path, yaml.safe_dump(tree))


@FUZZ
@given(path=st.lists(st.sampled_from(KEYS), min_size=1, max_size=3), value=trees)
def test_f13_mutated_valid_site_only_raises_config_errors(
    tmp_path: Path, path: list[str], value: Any
) -> None:
    site = yaml.safe_load(yaml.safe_dump(VALID))
    node = site if path[0] != "devices" else site["devices"][0]
    for key in path[:-1]:
        child = node.get(key) if isinstance(node, dict) else None
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[path[-1]] = value
    _expect_config_error(tmp_path, yaml.safe_dump(site))


@FUZZ
@given(text=st.text(st.characters(codec="utf-8"), max_size=200))
def test_f13_random_text_only_raises_config_errors(tmp_path: Path, text: str) -> None:
    _expect_config_error(tmp_path, text)


def test_f13_control_character_is_a_located_config_error(tmp_path: Path) -> None:
    """Regression: a control character used to escape as yaml.reader.ReaderError."""
    site = tmp_path / "site.yaml"
    site.write_text("agent:\n  id: box\x1f\n", encoding="utf-8")
    try:
        load_site(site, env={})
    except ConfigFileError as exc:
        text = str(exc)
    else:
        raise AssertionError("a control character must be refused")
    assert "site.yaml:2" in text
    assert "U+001F" in text
