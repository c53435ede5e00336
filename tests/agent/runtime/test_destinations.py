"""``destinations(site)``: the Destination records a site file makes, secrets included."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.north.destination import (
    AlinkOptions,
    IotdaOptions,
    SparkplugOptions,
    ThingsboardOptions,
)
from agent.north.dialects import alink, iotda
from agent.north.options import TlsOptions
from agent.runtime.agent import mqtt_options
from agent.runtime.destinations import connection_options, destinations
from agent.runtime.reload import plan_reload
from agent.site.loader import Site, load_site

ROOT = Path(__file__).resolve().parents[3]
DEVICE = {"id": "m1", "profile": "generic-counter", "connection": {"modbus_tcp": {"host": "h"}}}


def load(tmp_path: Path, env: dict[str, str] | None = None, **top: Any) -> Site:
    site = {"agent": {"id": "box1", "data_dir": "data"}, **top, "devices": [DEVICE]}
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(site, sort_keys=False), encoding="utf-8")
    return load_site(path, env=env or {})


def test_a_site_without_north_is_the_mqtt_destination_as_before(tmp_path: Path) -> None:
    site = load(tmp_path, mqtt={"host": "b.example", "username": "u", "password": "pw-1"})
    (only,) = destinations(site)
    assert (only.id, only.dialect, only.options) == ("mqtt", "edge-json", None)
    assert only.mqtt == mqtt_options(site), "the publisher's options are the same record"
    assert (only.mqtt.host, only.mqtt.client_id, only.mqtt.password) == (
        "b.example",
        "edge-agent-box1",
        "pw-1",
    )


def test_the_shipped_two_destination_example(tmp_path: Path) -> None:
    site = load_site(ROOT / "config" / "examples" / "county-sparkplug.yaml", env={})
    factory, county = destinations(site)
    assert (factory.id, factory.dialect, factory.mqtt.host) == ("mqtt", "edge-json", "127.0.0.1")
    assert (county.id, county.dialect) == ("county", "sparkplug-b")
    assert (county.mqtt.host, county.mqtt.port) == ("sparkplug.county.example", 8883)
    assert county.mqtt.tls == TlsOptions()
    assert county.mqtt.client_id == "edge-agent-brake-parts-box1-county"
    assert county.options == SparkplugOptions(
        group_id="county-plants",
        edge_node_id="brake-parts-box1",
        primary_host="county-scada",
        data_qos=1,
        state_file=site.data_dir / "sparkplug-county.bdseq",
    )


def test_north_only_leaves_the_mqtt_section_out(tmp_path: Path) -> None:
    spark = {
        "id": "county",
        "dialect": "sparkplug-b",
        "host": "s.example",
        "client_id": "own-id",
        "sparkplug": {"group_id": "g", "edge_node_id": "node-7", "data_qos": 0},
    }
    own = {"id": "own", "dialect": "edge-json", "host": "f.example", "topic": "f/{agent}/{device}"}
    found = destinations(load(tmp_path, north=[spark, own]))
    assert [d.id for d in found] == ["county", "own"]
    options = found[0].options
    assert isinstance(options, SparkplugOptions)
    assert (options.edge_node_id, options.data_qos, found[0].mqtt.client_id) == (
        "node-7",
        0,
        "own-id",
    )
    assert (found[1].mqtt.topic, found[1].options) == ("f/{agent}/{device}", None)
    # DDATA goes at the connection's QoS: data_qos 0 is what the publisher sends with
    assert (found[0].mqtt.qos, found[1].mqtt.qos) == (0, 1)


def test_one_code_path_for_every_broker_section(tmp_path: Path) -> None:
    for name in ("ca.pem", "box.pem", "box.key"):
        (tmp_path / name).write_text("x", encoding="utf-8")
    section = {
        "host": "b.example",
        "port": 8883,
        "username": "u",
        "tls": {"ca": "ca.pem", "cert": "box.pem", "key": "box.key", "insecure": True},
        "keepalive": "45s",
        "max_inflight": 7,
        "reconnect_max": "1m",
        "max_message_size": "16KiB",
    }
    spark = {"id": "s", "dialect": "sparkplug-b", **section, "sparkplug": {"group_id": "g"}}
    site = load(tmp_path, mqtt=section, north=[spark])
    plain, other = destinations(site)
    assert other.mqtt == connection_options(site, site.north[0], destination_id="s", password=None)
    assert {**vars(plain.mqtt), "client_id": "-"} == {**vars(other.mqtt), "client_id": "-"}
    assert plain.mqtt.tls == TlsOptions(
        ca=tmp_path / "ca.pem", cert=tmp_path / "box.pem", key=tmp_path / "box.key", insecure=True
    )
    assert (plain.mqtt.keepalive, plain.mqtt.max_message_size) == (45.0, 16384)


def test_thingsboard_sends_its_token_as_the_user_name(tmp_path: Path) -> None:
    (tmp_path / "tb.token").write_text("tb-token-from-file\n", encoding="utf-8")
    tb = {
        "id": "tb",
        "dialect": "thingsboard",
        "host": "tb.example",
        "thingsboard": {
            "access_token_file": "tb.token",
            "names": {"m1": "Meter 1"},
            "seq_key": None,
        },
    }
    (found,) = destinations(load(tmp_path, north=[tb]))
    assert (found.mqtt.username, found.mqtt.password) == ("tb-token-from-file", None)
    assert found.options == ThingsboardOptions(names={"m1": "Meter 1"}, seq_key=None)


def test_alink_carries_every_secret_and_identity(tmp_path: Path) -> None:
    (tmp_path / "gw.secret").write_text("gw-from-file", encoding="utf-8")
    spec = {
        "id": "ali",
        "dialect": "alink",
        "host": "iot-as-mqtt.example",
        "port": 8883,
        "tls": {},
        "alink": {
            "product_key": "a1GW",
            "device_name": "box1",
            "device_secret_file": "gw.secret",
            "sign_method": "hmacsha1",
            "subdevices": {
                "m1": {
                    "product_key": "a1SUB",
                    "device_name": "meter01",
                    "device_secret": "${SUB_SECRET}",
                    "identifiers": {"t0": "Count"},
                    "float_tags": ["t1"],
                }
            },
        },
    }
    (found,) = destinations(load(tmp_path, env={"SUB_SECRET": "sub-from-env"}, north=[spec]))
    assert found.options == AlinkOptions(
        product_key="a1GW",
        device_name="box1",
        device_secret="gw-from-file",
        sign_method="hmacsha1",
        subdevices={
            "m1": alink.SubDevice(
                product_key="a1SUB",
                device_name="meter01",
                secret="sub-from-env",
                identifiers={"t0": "Count"},
                float_tags=frozenset({"t1"}),
            )
        },
        seq_property="edge_seq",
    )
    assert (found.mqtt.username, found.mqtt.password) == (None, None), "the session signs"
    shown = repr(found)
    assert "gw-from-file" not in shown
    assert "sub-from-env" not in shown


def test_iotda_carries_its_secret_and_sub_devices(tmp_path: Path) -> None:
    spec = {
        "id": "hw",
        "dialect": "iotda",
        "host": "iot-mqtts.example",
        "iotda": {
            "gateway_id": "prod_box1",
            "secret": "${HW_SECRET}",
            "subdevices": {"m1": {"device_id": "prod_m1", "service_id": "analog"}},
            "seq_property": "seq",
        },
    }
    (found,) = destinations(load(tmp_path, env={"HW_SECRET": "hw-from-env"}, north=[spec]))
    assert found.options == IotdaOptions(
        gateway_id="prod_box1",
        secret="hw-from-env",
        subdevices={"m1": iotda.SubDevice(device_id="prod_m1", service_id="analog")},
        seq_property="seq",
    )
    assert "hw-from-env" not in repr(found)


@pytest.mark.parametrize(
    "change",
    [
        {"north": [{"id": "x", "dialect": "edge-json", "host": "other"}]},
        {"mqtt": {}},  # the mqtt section becomes a destination too
    ],
)
def test_a_changed_north_asks_for_a_restart(tmp_path: Path, change: dict[str, Any]) -> None:
    north = [{"id": "x", "dialect": "edge-json", "host": "h"}]
    for name in "abc":
        (tmp_path / name).mkdir()
    running = load(tmp_path / "a", north=north)
    new = load(tmp_path / "b", **{"north": north, **change})
    assert "north destinations" in plan_reload(running, new).needs_restart
    same = load(tmp_path / "c", north=north)
    assert "north destinations" not in plan_reload(running, same).needs_restart


def test_a_reload_that_changes_the_machines_needs_a_restart(tmp_path: Path) -> None:
    """A machine's counters and shift tallies belong to its plan: never swapped live."""
    calendar = {"c": {"shifts": [{"name": "day", "start": "08:00", "end": "16:00"}]}}
    analytics = {"timezone": "Asia/Shanghai", "calendars": calendar,
                 "machines": {"press": {"devices": ["m1"], "calendar": "c"}}}  # fmt: skip
    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
    running = load(tmp_path / "a", analytics=analytics)
    other = {**analytics, "publish_every": "1m"}
    new = load(tmp_path / "b", analytics=other)
    assert any(r.startswith("analytics") for r in plan_reload(running, new).needs_restart)
    same = load(tmp_path / "c", analytics=analytics)  # the same block in another file
    assert not any(r.startswith("analytics") for r in plan_reload(running, same).needs_restart)
