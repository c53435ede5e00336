"""Every shipped profile, example site and README config loads and validates."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from agent.paths import SHIPPED_PROFILES
from agent.runtime.machines import plan_machines
from agent.site.loader import load_profile, load_site

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "config" / "examples").glob("*.yaml"))
PROFILES = sorted(SHIPPED_PROFILES.glob("*.yaml"))
CONNECTION = {
    "modbus": {"modbus_tcp": {"host": "127.0.0.1"}},
    "opcua": {"opcua": {"endpoint": "opc.tcp://127.0.0.1:4840"}},
    "serial": {"serial": {"port": "/dev/ttyUSB0"}},
    "dlt645": {"dlt645": {"port": "/dev/ttyUSB0"}},
}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_site_validates(path: Path) -> None:
    site = load_site(path, env={})
    assert site.agent.id
    assert all(d.profile for d in site.devices), "example sites use shipped profiles only"
    plans = plan_machines(site)  # what validate builds too
    assert len(plans) == (len(site.analytics.machines) if site.analytics else 0)


def test_the_analytics_example_has_machines_with_shifts() -> None:
    site = load_site(ROOT / "config" / "examples" / "analytics-demo.yaml", env={})
    plans = {p.name: p for p in plan_machines(site)}
    assert set(plans) == {"press-01", "line-1-packer"}
    assert all(p.oee is not None and p.calendar is not None for p in plans.values())
    assert plans["press-01"].energy is not None


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.stem)
def test_profile_loads_and_its_driver_accepts_it(path: Path, tmp_path: Path) -> None:
    profile = load_profile(path.stem, [SHIPPED_PROFILES])
    assert profile.model.source, "every profile says where its map comes from"
    kind = profile.model.protocol.get("kind")
    assert kind in CONNECTION
    site = {
        "agent": {"id": "profile-check"},
        "devices": [{"id": "d", "profile": path.stem, "connection": CONNECTION[kind]}],
    }
    (tmp_path / "site.yaml").write_text(yaml.safe_dump(site), encoding="utf-8")
    device = load_site(tmp_path / "site.yaml", env={}).devices[0]
    assert set(device.options.tags) >= set(profile.model.tags)
    assert device.profile_hash == profile.short_hash


def test_readme_config_example_validates(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = next(b for b in re.findall(r"```yaml\n(.*?)```", readme, re.S) if "devices:" in b)
    for name in ("ca.pem", "box.pem", "box.key"):
        (tmp_path / name).write_text("x", encoding="utf-8")
    block = block.replace("/etc/edge-agent/", f"{tmp_path}/")
    (tmp_path / "site.yaml").write_text(block, encoding="utf-8")
    site = load_site(tmp_path / "site.yaml", env={"MQTT_PASSWORD": "s3cret-pw"})
    assert site.mqtt_password == "s3cret-pw"
    assert "s3cret-pw" in site.secrets
    motor2 = site.device("spindle-motor-2")
    assert "motor_temp_c" in motor2.options.tags
    assert "di_state" not in motor2.options.tags
    assert any("deadband" in c for c in motor2.changes)
