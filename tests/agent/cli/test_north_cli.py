"""``validate`` and ``doctor`` on sites with ``north:`` destinations (a real Mosquitto)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from agent.cli import doctor
from agent.cli.app import app
from tests.support.mosquitto import Mosquitto, free_port

DEVICES: list[dict[str, Any]] = []


@pytest.fixture(autouse=True)
def no_installed_unit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Checks that depend on an installed unit must not depend on this machine."""
    monkeypatch.setattr(doctor, "UNIT_FILE", tmp_path / "no-such-unit.service")


@pytest.fixture
def listening_port() -> Iterator[int]:
    """A TCP port that accepts connections but speaks no MQTT."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield server.getsockname()[1]


def write_site(tmp_path: Path, north: list[dict[str, Any]], **top: Any) -> Path:
    site = {
        "agent": {"id": "doc-box", "data_dir": "data"},
        **top,
        "north": north,
        "buffer": {"max_size": "10MB"},
        "devices": DEVICES,
    }
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(site, sort_keys=False), encoding="utf-8")
    path.chmod(0o640)
    return path


def spark(dest_id: str, port: int) -> dict[str, Any]:
    return {
        "id": dest_id,
        "dialect": "sparkplug-b",
        "host": "127.0.0.1",
        "port": port,
        "sparkplug": {"group_id": "plants", "edge_node_id": dest_id},
    }


def run_doctor(site: Path) -> tuple[int, dict[str, str]]:
    lines: list[str] = []
    code = doctor.run(site, 3.0, lines.append)
    return code, {line[6:].split(":", 1)[0]: line for line in lines if line[:4].strip()}


def test_validate_lists_the_destinations(tmp_path: Path) -> None:
    site = write_site(tmp_path, [spark("county", 8883)], mqtt={"host": "own.example"})
    result = CliRunner().invoke(app, ["validate", "-c", str(site)])
    assert result.exit_code == 0, result.output
    assert "0 devices, 0 tags, 2 destinations" in result.output
    assert "  destination mqtt: edge-json, broker own.example:1883\n" in result.output
    assert (
        "  destination county: sparkplug-b, broker 127.0.0.1:8883, edge node plants/county\n"
        in result.output
    )


def test_validate_reports_north_problems_at_their_line(tmp_path: Path) -> None:
    bad = {**spark("county", 1883), "alink": {"product_key": "p", "device_name": "d"}}
    site = write_site(tmp_path, [bad, spark("county", 1884)])
    result = CliRunner().invoke(app, ["validate", "-c", str(site)])
    assert result.exit_code == 2
    assert f"{site}:" in result.output
    assert (
        "north[0].alink: an alink block on a sparkplug-b destination: sparkplug-b takes a "
        "sparkplug block; remove alink, or set dialect: alink" in result.output
    )
    assert "north[1].id: duplicate destination id 'county' (also north[0])" in result.output
    assert "2 problems, nothing was started" in result.output


def test_doctor_checks_each_destination_by_id(tmp_path: Path, mosquitto: Mosquitto) -> None:
    dead = free_port()
    site = write_site(tmp_path, [spark("county", mosquitto.port), spark("backup", dead)])
    code, lines = run_doctor(site)
    assert lines["broker county"].startswith("PASS"), lines
    assert f"127.0.0.1:{mosquitto.port} accepted us" in lines["broker county"]
    assert lines["broker backup"].startswith("FAIL"), lines
    assert f"127.0.0.1:{dead}" in lines["broker backup"]
    assert "connection refused" in lines["broker backup"]
    assert "broker" not in lines, "with north, every broker line names its destination"
    assert code == 1


def test_doctor_checks_the_mqtt_section_as_destination_mqtt(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    site = write_site(
        tmp_path,
        [spark("county", mosquitto.port)],
        mqtt={"host": "127.0.0.1", "port": mosquitto.port},
    )
    code, lines = run_doctor(site)
    assert lines["broker mqtt"].startswith("PASS"), lines
    assert lines["broker county"].startswith("PASS"), lines
    assert code == 0


def test_doctor_sends_the_thingsboard_token_and_does_not_print_it(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    tb = {
        "id": "tb",
        "dialect": "thingsboard",
        "host": "127.0.0.1",
        "port": mosquitto.port,
        "thingsboard": {"access_token": "${TB_TOKEN}"},
    }
    site = write_site(tmp_path, [tb])
    lines: list[str] = []
    with pytest.MonkeyPatch.context() as env:
        env.setenv("TB_TOKEN", "tb-gateway-token")
        assert doctor.run(site, 3.0, lines.append) == 0
    (line,) = (line for line in lines if "broker tb" in line)
    assert line.startswith("PASS")
    assert line.endswith("accepted us with the access token")
    assert not any("tb-gateway-token" in line for line in lines)
    # the broker saw it as the user name of the probe's CONNECT
    assert "u'tb-gateway-token'" in mosquitto.log_text()


def test_doctor_only_connects_to_a_signed_platform(tmp_path: Path, listening_port: int) -> None:
    dest = {
        "id": "ali",
        "dialect": "alink",
        "host": "127.0.0.1",
        "port": listening_port,
        "alink": {
            "product_key": "pk",
            "device_name": "gw",
            "device_secret": "${GW_SECRET}",
            "subdevices": {},
        },
    }
    site = write_site(tmp_path, [dest])
    with pytest.MonkeyPatch.context() as env:
        env.setenv("GW_SECRET", "gw-secret")
        code, lines = run_doctor(site)
    assert lines["broker ali"].startswith("PASS"), lines
    assert "credentials not tried" in lines["broker ali"]
    assert code == 0
