"""scripts/install.sh, uninstall.sh and download-wheels.sh, run for real into a throw-away root.

``--root`` prefixes every path and skips useradd and systemctl, so this runs
on any machine. pip needs the package index once per session (for the wheel
bundle and the install from the checkout); the upgrade then runs offline from
the bundle, as on a box without internet.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"

pytestmark = pytest.mark.slow


def sh(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        ["bash", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        # No PYTHONPATH: a checkout on it (with its egg-info) would make the new
        # venv's pip believe edge-agent is installed already, and skip it.
        env={
            **{k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
            "PYTHON": sys.executable,
        },
    )
    if check:
        assert done.returncode == 0, f"{args}:\n{done.stdout}\n{done.stderr}"
    return done


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An offline bundle, as download-wheels.sh writes it to a USB stick."""
    folder = tmp_path_factory.mktemp("usb") / "edge-agent"
    sh(SCRIPTS / "download-wheels.sh", folder)
    return folder


def test_bundle_holds_wheels_and_installer(bundle: Path) -> None:
    wheels = {p.name.split("-")[0].lower() for p in (bundle / "wheels").glob("*.whl")}
    assert {"edge_agent", "pymodbus", "paho_mqtt", "pydantic", "asyncua"} <= wheels
    assert (bundle / "scripts" / "install.sh").is_file()
    assert (bundle / "systemd" / "edge-agent.service").is_file()
    assert (bundle / "config" / "examples" / "edge-box.yaml").is_file()


def test_install_upgrade_uninstall(tmp_path: Path, bundle: Path) -> None:
    root = tmp_path / "root"
    sh(SCRIPTS / "install.sh", "--root", root)
    agent = root / "opt/edge-agent/venv/bin/edge-agent"
    etc, var = root / "etc/edge-agent", root / "var/lib/edge-agent"

    # the tree
    assert (
        "doctor"
        in subprocess.run(
            [agent, "--help"], capture_output=True, text=True, check=True, timeout=60
        ).stdout
    )
    assert (root / "usr/local/bin/edge-agent").resolve() == agent.resolve()
    assert (mode(etc), mode(etc / "site.yaml"), mode(etc / "mqtt-password")) == (
        0o750,
        0o640,
        0o600,
    )
    assert mode(var) == 0o750
    unit = root / "etc/systemd/system/edge-agent.service"
    assert unit.read_text() == (ROOT / "systemd/edge-agent.service").read_text()
    assert_profiles_shipped(agent, tmp_path)

    # re-run (offline, from the bundle): an upgrade that keeps config and buffer
    site = etc / "site.yaml"
    site.write_text(site.read_text().replace("change-me-box1", "line-a-box7"))
    (var / "buffer.db").write_bytes(b"pending batches")
    first = (root / "opt/edge-agent/venv").resolve()
    sh(bundle / "scripts/install.sh", "--root", root)
    assert "line-a-box7" in site.read_text()
    assert (var / "buffer.db").read_bytes() == b"pending batches"
    assert (root / "opt/edge-agent/venv").resolve() != first
    assert first.is_dir()  # the previous version stays for a rollback
    subprocess.run([agent, "--help"], capture_output=True, check=True, timeout=60)

    # uninstall keeps config and buffer; --purge removes them
    sh(SCRIPTS / "uninstall.sh", "--root", root)
    assert not (root / "opt/edge-agent").exists()
    assert not unit.exists()
    assert not (root / "usr/local/bin/edge-agent").is_symlink()
    assert "line-a-box7" in site.read_text()
    assert (var / "buffer.db").exists()
    sh(SCRIPTS / "uninstall.sh", "--root", root, "--purge")
    assert not var.exists()
    assert not etc.exists()


def assert_profiles_shipped(agent: Path, tmp_path: Path) -> None:
    """A site outside the checkout finds the shipped profiles."""
    site = tmp_path / "elsewhere" / "site.yaml"
    site.parent.mkdir()
    device = {
        "id": "c1",
        "profile": "generic-counter",
        "connection": {"modbus_tcp": {"host": "127.0.0.1"}},
    }
    site.write_text(yaml.safe_dump({"agent": {"id": "box"}, "devices": [device]}))
    done = subprocess.run(
        [agent, "validate", "-c", site], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr


def test_a_site_the_new_version_refuses_changes_nothing(tmp_path: Path, bundle: Path) -> None:
    root = tmp_path / "root"
    bad = tmp_path / "bad.yaml"
    bad.write_text("agent: {id: box}\nmqtt: {port: 99999}\n")
    done = sh(bundle / "scripts/install.sh", "--root", root, "--site", bad, check=False)
    assert done.returncode == 1
    assert "refuses" in done.stderr
    assert "mqtt.port" in done.stderr
    assert not (root / "opt/edge-agent/venv").exists()
    assert not list((root / "opt/edge-agent").glob("venv-*"))


def test_missing_wheels_fail_before_touching_anything(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    done = sh(SCRIPTS / "install.sh", "--root", tmp_path / "root", "--wheels", empty, check=False)
    assert done.returncode == 1
    assert "no edge_agent-*.whl" in done.stderr
    assert not (tmp_path / "root").exists()
