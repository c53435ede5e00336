"""The ``north:`` list of a site file: what is accepted, what is refused and where."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.north import destination as north_destination
from agent.north.session import DIALECTS
from agent.site import models as cfg
from agent.site import north
from agent.site.loader import Site, load_site
from agent.site.source import ConfigFileError

DEVICES = [
    {"id": "m1", "profile": "generic-counter", "connection": {"modbus_tcp": {"host": "127.0.0.1"}}},
    {"id": "m2", "profile": "generic-counter", "connection": {"modbus_tcp": {"host": "127.0.0.1"}}},
]


def write(tmp_path: Path, destinations: list[dict[str, Any]], **top: Any) -> Path:
    site = {"agent": {"id": "box1", "data_dir": "data"}, **top, "north": destinations}
    site["devices"] = site.get("devices", DEVICES)
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(site, sort_keys=False), encoding="utf-8")
    return path


def load(tmp_path: Path, destinations: list[dict[str, Any]], **top: Any) -> Site:
    env = top.pop("env", {})
    return load_site(write(tmp_path, destinations, **top), env=env)


def problems(tmp_path: Path, destinations: list[dict[str, Any]], **top: Any) -> list[str]:
    """Every problem as ``path: message`` (the file and line cut off)."""
    with pytest.raises(ConfigFileError) as info:
        load(tmp_path, destinations, **top)
    return [f"{p.path}: {p.message}" for p in info.value.problems]


def sparkplug(**extra: Any) -> dict[str, Any]:
    return {
        "id": "county",
        "dialect": "sparkplug-b",
        "host": "127.0.0.1",
        "sparkplug": {"group_id": "plants"},
        **extra,
    }


def alink(subdevices: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    subs = (
        {
            d: {"product_key": "pk", "device_name": d, "device_secret": f"{d}-s"}
            for d in ("m1", "m2")
        }
        if subdevices is None
        else subdevices
    )
    block = {"product_key": "gwpk", "device_name": "gw", "device_secret": "gw-secret"}
    return {
        "id": "ali",
        "dialect": "alink",
        "host": "127.0.0.1",
        "alink": {**block, "subdevices": subs},
        **extra,
    }


def iotda(subdevices: dict[str, Any] | None = None) -> dict[str, Any]:
    subs = (
        {d: {"device_id": f"prod_{d}", "service_id": "analog"} for d in ("m1", "m2")}
        if subdevices is None
        else subdevices
    )
    return {
        "id": "hw",
        "dialect": "iotda",
        "host": "127.0.0.1",
        "iotda": {"gateway_id": "gw1", "secret": "hw-secret", "subdevices": subs},
    }


# --------------------------------------------------------------------------- the names


def test_the_dialect_names_and_the_default_id_are_the_north_packages() -> None:
    # agent.site may not import agent.north (layering): the names are written twice
    assert typing.get_args(cfg.NorthDialect) == DIALECTS
    assert set(cfg.DIALECT_BLOCKS) == set(DIALECTS)
    assert north.DEFAULT_ID == north_destination.DEFAULT_ID


# --------------------------------------------------------------------------- mqtt and north


def test_without_north_the_mqtt_section_is_the_only_destination(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text("agent: {id: box1}\n", encoding="utf-8")
    site = load_site(path, env={})
    assert site.north == ()
    assert site.mqtt_is_destination


def test_north_alone_publishes_to_north_only(tmp_path: Path) -> None:
    site = load(tmp_path, [sparkplug()])
    assert [d.id for d in site.north] == ["county"]
    assert not site.mqtt_is_destination


@pytest.mark.parametrize("mqtt", [{}, {"host": "broker.factory"}])
def test_an_mqtt_key_next_to_north_is_one_more_destination(
    tmp_path: Path, mqtt: dict[str, Any]
) -> None:
    site = load(tmp_path, [sparkplug()], mqtt=mqtt)
    assert site.mqtt_is_destination, "mqtt: {} is written, so it is published to"


def test_mqtt_id_is_taken_when_the_mqtt_section_is_given(tmp_path: Path) -> None:
    assert problems(tmp_path, [sparkplug(id="mqtt")], mqtt={"host": "b"}) == [
        "north[0].id: 'mqtt' is the id of the mqtt section's destination: choose another "
        "id, or move the mqtt section into north"
    ]
    # without the mqtt section the id is free (a site moving mqtt into north keeps it)
    assert load(tmp_path, [sparkplug(id="mqtt")]).north[0].id == "mqtt"


def test_an_empty_north_without_mqtt_names_no_destination(tmp_path: Path) -> None:
    assert problems(tmp_path, []) == [
        "north: no destination: name at least one, or leave north out to publish to mqtt"
    ]
    assert load(tmp_path, [], mqtt={}).mqtt_is_destination


def test_duplicate_and_malformed_ids(tmp_path: Path) -> None:
    found = problems(tmp_path, [sparkplug(), sparkplug(), sparkplug(id="a/b")])
    assert "north[1].id: duplicate destination id 'county' (also north[0])" in found
    assert any(p.startswith("north[2].id: 'a/b': must be 1-64 letters") for p in found)


def test_an_unknown_dialect_lists_the_known_ones(tmp_path: Path) -> None:
    (found,) = problems(tmp_path, [sparkplug(dialect="azure")])
    assert found.startswith("north[0].dialect: 'azure': Input should be 'edge-json'")
    assert all(name in found for name in DIALECTS)


def test_a_destination_names_its_host(tmp_path: Path) -> None:
    spec = sparkplug()
    del spec["host"]
    assert problems(tmp_path, [spec]) == ["north[0].host: is required"]


# --------------------------------------------------------------------------- blocks


def test_a_block_of_another_dialect_names_both(tmp_path: Path) -> None:
    spec = alink(sparkplug={"group_id": "g"})
    assert problems(tmp_path, [spec]) == [
        "north[0].sparkplug: a sparkplug block on an alink destination: alink takes an "
        "alink block; remove sparkplug, or set dialect: sparkplug-b"
    ]


def test_edge_json_takes_no_block(tmp_path: Path) -> None:
    spec = {"id": "own", "dialect": "edge-json", "host": "h", "iotda": iotda()["iotda"]}
    assert problems(tmp_path, [spec]) == [
        "north[0].iotda: an iotda block on an edge-json destination: edge-json takes no "
        "block; remove iotda, or set dialect: iotda"
    ]


@pytest.mark.parametrize(
    ("dialect", "needs"),
    [
        ("sparkplug-b", "a sparkplug block (group_id)"),
        ("alink", "an alink block (product_key, device_name, device_secret and subdevices)"),
        ("iotda", "an iotda block (gateway_id, secret and subdevices)"),
    ],
)
def test_a_dialect_with_options_needs_its_block(tmp_path: Path, dialect: str, needs: str) -> None:
    spec = {"id": "x", "dialect": dialect, "host": "h"}
    assert problems(tmp_path, [spec]) == [f"north[0].dialect: {dialect} needs {needs}"]


def test_sparkplug_ids_are_one_topic_level(tmp_path: Path) -> None:
    spec = sparkplug(sparkplug={"group_id": "a/b", "primary_host": "host#1"})
    assert problems(tmp_path, [spec]) == [
        "north[0].sparkplug.group_id: 'a/b': must be one MQTT topic level: not empty, "
        "no '/', '+' or '#'",
        "north[0].sparkplug.primary_host: 'host#1': must be one MQTT topic level: not "
        "empty, no '/', '+' or '#'",
    ]


def test_topics_and_qos_belong_to_edge_json(tmp_path: Path) -> None:
    spec = sparkplug(topic="x/{agent}/{device}", status_topic="x/{agent}", qos=0)
    found = problems(tmp_path, [spec])
    assert found == [
        "north[0].topic: topic is for edge-json destinations: sparkplug-b publishes on "
        "the topics its platform defines; remove it",
        "north[0].status_topic: status_topic is for edge-json destinations: sparkplug-b "
        "publishes on the topics its platform defines; remove it",
        "north[0].qos: sparkplug-b sends data at sparkplug.data_qos (births and deaths as "
        "the specification says): remove qos",
    ]
    own = {"id": "own", "dialect": "edge-json", "host": "h", "topic": "f/{agent}/{device}"}
    assert load(tmp_path, [own]).north[0].topic == "f/{agent}/{device}"


def test_events_topic_belongs_to_edge_json_and_takes_agent_and_source(tmp_path: Path) -> None:
    assert problems(tmp_path, [sparkplug(events_topic="x/{agent}/{source}")]) == [
        "north[0].events_topic: events_topic is for edge-json destinations: sparkplug-b "
        "publishes on the topics its platform defines; remove it",
    ]
    bad = {"id": "own", "dialect": "edge-json", "host": "h", "events_topic": "f/{device}"}
    assert problems(tmp_path, [bad]) == [
        "north[0].events_topic: 'f/{device}': unknown placeholder {device}: only {agent} "
        "and {source} can be used here",
    ]
    own = {"id": "own", "dialect": "edge-json", "host": "h", "events_topic": "f/{source}"}
    assert load(tmp_path, [own]).north[0].events_topic == "f/{source}"
    default = {"id": "own", "dialect": "edge-json", "host": "h"}
    assert load(tmp_path, [default]).north[0].events_topic == "edge/{agent}/events/{source}"


def test_two_connections_with_one_client_id_to_one_broker(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        [sparkplug(client_id="box"), sparkplug(id="again", client_id="box")],
        mqtt={"host": "127.0.0.1", "port": 1883, "client_id": "box"},
    )
    assert found == [
        "north[0].client_id: mqtt connects to 127.0.0.1:1883 with the same client id: the "
        "broker would keep only one of the two connections",
        "north[1].client_id: mqtt connects to 127.0.0.1:1883 with the same client id: the "
        "broker would keep only one of the two connections",
        "north[1].sparkplug: destination county is already edge node box1 of group plants "
        "on 127.0.0.1:1883: one edge node, one session",
    ]


# --------------------------------------------------------------------------- thingsboard


def test_thingsboard_needs_credentials_once(tmp_path: Path) -> None:
    bare = {"id": "tb", "dialect": "thingsboard", "host": "h"}
    assert problems(tmp_path, [bare]) == [
        "north[0]: thingsboard needs credentials: thingsboard.access_token (or "
        "access_token_file), or username/password, or a TLS client certificate"
    ]
    both = {**bare, "username": "u", "thingsboard": {"access_token": "tok-1"}}
    assert problems(tmp_path, [both]) == [
        "north[0].username: the access token is sent as the user name: give "
        "thingsboard.access_token or username/password, not both"
    ]
    basic = {**bare, "username": "u", "password": "p-w-d"}
    assert load(tmp_path, [basic]).north_secrets["tb"].password == "p-w-d"


def test_thingsboard_names_are_devices_and_distinct(tmp_path: Path) -> None:
    spec = {
        "id": "tb",
        "dialect": "thingsboard",
        "host": "h",
        "thingsboard": {"access_token": "tok-1", "names": {"m1": "Meter", "m2": "Meter", "x": "X"}},
    }
    assert problems(tmp_path, [spec]) == [
        "north[0].thingsboard.names.x: 'x' is not a device of this site, so it cannot have "
        "a device name (devices: m1, m2)",
        "north[0].thingsboard.names.m2: m2 and m1 would both be ThingsBoard device 'Meter'",
    ]


# --------------------------------------------------------------------------- alink, iotda


def test_every_enabled_device_needs_a_cloud_identity(tmp_path: Path) -> None:
    one = {"m1": {"product_key": "pk", "device_name": "m1", "device_secret": "m1-s"}}
    assert problems(tmp_path, [alink(one)]) == [
        "north[0].alink.subdevices: no sub-device entry for m2: alink can send a device's "
        "data only under its cloud identity; add one per device (or disable the device)"
    ]
    devices = [DEVICES[0], {**DEVICES[1], "enabled": False}]
    assert load(tmp_path, [alink(one)], devices=devices).north_secrets["ali"].subdevices == {
        "m1": "m1-s"
    }


def test_a_machine_needs_a_cloud_identity_too(tmp_path: Path) -> None:
    analytics = {"machines": {"press": {"devices": ["m1"]}}}
    subs = {d: {"device_id": d, "service_id": "s"} for d in ("m1", "m2")}
    assert problems(tmp_path, [iotda(subs)], analytics=analytics) == [
        "north[0].iotda.subdevices: no sub-device entry for press: iotda can send a device's "
        "(or a machine's) data only under its cloud identity; add one per device and "
        "machine (or disable the device)"
    ]
    subs["press"] = {"device_id": "press-01", "service_id": "machine"}
    site = load(tmp_path, [iotda(subs)], analytics=analytics)
    assert site.analytics is not None


def test_a_sub_device_that_is_no_device_lists_the_devices(tmp_path: Path) -> None:
    subs = {d: {"device_id": d, "service_id": "s"} for d in ("m1", "m2", "press")}
    assert problems(tmp_path, [iotda(subs)]) == [
        "north[0].iotda.subdevices.press: 'press' is not a device of this site, so it "
        "cannot have a cloud identity (devices: m1, m2)"
    ]


def test_identifiers_and_float_tags_name_tags_of_the_device(tmp_path: Path) -> None:
    subs = {
        "m1": {
            "product_key": "pk",
            "device_name": "m1",
            "device_secret": "m1-s",
            "identifiers": {"t0": "Count0", "speed": "Speed"},
            "float_tags": ["t1", "temp"],
        },
        "m2": {"product_key": "pk", "device_name": "m2", "device_secret": "m2-s"},
    }
    found = problems(tmp_path, [alink(subs)])
    assert [p.split(" (tags: ")[0] for p in found] == [
        "north[0].alink.subdevices.m1.identifiers.speed: 'speed' is not a tag of m1",
        "north[0].alink.subdevices.m1.float_tags[1]: 'temp' is not a tag of m1",
    ]
    assert "(tags: t0, t1, t2," in found[0], "the device's tags are listed"


def test_signed_dialects_refuse_connect_credentials(tmp_path: Path) -> None:
    found = problems(tmp_path, [alink(username="u", client_id="c", password="p-w")])
    assert found == [
        f"north[0].{key}: alink signs its own client id, user name and password with the "
        f"device secret of the alink block: remove {key}"
        for key in ("client_id", "username", "password")
    ]


def test_secrets_are_required_and_given_once(tmp_path: Path) -> None:
    spec = alink()
    del spec["alink"]["device_secret"]
    spec["alink"]["subdevices"]["m1"]["device_secret_file"] = "m1.secret"
    hw = iotda()
    hw["iotda"]["secret_file"] = "hw.secret"
    assert problems(tmp_path, [spec, hw]) == [
        "north[0].alink: the gateway's device_secret is required: give device_secret or "
        "device_secret_file",
        "north[0].alink.subdevices.m1.device_secret_file: give device_secret or "
        "device_secret_file, not both",
        "north[1].iotda.secret_file: give secret or secret_file, not both",
    ]


# --------------------------------------------------------------------------- secrets


def test_secrets_come_from_files_and_the_environment(tmp_path: Path) -> None:
    (tmp_path / "gw.secret").write_text("gw-from-file\n", encoding="utf-8")
    (tmp_path / "m2.secret").write_text("m2-from-file", encoding="utf-8")
    (tmp_path / "mqtt.pw").write_text("pw-from-file\n", encoding="utf-8")
    subs = {
        "m1": {"product_key": "pk", "device_name": "m1", "device_secret": "${M1_SECRET}"},
        "m2": {"product_key": "pk", "device_name": "m2", "device_secret_file": "m2.secret"},
    }
    spec = alink(subs)
    del spec["alink"]["device_secret"]
    spec["alink"]["device_secret_file"] = str(tmp_path / "gw.secret")
    spark = sparkplug(username="box", password_file="mqtt.pw")
    site = load(tmp_path, [spec, spark], env={"M1_SECRET": "m1-from-env"})
    secrets = site.north_secrets["ali"]
    assert secrets.device_secret == "gw-from-file"
    assert secrets.subdevices == {"m1": "m1-from-env", "m2": "m2-from-file"}
    assert site.north_secrets["county"].password == "pw-from-file"
    assert {"gw-from-file", "m1-from-env", "m2-from-file", "pw-from-file"} <= site.secrets
    assert site.notes == (), "nothing is written in the file"


def test_an_unreadable_secret_file_is_located(tmp_path: Path) -> None:
    hw = iotda()
    del hw["iotda"]["secret"]
    hw["iotda"]["secret_file"] = "missing.secret"
    assert problems(tmp_path, [hw]) == [
        "north[0].iotda.secret_file: cannot read missing.secret: No such file or directory"
    ]


def test_a_missing_tls_file_of_a_destination_is_located(tmp_path: Path) -> None:
    spec = sparkplug(tls={"ca": "ca.pem"})
    assert problems(tmp_path, [spec]) == [f"north[0].tls.ca: file not found: {tmp_path}/ca.pem"]


def test_secrets_are_in_no_repr_and_masked_in_problems(tmp_path: Path) -> None:
    site = load(tmp_path, [alink(), {**iotda(), "port": 8883}])
    shown = repr(site) + repr(site.north) + repr(site.north_secrets)
    for secret in ("gw-secret", "m1-s", "m2-s", "hw-secret"):
        assert secret not in shown
        assert secret in site.secrets
    # a problem quoting a section quotes its secrets: they are masked
    bad = alink(password="pw-in-problem", password_file="x")
    assert all("pw-in-problem" not in p for p in problems(tmp_path, [bad]))


def test_a_secret_written_in_the_file_is_a_warning(tmp_path: Path) -> None:
    site = load(tmp_path, [alink()])
    assert [w.split(": ", 1)[1] for w in site.warnings] == [
        f"north[0].alink.{key} is written in the site file: put it in the environment "
        "(${VAR}) or in device_secret_file, readable by the agent only"
        for key in ("device_secret", "subdevices.m1.device_secret", "subdevices.m2.device_secret")
    ]
    assert site.warnings[0].startswith(f"{tmp_path}/site.yaml:")
