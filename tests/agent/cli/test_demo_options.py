"""``edge-agent demo`` options: the dialects it offers, the site file it writes, outages."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from agent.cli.app import app
from agent.cli.demo import TB_TOKEN_FILE, Outage, demo_dialects, demo_site, listen_command
from agent.private import write_private
from agent.runtime.destinations import destinations
from agent.site.loader import load_site

ADDRESSES: dict[str, str | int] = {
    "press-motor-1": 5020,
    "saw-motor-2": 5021,
    "main-meter": 5022,
    "spindle-motor-3": "/tmp/edge-agent-sim/rtu",
    "packaging-line": "opc.tcp://127.0.0.1:4840",
    "torque-tool": "/tmp/edge-agent-sim/torque",
    "office-meter": "/tmp/edge-agent-sim/dlt645",
}


def _load(tmp_path: Path, dialects: tuple[str, ...]) -> list[tuple[str, str, str, int]]:
    """The destinations of the demo's site file for ``dialects``: id, dialect, client id, port."""
    site = demo_site(ADDRESSES, "127.0.0.1", 18830, tmp_path, dialects)
    write_private(tmp_path / TB_TOKEN_FILE, b"token\n")
    write_private(tmp_path / "demo-site.yaml", yaml.safe_dump(site).encode())
    found = destinations(load_site(tmp_path / "demo-site.yaml"))
    return [(d.id, d.dialect, d.mqtt.client_id, d.mqtt.port) for d in found]


def test_two_destinations_on_one_broker_have_their_own_client_ids(tmp_path: Path) -> None:
    agent = "edge-agent-demo-garden-tools-sample-box1"
    assert _load(tmp_path, demo_dialects("sparkplug-b", ["edge-json"])) == [
        ("mqtt", "edge-json", agent, 18830),
        ("sparkplug", "sparkplug-b", f"{agent}-sparkplug", 18830),
    ]


def test_without_edge_json_the_mqtt_section_is_not_published_to(tmp_path: Path) -> None:
    assert [d[:2] for d in _load(tmp_path, ("thingsboard",))] == [("thingsboard", "thingsboard")]
    site = demo_site(ADDRESSES, "127.0.0.1", 1, tmp_path, ("sparkplug-b",))
    assert "mqtt" not in site
    assert site["north"][0]["sparkplug"] == {"group_id": "demo"}


def test_the_default_is_today_s_demo(tmp_path: Path) -> None:
    site = demo_site(ADDRESSES, "127.0.0.1", 1, tmp_path)
    assert "north" not in site
    assert site["mqtt"]["port"] == 1
    assert _load(tmp_path, demo_dialects("edge-json"))[0][:2] == ("mqtt", "edge-json")


@pytest.mark.parametrize(
    ("dialect", "also", "message"),
    [
        ("alink", [], "alink needs the vendor's cloud"),
        ("edge-json", ["iotda"], "iotda needs the vendor's cloud"),
        ("mqtt", [], "unknown dialect 'mqtt'"),
        ("sparkplug-b", ["sparkplug-b"], "sparkplug-b given twice"),
    ],
)
def test_refused_dialects_say_why(dialect: str, also: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        demo_dialects(dialect, also)
    args = ["demo", "--dialect", dialect, *(a for x in also for a in ("--also", x))]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert message in result.output


def test_an_outage_is_device_start_and_length() -> None:
    assert Outage.parse("saw-motor-2=20+10") == Outage("saw-motor-2", 20.0, 10.0)
    assert Outage.parse("main-meter=0+0.5") == Outage("main-meter", 0.0, 0.5)
    for bad in ("saw-motor-2", "=1+2", "m=1", "m=x+2", "m=1+nan", "m=-1+2", "m=1+0"):
        with pytest.raises(ValueError, match="--outage"):
            Outage.parse(bad)


def test_the_listen_command_of_each_dialect() -> None:
    assert (
        listen_command("edge-json", "127.0.0.1", 1883)
        == "edge-agent listen --broker 127.0.0.1:1883"
    )
    assert (
        listen_command("sparkplug-b", "h", 1)
        == "edge-agent listen --broker h:1 --dialect sparkplug-b"
    )
