"""`edge-agent doctor` against real sockets, a real Mosquitto (plain, password, TLS) and a pty."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from agent.cli import doctor
from agent.cli.app import app
from tests.support.mosquitto import (
    Mosquitto,
    MosquittoTls,
    free_port,
    make_test_certs,
)
from tests.support.smalldisk import fill, fill_inodes, small_disk


@pytest.fixture(autouse=True)
def no_installed_unit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Checks that depend on an installed unit must not depend on this machine."""
    monkeypatch.setattr(doctor, "UNIT_FILE", tmp_path / "no-such-unit.service")


@pytest.fixture
def listening_port() -> Iterator[int]:
    """A TCP port that accepts connections (the kernel completes them from the backlog)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield server.getsockname()[1]


def write_site(tmp_path: Path, mqtt: dict[str, Any], devices: list[dict[str, Any]]) -> Path:
    site = {
        "agent": {"id": "doc-box", "data_dir": "data"},
        "mqtt": {"host": "127.0.0.1", **mqtt},
        "buffer": {"max_size": "10MB"},
        "devices": devices,
    }
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(site, sort_keys=False), encoding="utf-8")
    path.chmod(0o640)
    return path


def tcp_device(device_id: str, port: int) -> dict[str, Any]:
    return {
        "id": device_id,
        "profile": "generic-counter",
        "connection": {"modbus_tcp": {"host": "127.0.0.1", "port": port}},
    }


def rtu_device(device_id: str, port: str) -> dict[str, Any]:
    return {
        "id": device_id,
        "profile": "generic-counter",
        "connection": {"modbus_rtu": {"port": port}},
    }


def run(site: Path) -> tuple[int, dict[str, str]]:
    """Exit code and {check name: line} (the last line of each name)."""
    lines: list[str] = []
    code = doctor.run(site, 3.0, lines.append)
    by_name = {line[6:].split(":", 1)[0]: line for line in lines if line[:4].strip()}
    return code, by_name


def test_everything_reachable_passes(
    tmp_path: Path, mosquitto: Mosquitto, listening_port: int
) -> None:
    site = write_site(tmp_path, {"port": mosquitto.port}, [tcp_device("motor", listening_port)])
    code, lines = run(site)
    assert lines["config"].startswith("PASS")
    assert lines["device motor"].startswith("PASS"), lines
    assert lines["broker"].startswith("PASS"), lines
    assert lines["files"].startswith("PASS"), lines
    assert lines["data dir"].startswith("PASS"), lines
    assert lines["clock"][:4] in ("PASS", "WARN")
    assert code == 0


def test_closed_device_port_fails_and_others_still_checked(
    tmp_path: Path, mosquitto: Mosquitto, listening_port: int
) -> None:
    devices = [tcp_device("dead", free_port()), tcp_device("alive", listening_port)]
    site = write_site(tmp_path, {"port": mosquitto.port}, devices)
    code, lines = run(site)
    assert lines["device dead"].startswith("FAIL")
    assert "connection refused" in lines["device dead"]
    assert lines["device alive"].startswith("PASS")
    assert code == 1


def test_broker_not_running_fails(tmp_path: Path) -> None:
    site = write_site(tmp_path, {"port": free_port()}, [])
    code, lines = run(site)
    assert lines["broker"].startswith("FAIL")
    assert "connection refused" in lines["broker"]
    assert code == 1


def test_broker_credentials(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "broker", users={"box": "right-pw"})
    with broker:
        good = write_site(
            tmp_path, {"port": broker.port, "username": "box", "password": "right-pw"}, []
        )
        assert run(good)[1]["broker"].startswith("PASS")
        bad = write_site(
            tmp_path, {"port": broker.port, "username": "box", "password": "wrong-pw"}, []
        )
        code, lines = run(bad)
    assert lines["broker"].startswith("FAIL")
    assert "bad user name or password" in lines["broker"] or "not authorised" in lines["broker"]
    assert "wrong-pw" not in lines["broker"]
    assert code == 1


def test_broker_tls(tmp_path: Path) -> None:
    certs = make_test_certs(tmp_path / "certs")
    other = make_test_certs(tmp_path / "other-ca")
    tls = MosquittoTls(certs.ca, certs.server_cert, certs.server_key)
    with Mosquitto(tmp_path / "broker", tls=tls) as broker:
        ok = write_site(tmp_path, {"port": broker.port, "tls": {"ca": str(certs.ca)}}, [])
        assert run(ok)[1]["broker"].startswith("PASS")
        wrong = write_site(tmp_path, {"port": broker.port, "tls": {"ca": str(other.ca)}}, [])
        code, lines = run(wrong)
    assert lines["broker"].startswith("FAIL")
    assert "certificate" in lines["broker"]
    assert code == 1


def test_serial_ports(tmp_path: Path) -> None:
    controller, worker = os.openpty()
    try:
        devices = [rtu_device("on-pty", os.ttyname(worker)), rtu_device("gone", "/dev/ttyNONE9")]
        site = write_site(tmp_path, {"port": free_port()}, devices)
        _, lines = run(site)
    finally:
        os.close(controller)
        os.close(worker)
    assert lines["device on-pty"][:4] in ("PASS", "WARN")  # WARN: not a DeviceAllow'd name
    assert "opens" in lines["device on-pty"]
    assert lines["device gone"].startswith("FAIL")
    assert "does not exist" in lines["device gone"]


def test_world_readable_files_and_small_disk_warn(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    secret.chmod(0o644)
    site = write_site(tmp_path, {"port": free_port(), "password_file": str(secret)}, [])
    site.chmod(0o644)
    text = site.read_text().replace("10MB", "1000000GB")
    site.write_text(text)
    lines: list[str] = []
    doctor.run(site, 1.0, lines.append)
    files = [line for line in lines if " files: " in line]
    assert any(line.startswith("WARN") and "site.yaml" in line for line in files), files
    assert any(line.startswith("WARN") and "holds a secret" in line for line in files), files
    assert any(line.startswith("WARN  disk") for line in lines), lines
    assert all("s3cret" not in line for line in lines)


def test_invalid_site_exits_2_with_located_problems(tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    site.write_text("agent: {id: 'bad id'}\n")
    result = CliRunner().invoke(app, ["doctor", "-c", str(site)])
    assert result.exit_code == 2
    assert result.output.startswith("FAIL  config")
    assert "site.yaml:1" in result.output


def test_data_dir_the_installed_unit_cannot_write_warns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    unit = tmp_path / "edge-agent.service"
    unit.write_text("[Service]\n")
    monkeypatch.setattr(doctor, "UNIT_FILE", unit)
    lines: list[str] = []
    doctor.run(write_site(tmp_path, {"port": free_port()}, []), 1.0, lines.append)
    warned = [line for line in lines if line.startswith("WARN  data dir")]
    assert warned, lines
    assert "ProtectSystem=strict" in warned[0]


def test_full_disk_fails_and_says_what_the_agent_does(tmp_path: Path) -> None:
    site = write_site(tmp_path, {"port": free_port()}, [])
    with small_disk(tmp_path / "data", "1m") as disk:
        fill(disk)
        _, by_name = run(site)
    assert by_name["disk"].startswith("FAIL"), by_name
    assert "full" in by_name["disk"]
    assert "RAM" in by_name["disk"]


def test_disk_out_of_inodes_fails_with_bytes_free(tmp_path: Path) -> None:
    site = write_site(tmp_path, {"port": free_port()}, [])
    with small_disk(tmp_path / "data", "64m", inodes=16) as disk:
        fill_inodes(disk)
        _, by_name = run(site)
    assert by_name["disk"].startswith("FAIL"), by_name
    assert "inode" in by_name["disk"]
