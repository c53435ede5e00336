"""Profiles in config/profiles and the register image built from them."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from simulators.profile_device import PROFILES_DIR, ProfileDevice, load_profile, profile_path

ALLOWED_TOP = {
    "profile", "version", "vendor", "model", "description", "source", "notes",
    "protocol", "poll_groups", "tags", "vectors",  # vectors: for profile test, not the device
    "machine",  # the agent's machine facts: not the simulator's business
    "compute",  # derived tags: computed by the agent, the device has no registers for them
}  # fmt: skip
TAG_KEYS = {
    "address", "function", "type", "bit", "length", "byte_order", "scale", "offset", "unit",
    "description", "group", "deadband", "heartbeat", "writable",
}  # fmt: skip
MINE = ["inovance-md500", "eastron-sdm630", "generic-counter"]


@pytest.mark.parametrize("name", MINE)
def test_profile_shape(name: str) -> None:
    path = profile_path(name)
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert set(data) <= ALLOWED_TOP
    assert data["profile"] == path.stem
    assert isinstance(data["version"], int)
    assert data["protocol"]["kind"] == "modbus"
    for tag, spec in data["tags"].items():
        assert set(spec) <= TAG_KEYS, tag
        assert spec["group"] in data["poll_groups"], tag
        assert spec["function"] in ("holding", "input", "coil", "discrete"), tag


def test_vfd_and_meter_profiles_have_a_useful_size() -> None:
    for name in ("inovance-md500", "eastron-sdm630"):
        assert 8 <= len(load_profile(profile_path(name))["tags"]) <= 20


def test_sdm630_values_are_float32_input_registers() -> None:
    tags = load_profile(PROFILES_DIR / "eastron-sdm630.yaml")["tags"]
    assert {(t["function"], t["type"]) for t in tags.values()} == {("input", "float32")}
    assert tags["l1_voltage_v"]["address"] == 0x0000
    assert tags["frequency_hz"]["address"] == 0x0046
    assert tags["import_energy_kwh"]["address"] == 0x0048


def test_md500_scaled_values_are_unscaled_into_registers() -> None:
    dev = ProfileDevice.from_file(profile_path("inovance-md500"))
    dev.update({"running_freq_hz": 50.0, "dc_bus_v": 540.3, "output_power_kw": -1.5})
    assert dev.registers["holding"][0x7000] == 5000
    assert dev.registers["holding"][0x7002] == 5403
    assert dev.registers["holding"][0x7005] == 0xFFF1  # -15 as int16


def test_unknown_values_are_ignored_and_unmapped_reads_refused() -> None:
    dev = ProfileDevice.from_file(profile_path("inovance-md500"))
    dev.update({"no_such_tag": 1.0})
    assert dev.read_registers("holding", 0x7000, 1) == [0]
    assert dev.read_registers("holding", 0x5000, 1) is None
    assert dev.read_registers("input", 0x7000, 1) is None


def test_small_holes_between_tags_are_readable() -> None:
    # 0x7007 and 0x7013 are tags; the 11 registers between them are served as zeros.
    dev = ProfileDevice.from_file(profile_path("inovance-md500"))
    assert dev.read_registers("holding", 0x7000, 0x14) == [0] * 0x14
    assert dev.read_registers("holding", 0x6FFF, 1) is None


def test_offset_bits_strings_and_extra_tags(tmp_path: Path) -> None:
    profile = tmp_path / "x.yaml"
    profile.write_text(
        "profile: x\nprotocol: {unit_id: 7, byte_order: CDAB}\ntags:\n"
        "  temp: {address: 0, type: int16, scale: 0.1, offset: -40}\n"
        "  flag_a: {address: 1, type: bool, bit: 0}\n"
        "  flag_b: {address: 1, type: bool, bit: 15}\n"
        "  name: {address: 2, type: string, length: 2}\n"
        "  total: {address: 4, type: uint32}\n"
        "  alarm: {address: 3, function: discrete}\n",
        encoding="utf-8",
    )
    dev = ProfileDevice.from_file(profile, extra_tags={"more": {"address": 8, "type": "uint16"}})
    dev.update({"temp": 21.5, "flag_a": True, "flag_b": True, "name": "AB", "total": 0x10002,
                "alarm": True, "more": 9})  # fmt: skip
    assert dev.unit_id == 7
    assert dev.read_registers("holding", 0, 6) == [615, 0x8001, 0x4142, 0, 0x0002, 0x0001]
    assert dev.read_bits("discrete", 3, 1) == [True]
    assert dev.read_registers("holding", 8, 1) == [9]
    dev.update({"flag_b": False})
    assert dev.read_registers("holding", 1, 1) == [0x0001]


def test_writes_only_where_tags_are_writable(tmp_path: Path) -> None:
    profile = tmp_path / "w.yaml"
    profile.write_text(
        "profile: w\ntags:\n  sp: {address: 5, type: uint16, writable: true}\n"
        "  ro: {address: 6, type: uint16}\n",
        encoding="utf-8",
    )
    dev = ProfileDevice.from_file(profile)
    assert dev.can_write("holding", 5, 1)
    assert not dev.can_write("holding", 5, 2)
    dev.write_registers(5, [77])
    assert dev.read_registers("holding", 5, 1) == [77]
