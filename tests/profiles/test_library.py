"""The profile library (extends, params, pins) and the copy-a-site commands, end to end."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from agent.cli.app import app
from agent.paths import SHIPPED_PROFILES
from agent.site.loader import load_site
from agent.site.params import ParamError, evaluate, substitute
from agent.site.profiles import load_profile

ROOT = Path(__file__).resolve().parent.parent.parent
SAMPLE = ROOT / "config" / "examples" / "garden-tools.yaml"
CASES = ROOT / "tests" / "cases" / "config"
runner = CliRunner()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("${param.a}", 10),
        ("${param.a * 0.01}", 0.1),
        ("${-(param.a + 2) / 4}", -3.0),
        ("rated ${param.a} A", "rated 10 A"),
        ("${param.name}", "md"),
        (0.5, 0.5),
    ],
)
def test_substitute(text: object, expected: object) -> None:
    assert substitute(text, {"a": 10, "name": "md"}) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("__import__('os')", "only param.NAME"),
        ("param.a ** 2", "only param.NAME"),
        ("os.a", "only param.NAME may be referenced"),
        ("param.b", "unknown parameter 'b'"),
        ("param.a / 0", "division by zero"),
        ("param.name * 2", "arithmetic needs numbers"),
        ("param.a +", "cannot parse"),
    ],
)
def test_expression_errors(text: str, message: str) -> None:
    with pytest.raises(ParamError, match=message.replace("*", r"\*")):
        evaluate(text, {"a": 10, "name": "md"})


def test_extends_merges_and_hashes_the_chain(tmp_path: Path) -> None:
    folder = CASES / "profile-extends-params" / "profiles"
    child = load_profile("series-s2", [folder])
    assert child.chain == ("series-s2", "family")
    assert child.model.vendor == "Example"  # inherited
    assert child.model.params == {"rated_current_a": 10, "current_scale": 0.1}
    assert child.model.poll_groups == {"fast": 0.5}
    assert child.model.protocol == {"kind": "modbus", "max_registers": 16}
    assert set(child.model.tags) == {"freq_hz", "current_a", "power_kw"}
    assert child.model.tags["freq_hz"] == {"address": 0x10, "scale": 0.1, "group": "fast"}
    # a change in the base changes the child's hash
    copy = tmp_path / "profiles"
    copy.mkdir()
    for p in folder.iterdir():
        (copy / p.name).write_text(p.read_text(encoding="utf-8"), encoding="utf-8")
    before = load_profile("series-s2", [copy]).sha256
    base = copy / "family.yaml"
    base.write_text(base.read_text(encoding="utf-8") + "# changed\n", encoding="utf-8")
    assert load_profile("series-s2", [copy]).sha256 != before


def test_site_params_reach_the_driver() -> None:
    site = load_site(CASES / "profile-extends-params" / "site.yaml", env={})
    device = site.device("d1")
    current = device.options.tags["current_a"]
    assert current.scale == pytest.approx(0.1)  # type: ignore[attr-defined]
    assert current.deadband == pytest.approx(0.32)
    assert "legacy" not in device.options.tags
    assert "param rated_current_a: 10 -> 32" in device.changes


def test_pin_matching_the_current_hash_is_accepted(tmp_path: Path) -> None:
    short = load_profile("inovance-md500", [SHIPPED_PROFILES]).short_hash
    site = tmp_path / "site.yaml"
    site.write_text(
        "agent: {id: b}\ndevices:\n  - id: m\n"
        f"    profile: inovance-md500@{short}\n"
        "    connection: {modbus_tcp: {host: 127.0.0.1}}\n",
        encoding="utf-8",
    )
    assert load_site(site, env={}).device("m").profile_hash == short


def test_profile_list_show_diff() -> None:
    listed = runner.invoke(app, ["profile", "list"])
    assert listed.exit_code == 0, listed.output
    row = next(line for line in listed.output.splitlines() if line.startswith("invt-gd20 "))
    gd20 = load_profile("invt-gd20", [SHIPPED_PROFILES])
    assert gd20.short_hash in row
    assert " 14 " in row
    shown = runner.invoke(app, ["profile", "show", "delta-ms300"])
    assert shown.exit_code == 0, shown.output
    data = yaml.safe_load(shown.output)
    assert data["extends"] == "delta-c2000"
    assert data["tags"]["output_current_a"]["scale"] == 0.01  # param default filled in
    assert "[C]" in data["notes"]
    assert "address: 0x2104" in shown.output
    diffed = runner.invoke(app, ["profile", "diff", "delta-c2000", "delta-ms300"])
    assert diffed.exit_code == 0
    assert "(no differences)" in diffed.output  # same map, other metadata
    folder = CASES / "profile-extends-params" / "profiles"
    diffed = runner.invoke(
        app, ["profile", "diff", str(folder / "family.yaml"), str(folder / "series-s2.yaml")]
    )
    out = diffed.output.splitlines()
    assert "tag legacy removed" in out
    assert "tag power_kw added: {address: 0x0013, type: int16, scale: 0.1}" in out
    assert "tag freq_hz: scale 0.01 -> 0.1" in out
    assert "params: current_scale 0.01 -> 0.1" in out
    missing = runner.invoke(app, ["profile", "show", "no-such-profile"])
    assert missing.exit_code == 2


def test_config_show_masks_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site.yaml"
    site.write_text(
        "agent: {id: b}\nmqtt: {username: u, password: '${PW}'}\n"
        "devices:\n  - id: m\n    profile: invt-gd20\n    params: {rated_current_a: 32}\n"
        "    connection: {modbus_tcp: {host: 127.0.0.1}}\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("PW", "hunter2-secret")
    result = runner.invoke(app, ["config", "show", "-c", str(site)])
    assert result.exit_code == 0, result.output
    assert "hunter2" not in result.output
    data = yaml.safe_load(result.output)
    assert data["mqtt"]["password"] == "***"
    device = data["devices"][0]
    assert device["profile"].startswith("invt-gd20@")
    assert device["tags"]["output_current_a"]["deadband"] == pytest.approx(0.32)


def test_validate_lists_every_override(tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    site.write_text(
        "agent: {id: b}\ndevices:\n  - id: m\n    profile: inovance-md500\n"
        "    connection: {modbus_tcp: {host: 127.0.0.1}}\n    unit_id: 3\n"
        "    poll_groups: {fast: 500ms}\n    drop_tags: [di_state]\n"
        "    tags:\n      output_current_a: {deadband: 0.2, scale: 0.1}\n"
        "      motor_temp_c: {address: 0x7010, type: int16, unit: C}\n",
        encoding="utf-8",
    )
    result = runner.invoke(app, ["validate", "-c", str(site)])
    assert result.exit_code == 0, result.output
    for line in (
        "override: protocol unit_id: 1 -> 3",
        "override: poll group fast: 1s -> 0.5s",
        "override: tag output_current_a: deadband 0.1 -> 0.2",
        "override: tag output_current_a: scale 0.01 -> 0.1",
        "override: tag motor_temp_c added: {address: 0x7010, type: int16, unit: C}",
        "override: tag di_state dropped",
    ):
        assert line in result.output, result.output


def test_init_non_interactive(tmp_path: Path) -> None:
    out = tmp_path / "new.yaml"
    args = ["init", "--from", str(SAMPLE), "--site", "yk-017-box1", "-o", str(out), "--yes"]
    args += ["--set", "devices.press-motor-1.host=10.0.0.5", "--set", "devices.main-meter.port=502"]
    args += ["--broker", "mqtt.example.net:8883", "--username", "yk-017"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "valid: agent yk-017-box1" in result.output
    text = out.read_text(encoding="utf-8")
    assert "# X: a noisier motor at this site" in text  # comments survive
    assert "password: ${MQTT_PASSWORD}" in text
    site = load_site(out, env={"MQTT_PASSWORD": "x"})
    assert site.mqtt.host == "mqtt.example.net"
    assert site.mqtt.port == 8883
    assert site.device("press-motor-1").options.connection.modbus_tcp.host == "10.0.0.5"  # type: ignore[attr-defined]
    assert site.device("main-meter").options.connection.modbus_tcp.port == 502  # type: ignore[attr-defined]
    assert [d.id for d in site.devices] == [d.id for d in load_site(SAMPLE, env={}).devices]
    again = runner.invoke(app, args)
    assert again.exit_code == 2  # never overwrites without --force
    same = runner.invoke(
        app, ["init", "--from", str(SAMPLE), "-o", str(tmp_path / "x.yaml"), "--yes"]
    )
    assert same.exit_code == 2
    assert "--site" in same.output


def test_init_interactive(tmp_path: Path) -> None:
    out = tmp_path / "new.yaml"
    sample = load_site(SAMPLE, env={})
    answers = ["thermos-004-box1", "broker.example.net:1883", "thermos-004", "TH_PW"]
    # one address per device, in file order; keep the rest (empty answer = default)
    answers += ["10.1.0.21:502", ""] + [""] * (len(sample.devices) - 2)
    result = runner.invoke(
        app, ["init", "--from", str(SAMPLE), "-o", str(out)], input="\n".join(answers) + "\n"
    )
    assert result.exit_code == 0, result.output
    site = load_site(out, env={"TH_PW": "pw"})
    assert site.agent.id == "thermos-004-box1"
    assert (site.mqtt.host, site.mqtt.port, site.mqtt.username) == (
        "broker.example.net",
        1883,
        "thermos-004",
    )
    assert site.mqtt_password == "pw"
    first = site.devices[0].options.connection.modbus_tcp  # type: ignore[attr-defined]
    assert (first.host, first.port) == ("10.1.0.21", 502)
    second = sample.devices[1].options.connection.modbus_tcp  # type: ignore[attr-defined]
    assert site.devices[1].options.connection.modbus_tcp.port == second.port  # type: ignore[attr-defined]
