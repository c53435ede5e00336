"""A site loads each profile once, and the quick YAML path reads what the slow one reads."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from agent.site import source as src
from agent.site.loader import load_site
from agent.site.profiles import load_profile, profile_cache
from agent.site.source import ConfigFileError, loads
from drivers.modbus.driver import ModbusDriver

ROOT = Path(__file__).resolve().parents[3]
YAML_FILES = sorted([*ROOT.glob("config/**/*.yaml"), *ROOT.glob("tests/cases/config/*/*.yaml")])


@pytest.mark.parametrize("file", YAML_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_libyaml_path_gives_the_same_data_and_lines(file: Path) -> None:
    text = file.read_text(encoding="utf-8")
    env = {"GW_SECRET": "s"}
    try:
        slow = src._loads(text, file, env, yaml.SafeLoader)
    except ConfigFileError as exc:  # a bad file: the quick path steps aside, same problems
        assert src._loads_fast(text, file, env) is None
        wanted = [str(p) for p in exc.problems]
        with pytest.raises(ConfigFileError) as info:
            loads(text, file, env)
        assert [str(p) for p in info.value.problems] == wanted
        return
    fast = src._loads_fast(text, file, env)
    assert fast is not None
    assert fast.data == slow.data
    assert fast.lines == slow.lines
    assert fast.env_paths == slow.env_paths


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: 1\nb: [1, 2\n", "YAML syntax"),
        ("a: 1\na: 2\n", "duplicate key (first defined on line 1)"),
        ("a: \x07\n", "character U+0007 is not allowed in YAML"),
    ],
)
def test_bad_yaml_keeps_the_pure_python_message(text: str, message: str, tmp_path: Path) -> None:
    file = tmp_path / "site.yaml"
    with pytest.raises(ConfigFileError) as quick:
        loads(text, file, {})
    with pytest.raises(ConfigFileError) as slow:
        src._loads(text, file, {}, yaml.SafeLoader)
    assert [str(p) for p in quick.value.problems] == [str(p) for p in slow.value.problems]
    assert message in str(quick.value)


def _write_profile(folder: Path, name: str = "p") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "p.yaml").write_text(
        f"profile: {name}\nversion: 1\nprotocol: {{kind: modbus}}\n"
        "tags:\n  a: {address: 0, type: int16}\n",
        encoding="utf-8",
    )


def test_one_profile_is_loaded_once_within_a_cache(tmp_path: Path) -> None:
    _write_profile(tmp_path)
    with profile_cache():
        first = load_profile("p", [tmp_path])
        (tmp_path / "p.yaml").write_text("not: a profile\n", encoding="utf-8")
        assert load_profile("p", [tmp_path]) is first
    with pytest.raises(ConfigFileError):  # outside the block the file is read again
        load_profile("p", [tmp_path])


def test_a_bad_profile_is_reported_for_every_device_as_before(tmp_path: Path) -> None:
    _write_profile(tmp_path / "profiles", name="q")
    devices = "".join(
        f"  - {{id: d{i}, profile: p, connection: {{modbus_tcp: {{host: 127.0.0.1}}}}}}\n"
        for i in range(3)
    )
    site = tmp_path / "site.yaml"
    site.write_text(f"agent: {{id: box}}\nmqtt: {{host: h}}\ndevices:\n{devices}", "utf-8")
    with pytest.raises(ConfigFileError) as info:
        load_site(site, env={})
    lines = [str(p) for p in info.value.problems]
    assert len(lines) == 3
    assert len(set(lines)) == 1
    assert "p.yaml:1: profile: 'q' does not match the file name 'p'" in lines[0]


def test_devices_of_one_profile_share_their_parsed_tags(tmp_path: Path) -> None:
    _write_profile(tmp_path / "profiles")
    devices = "".join(
        f"  - {{id: d{i}, profile: p, connection: {{modbus_tcp: {{host: 127.0.0.1}}}}}}\n"
        for i in range(2)
    )
    changed = "    tags: {a: {scale: 2}}\n"
    site = tmp_path / "site.yaml"
    site.write_text(
        f"agent: {{id: box}}\nmqtt: {{host: h}}\ndevices:\n{devices}"
        f"  - {{id: d2, profile: p, connection: {{modbus_tcp: {{host: 127.0.0.1}}}}}}\n",
        "utf-8",
    )
    first, second, third = (d.options.tags["a"] for d in load_site(site, env={}).devices)
    assert first is second
    assert third is second  # the same body parses once
    site.write_text(
        f"agent: {{id: box}}\nmqtt: {{host: h}}\ndevices:\n{devices}"
        f"  - id: d2\n    profile: p\n    connection: {{modbus_tcp: {{host: 127.0.0.1}}}}\n"
        f"{changed}",
        "utf-8",
    )
    *_, last = load_site(site, env={}).devices
    scaled = last.options.tags["a"]
    assert getattr(scaled, "scale", None) == 2
    assert scaled is not first


def test_devices_with_equal_tags_share_plans_and_decoders(tmp_path: Path) -> None:
    _write_profile(tmp_path / "profiles")
    site = tmp_path / "site.yaml"
    site.write_text(
        "agent: {id: box}\nmqtt: {host: h}\ndevices:\n"
        "  - {id: d0, profile: p, connection: {modbus_tcp: {host: 127.0.0.1}}}\n"
        "  - {id: d1, profile: p, connection: {modbus_tcp: {host: 127.0.0.2}}}\n"
        "  - {id: d2, profile: p, connection: {modbus_tcp: {host: 127.0.0.1}},"
        " protocol: {byte_order: DCBA}}\n",
        "utf-8",
    )
    devices = load_site(site, env={}).devices
    one, two, other = (d.spec.create(d.id, d.options) for d in devices)
    assert isinstance(one, ModbusDriver)
    assert isinstance(two, ModbusDriver)
    assert isinstance(other, ModbusDriver)
    assert one.plans is two.plans
    assert other.plans is not one.plans  # another byte order: other layouts
    assert other.plans["default"][0].layouts[0].order == "DCBA"
