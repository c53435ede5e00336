"""The systemd unit: every hardening directive is there, and systemd accepts the file."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.support.tools import require

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "edge-agent.service"


def directives() -> dict[str, list[str]]:
    """``Key=`` -> every value given (DeviceAllow= repeats), comments skipped."""
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text(encoding="utf-8").splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


REQUIRED = {
    "Type": "notify",
    "ExecStart": "/opt/edge-agent/venv/bin/edge-agent run -c /etc/edge-agent/site.yaml",
    "WatchdogSec": "30",
    "Restart": "on-failure",
    "User": "edge-agent",
    "SupplementaryGroups": "dialout",
    "StateDirectory": "edge-agent",
    "ConfigurationDirectory": "edge-agent",
    "RuntimeDirectory": "edge-agent",
    "LoadCredential": "mqtt-password:/etc/edge-agent/mqtt-password",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "NoNewPrivileges": "yes",
    "PrivateTmp": "yes",
    "CapabilityBoundingSet": "",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    "SystemCallFilter": "@system-service",
    "DevicePolicy": "closed",
    "LockPersonality": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "RestrictRealtime": "yes",
}


@pytest.mark.parametrize(("key", "value"), sorted(REQUIRED.items()))
def test_directive(key: str, value: str) -> None:
    assert directives().get(key) == [value]


def test_serial_ports_allowed_and_memory_capped() -> None:
    found = directives()
    assert sorted(found["DeviceAllow"]) == ["char-ttyACM rw", "char-ttyS rw", "char-ttyUSB rw"]
    assert re.fullmatch(r"\d+[KMG]", found["MemoryMax"][0])


def test_every_setting_line_is_commented() -> None:
    lines = UNIT.read_text(encoding="utf-8").splitlines()
    service = lines.index("[Service]")
    for i in range(service + 1, len(lines)):
        line = lines[i]
        if line.startswith("["):
            break
        if "=" in line and not line.startswith("#"):
            before = lines[i - 1]
            assert before.startswith("#") or "=" in before, f"line {i + 1} has no comment: {line}"


def verifiable_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at a program that exists here."""
    text = UNIT.read_text(encoding="utf-8")
    copy = tmp_path / "edge-agent.service"
    copy.write_text(text.replace("/opt/edge-agent/venv/bin/edge-agent", "/bin/true"))
    return copy


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    done = subprocess.run(
        [require("systemd-analyze"), "verify", str(verifiable_copy(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Unknown" not in done.stderr, done.stderr


def test_systemd_analyze_security_exposure_is_low(tmp_path: Path) -> None:
    done = subprocess.run(
        [require("systemd-analyze"), "security", "--offline=yes", str(verifiable_copy(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout)
    assert match is not None, done.stdout + done.stderr
    assert float(match.group(1)) <= 3.0, done.stdout
