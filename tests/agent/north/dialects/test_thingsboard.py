"""ThingsBoard gateway API: exact topics and payloads, errors kept out of telemetry, 64 KB."""

from __future__ import annotations

import orjson

from agent.north.dialects import thingsboard as tb
from agent.north.dialects.common import Batch, Packet
from drivers.base import Reading


def test_token_is_the_username_and_the_password_is_empty() -> None:
    creds = tb.connect_credentials("A1_TEST_TOKEN", client_id="line-a-box-1")
    assert (creds.client_id, creds.username, creds.password) == (
        "line-a-box-1",
        "A1_TEST_TOKEN",
        "",
    )


def test_connect_disconnect_and_attributes_are_exact() -> None:
    assert (
        tb.connect("Meter 1", "chint-dtsu666").payload
        == b'{"device":"Meter 1","type":"chint-dtsu666"}'
    )
    assert tb.connect("Meter 1", "x").topic == "v1/gateway/connect"
    assert tb.disconnect("Meter 1") == Packet("v1/gateway/disconnect", b'{"device":"Meter 1"}')
    facts = tb.attributes(
        {"Meter 1": {"vendor": "CHINT", "profile": "dtsu666@3f2a", "agent": "0.1.0"}}
    )
    assert facts.topic == "v1/gateway/attributes"
    assert (
        facts.payload == b'{"Meter 1":{"vendor":"CHINT","profile":"dtsu666@3f2a","agent":"0.1.0"}}'
    )


def test_telemetry_is_exact_and_errors_are_not_values() -> None:
    gw = tb.TbGateway({"m1": "Meter 1"})
    batches = [
        Batch(7, "m1", [Reading(1000, {"ua": 229.8, "on": True}, {"ib": "timeout"})]),
        Batch(8, "m2", [Reading(2000, {"t": 1})]),
        Batch(9, "m1", [Reading(3000, {}, {"ua": "timeout"})]),
    ]
    [packet] = gw.pack(batches).packets
    assert packet.topic == "v1/gateway/telemetry"
    assert packet.done == (7, 8, 9)
    assert packet.payload == (
        b'{"Meter 1":[{"ts":1000,"values":{"on":true,"ua":229.8,"edge_seq":7}}],'
        b'"m2":[{"ts":2000,"values":{"t":1,"edge_seq":8}}]}'
    )
    assert tb.error_attributes("Meter 1", {"ib": "timeout", "ua": "crc"}, 3000).payload == (
        b'{"Meter 1":{"last_error":"ib: timeout; ua: crc","last_error_ts":3000}}'
    )


def test_telemetry_stays_under_64_kb() -> None:
    gw = tb.TbGateway()
    batches = [Batch(s, f"d{s % 3}", [Reading(s, {"text": "x" * 1000})]) for s in range(200)]
    packets = gw.pack(batches).packets
    assert len(packets) >= 3
    assert all(len(p.payload) <= 65536 for p in packets)
    sent = [
        r["values"]["edge_seq"]
        for p in packets
        for rs in orjson.loads(p.payload).values()
        for r in rs
    ]
    assert sorted(sent) == list(range(200))
    assert [s for p in packets for s in p.done] == list(range(200))
