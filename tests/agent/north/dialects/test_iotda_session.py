"""IoTDA session: the hour-stamped password, sub-device status, batch reports and their caps."""

from __future__ import annotations

import calendar
import hashlib
import hmac
import json

from agent.north.destination import IotdaOptions
from agent.north.dialects import iotda
from agent.north.dialects.common import Batch
from agent.north.dialects.iotda_session import IotdaSession
from agent.north.session import Session
from drivers.base import Reading

HOUR_MS = calendar.timegm((2025, 4, 14, 1, 59, 59)) * 1000 + 999
SUBS = {
    "m1": iotda.SubDevice("prod_meter01", "analog", {"ua": "Ua"}),
    "m2": iotda.SubDevice("prod_meter02", "analog"),
}
EVENTS_UP = "$oc/devices/prod_gw01/sys/events/up"


def _session(subs: dict[str, iotda.SubDevice] = SUBS, **kw: object) -> IotdaSession:
    options = IotdaOptions(gateway_id="prod_gw01", secret="12345678", subdevices=subs, **kw)  # type: ignore[arg-type]
    return IotdaSession(options, "box-1", {})


def _statuses(payload: bytes) -> list[dict[str, str]]:
    [service] = json.loads(payload)["services"]
    assert service["service_id"] == "$sub_device_manager"
    assert service["event_type"] == "sub_device_update_status"
    statuses: list[dict[str, str]] = service["paras"]["device_statuses"]
    return statuses


def test_credentials_use_the_hour_as_hmac_key_and_are_computed_each_connect() -> None:
    session: Session = _session()
    creds = session.credentials(HOUR_MS)
    assert creds is not None
    assert (creds.client_id, creds.username) == ("prod_gw01_0_0_2025041401", "prod_gw01")
    assert creds.password == hmac.new(b"2025041401", b"12345678", hashlib.sha256).hexdigest()
    assert creds.password == "c75150e6cb841417396819e4d2ee4358a416344a03a083e3a8567074ddec820a"
    next_hour = session.credentials(HOUR_MS + 1)  # 02:00:00.000 UTC
    assert next_hour is not None
    assert next_hour.client_id == "prod_gw01_0_0_2025041402"
    assert next_hour.password == hmac.new(b"2025041402", b"12345678", hashlib.sha256).hexdigest()
    assert session.will(HOUR_MS) is None
    assert session.ready()
    assert list(session.subscriptions()) == [("$oc/devices/prod_gw01/sys/events/down", 1)]


def test_on_connect_says_every_sub_device_is_online() -> None:
    [out] = _session().on_connect(HOUR_MS)
    assert (out.topic, out.qos, out.retain) == (EVENTS_UP, 1, False)
    [service] = json.loads(out.payload)["services"]
    assert service["event_time"] == "20250414T015959Z"
    assert service["event_id"]
    assert _statuses(out.payload) == [
        {"device_id": "prod_meter01", "status": "ONLINE"},
        {"device_id": "prod_meter02", "status": "ONLINE"},
    ]


def test_status_events_carry_at_most_100_devices() -> None:
    subs = {f"d{i}": iotda.SubDevice(f"prod_d{i:03}", "s") for i in range(150)}
    out = _session(subs).on_connect(HOUR_MS)
    assert [len(_statuses(o.payload)) for o in out] == [100, 50]
    assert len({json.loads(o.payload)["services"][0]["event_id"] for o in out}) == 2


def test_batch_report_carries_the_seq_property_and_puback_is_the_receipt() -> None:
    session = _session(seq_property="seq")
    ts = calendar.timegm((2023, 11, 1, 8, 0, 0)) * 1000 + 250
    batches = [
        Batch(5, "m1", [Reading(ts, {"ua": 229.8}, {"ib": "timeout"})]),
        Batch(6, "m2", [Reading(ts + 1000, {"t": 21})]),
    ]
    encoded = session.encode(batches, ts, historical=True)
    [packet] = encoded.packets
    assert packet.topic == "$oc/devices/prod_gw01/sys/gateway/sub_devices/properties/report"
    assert packet.done == (5, 6)
    assert session.reply_key(packet) is None
    assert json.loads(packet.payload) == {
        "devices": [
            {
                "device_id": "prod_meter01",
                "services": [
                    {
                        "service_id": "analog",
                        "properties": {"Ua": 229.8, "seq": 5},
                        "event_time": "20231101T080000Z",
                    }
                ],
            },
            {
                "device_id": "prod_meter02",
                "services": [
                    {
                        "service_id": "analog",
                        "properties": {"t": 21, "seq": 6},
                        "event_time": "20231101T080001Z",
                    }
                ],
            },
        ]
    }


def test_reports_are_cut_at_100_sub_devices_and_at_1_mb() -> None:
    subs = {f"d{i}": iotda.SubDevice(f"prod_d{i:03}", "s") for i in range(150)}
    session = _session(subs)
    many = [Batch(i, f"d{i}", [Reading(1000, {"t": i})]) for i in range(150)]
    packets = session.encode(many, 0, historical=False).packets
    assert [len(json.loads(p.payload)["devices"]) for p in packets] == [100, 50]
    assert [p.done for p in packets] == [tuple(range(100)), tuple(range(100, 150))]

    big = [Reading(1000 + i, {"text": "x" * 10_000}) for i in range(250)]  # 2.5 MB
    packets = session.encode([Batch(7, "d0", big)], 0, historical=False).packets
    assert len(packets) == 3
    assert all(len(p.payload) <= 1024 * 1024 for p in packets)
    assert [p.done for p in packets] == [(), (), (7,)]
    entries = [s for p in packets for d in json.loads(p.payload)["devices"] for s in d["services"]]
    assert len(entries) == 250
    assert {e["properties"]["edge_seq"] for e in entries} == {7}


def test_device_state_and_goodbye_report_statuses() -> None:
    session = _session()
    [off] = session.device_state("m2", False, HOUR_MS)
    assert _statuses(off.payload) == [{"device_id": "prod_meter02", "status": "OFFLINE"}]
    assert session.device_state("m2", False, HOUR_MS) == ()
    [again] = session.on_connect(HOUR_MS)  # a reconnect repeats what is known
    assert _statuses(again.payload) == [
        {"device_id": "prod_meter01", "status": "ONLINE"},
        {"device_id": "prod_meter02", "status": "OFFLINE"},
    ]
    [on] = session.device_state("m2", True, HOUR_MS)
    assert _statuses(on.payload) == [{"device_id": "prod_meter02", "status": "ONLINE"}]
    assert session.device_state("ghost", False, HOUR_MS) == ()
    [bye] = session.goodbye(HOUR_MS)
    assert {s["status"] for s in _statuses(bye.payload)} == {"OFFLINE"}
    ids = {json.loads(o.payload)["services"][0]["event_id"] for o in (off, again, on, bye)}
    assert len(ids) == 4  # each request its own event id


def test_events_down_status_failures_become_a_note_and_the_rest_is_ignored() -> None:
    session = _session()
    down = "$oc/devices/prod_gw01/sys/events/down"
    response = {
        "object_device_id": "prod_gw01",
        "services": [
            {
                "service_id": "$sub_device_manager",
                "event_type": "sub_device_update_status_response",
                "event_time": "20250414T015959Z",
                "event_id": "e1",
                "paras": {
                    "successful_devices": [{"device_id": "prod_meter01", "status": "ONLINE"}],
                    "failed_devices": [
                        {
                            "device_id": "prod_meter02",
                            "error_code": "IOTDA.014016",
                            "error_msg": "not a sub-device",
                        }
                    ],
                },
            }
        ],
    }
    note = session.on_message(down, json.dumps(response).encode(), HOUR_MS).note
    assert note == "sub-device status refused for prod_meter02: IOTDA.014016 not a sub-device"
    fine = response["services"][0]["paras"]  # type: ignore[index]
    fine["failed_devices"] = []
    assert session.on_message(down, json.dumps(response).encode(), HOUR_MS).note is None
    other = {
        "services": [{"service_id": "$sub_device_manager", "event_type": "add_sub_device_notify"}]
    }
    assert session.on_message(down, json.dumps(other).encode(), HOUR_MS).note == (
        "ignored IoTDA event 'add_sub_device_notify'"
    )
    assert session.on_message(down, b"garbage", HOUR_MS).note == "unreadable IoTDA event"
    command = session.on_message("$oc/devices/prod_gw01/sys/commands/request_id=1", b"{}", 0)
    assert command.note is not None
    assert command.send == ()
