"""Ids that become topic levels: a dot breaks NATS and is rewritten by RabbitMQ."""

from __future__ import annotations

from pathlib import Path

from agent.site.loader import load_site

SITE = """\
agent: {{id: {agent}, data_dir: {data}}}
mqtt: {{host: 127.0.0.1}}
devices:
  - id: {device}
    profile: eastron-sdm630
    connection: {{modbus_tcp: {{host: 127.0.0.1}}}}
"""


def _warnings(tmp_path: Path, agent: str, device: str) -> list[str]:
    site = tmp_path / "site.yaml"
    site.write_text(SITE.format(agent=agent, device=device, data=tmp_path / "data"))
    return [w for w in load_site(site).warnings if "contains '.'" in w]


def test_a_dot_in_an_id_is_warned_about(tmp_path: Path) -> None:
    found = _warnings(tmp_path, "box.1", "meter.main")
    assert len(found) == 2
    assert "agent id 'box.1'" in found[0]
    assert "NATS closes the connection" in found[0]
    assert "device 'meter.main'" in found[1]


def test_ids_without_dots_are_quiet(tmp_path: Path) -> None:
    assert _warnings(tmp_path, "box-1", "meter_main") == []
