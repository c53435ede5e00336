"""Every shipped Modbus profile, served by the simulator, reads back right through the agent.

The simulator encodes with its own code (simulators/encode.py) and the agent
decodes with the driver's: a wrong address, type, byte order or scale in a
profile, or a missing adapter in simulators/profile_models.py, shows here as a
value that differs from what the simulator's model put in.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from agent.cli.read import read_once
from agent.paths import SHIPPED_PROFILES
from agent.site.loader import load_site
from simulators.encode import FLOAT_TYPES
from simulators.profile_models import BEHAVIOUR_OF_PROFILE
from simulators.run import SimDevice, run_simulators

MODBUS_PROFILES = sorted(
    p.stem
    for p in SHIPPED_PROFILES.glob("*.yaml")
    if yaml.safe_load(p.read_text(encoding="utf-8")).get("extends")
    or yaml.safe_load(p.read_text(encoding="utf-8"))["protocol"].get("kind") == "modbus"
)


def test_every_shipped_modbus_profile_has_a_behaviour() -> None:
    assert set(MODBUS_PROFILES) == set(BEHAVIOUR_OF_PROFILE)
    assert len(MODBUS_PROFILES) >= 9


@pytest.mark.parametrize("profile", MODBUS_PROFILES)
async def test_simulated_profile_reads_back(profile: str, tmp_path: Path) -> None:
    kind = BEHAVIOUR_OF_PROFILE[profile]
    spec = SimDevice("dev", kind, profile=profile, seed=3)
    async with run_simulators([spec], step_interval=None) as sims:
        running = sims["dev"]
        running.step(30.0)  # past the first start: the drive runs, the meter has moved
        site = {
            "agent": {"id": "readback"},
            "devices": [
                {
                    "id": "dev",
                    "profile": profile,
                    "connection": {"modbus_tcp": {"host": "127.0.0.1", "port": running.port}},
                    "protocol": {"inter_request_delay": 0},
                }
            ],
        }
        (tmp_path / "site.yaml").write_text(yaml.safe_dump(site), encoding="utf-8")
        device = load_site(tmp_path / "site.yaml", env={}).device("dev")
        reading, _ = await read_once(device, list(device.options.tags), raw=False)
    put = running.device.values
    assert not reading.errors
    assert set(put) == set(device.options.tags), "the model gives every tag a value"
    for name, tag in running.device.tags.items():
        expected = put[name]
        assert not isinstance(expected, str)
        if tag.type not in FLOAT_TYPES:  # integer registers hold the value at their resolution
            expected = round((float(expected) - tag.offset) / tag.scale) * tag.scale + tag.offset
        got = reading.values[name]
        assert got == pytest.approx(expected, rel=1e-6, abs=1e-6 * max(1.0, tag.scale)), name
