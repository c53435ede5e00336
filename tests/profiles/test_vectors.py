"""`edge-agent profile test`: every profile's test vectors through its driver's decoder."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from agent.cli.app import app
from agent.cli.vectors import spec_for_protocol
from agent.paths import SHIPPED_PROFILES
from agent.site.profiles import load_profile
from drivers.base import DecodesVectors

runner = CliRunner()
SHIPPED = sorted(p.stem for p in SHIPPED_PROFILES.glob("*.yaml"))


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_profile_passes_its_vectors(name: str) -> None:
    result = runner.invoke(app, ["profile", "test", name])
    assert result.exit_code == 0, result.output
    profile = load_profile(name, [SHIPPED_PROFILES])
    spec: object = spec_for_protocol(str(profile.model.protocol["kind"]))
    if isinstance(spec, DecodesVectors):  # a driver that decodes has vectors to prove it
        assert profile.model.vectors, f"{name} has no vectors"
        assert result.output.count("PASS ") == len(profile.model.vectors), result.output
        assert "FAIL" not in result.output
    else:
        assert "no vectors: the opcua driver has nothing to decode" in result.output


def test_the_manual_example_of_the_sdm630_voltage() -> None:
    result = runner.invoke(app, ["profile", "test", "eastron-sdm630"])
    assert "PASS eastron-sdm630 vectors[0] l1_voltage_v registers 4366 3334 -> " in result.output


def _site_profile(tmp_path: Path, vectors: str) -> Path:
    folder = tmp_path / "profiles"
    folder.mkdir()
    (folder / "site-meter.yaml").write_text(
        "profile: site-meter\nversion: 1\n"
        "protocol: {kind: modbus, byte_order: CDAB}\n"
        "tags:\n"
        "  power_kw: {address: 0x10, type: int32, scale: 0.01, unit: kW}\n"
        "  running: {address: 0x20, function: coil}\n"
        f"vectors:\n{vectors}",
        encoding="utf-8",
    )
    return folder


def test_a_contractor_adds_vectors_to_a_sites_own_profile(tmp_path: Path) -> None:
    folder = _site_profile(
        tmp_path,
        "  - {tag: power_kw, registers: [0x3039, 0x0000], expect: 123.45}\n"  # CDAB: low word first
        "  - {tag: running, registers: [1], expect: true}\n",
    )
    result = runner.invoke(app, ["profile", "test", "site-meter", "--dir", str(folder)])
    assert result.exit_code == 0, result.output
    assert "site-meter: 2 of 2 vectors pass" in result.output


def test_a_wrong_expectation_fails_with_exit_1(tmp_path: Path) -> None:
    folder = _site_profile(
        tmp_path,
        "  - {tag: power_kw, registers: [0x0000, 0x3039], expect: 123.45}\n"  # words swapped
        "  - {tag: running, registers: [1], expect: true}\n",
    )
    result = runner.invoke(app, ["profile", "test", "site-meter", "--dir", str(folder)])
    assert result.exit_code == 1, result.output
    assert "FAIL site-meter vectors[0] power_kw registers 0000 3039 -> " in result.output
    assert "(expected 123.45)" in result.output
    assert "PASS site-meter vectors[1]" in result.output


@pytest.mark.parametrize(
    ("vector", "said"),
    [
        ("  - {tag: power_kw, registers: [0x3039], expect: 1}\n", "the vector gives 1"),
        ("  - {tag: nope, registers: [1], expect: 1}\n", "no tag 'nope'"),
        ("  - {tag: power_kw, line: 'x', expect: 1}\n", "give registers, not a line"),
        ("  - {tag: power_kw, registers: [70000], expect: 1}\n", "0..0xFFFF"),
    ],
)
def test_a_bad_vector_is_bad_input_exit_2(tmp_path: Path, vector: str, said: str) -> None:
    folder = _site_profile(tmp_path, vector)
    result = runner.invoke(app, ["profile", "test", "site-meter", "--dir", str(folder)])
    assert result.exit_code == 2, result.output
    assert said in result.output
