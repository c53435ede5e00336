"""ThingsBoard session: gateway connects and attributes, telemetry cut at 64 KB, device state."""

from __future__ import annotations

import json

from agent.north.destination import ThingsboardOptions
from agent.north.dialects.common import Batch
from agent.north.dialects.tb_session import TbSession
from agent.north.session import DeviceFacts, Session
from drivers.base import Reading

FACTS = {
    "m1": DeviceFacts(
        "m1", "chint-dtsu666@3f2a", vendor="CHINT", model="DTSU666", static={"agent": "0.1"}
    ),
    "m2": DeviceFacts("m2", "generic@0001"),
}


def _session(**kw: object) -> TbSession:
    options = ThingsboardOptions(names={"m1": "Meter 1"}, **kw)  # type: ignore[arg-type]
    return TbSession(options, "box-1", FACTS)


def test_it_is_a_session_with_no_credentials_will_subscriptions_or_replies() -> None:
    session: Session = _session()
    assert session.credentials(1) is None  # the token is the configured user name
    assert session.will(1) is None
    assert list(session.subscriptions()) == []
    assert session.ready()
    encoded = session.encode([Batch(1, "m1", [Reading(5, {"v": 1})])], 10, historical=False)
    assert session.reply_key(encoded.packets[0]) is None


def test_on_connect_announces_each_device_with_its_profile_then_its_attributes() -> None:
    out = _session().on_connect(1000)
    assert [(o.topic, o.qos, o.retain) for o in out] == [
        ("v1/gateway/connect", 1, False),
        ("v1/gateway/connect", 1, False),
        ("v1/gateway/attributes", 1, False),
    ]
    assert json.loads(out[0].payload) == {"device": "Meter 1", "type": "chint-dtsu666@3f2a"}
    assert json.loads(out[1].payload) == {"device": "m2", "type": "generic@0001"}
    assert json.loads(out[2].payload) == {
        "Meter 1": {
            "profile": "chint-dtsu666@3f2a",
            "vendor": "CHINT",
            "model": "DTSU666",
            "agent": "0.1",
            "last_error": "",
        },
        "m2": {"profile": "generic@0001", "last_error": ""},
    }


def test_telemetry_carries_ts_values_and_the_seq_under_the_configured_key() -> None:
    session = _session(seq_key="seq")
    batches = [
        Batch(7, "m1", [Reading(1000, {"ua": 229.8, "on": True}), Reading(2000, {"ua": 230})]),
        Batch(8, "m2", [Reading(1500, {"t": "idle"})]),
    ]
    [packet] = session.encode(batches, 3000, historical=False).packets
    assert packet.topic == "v1/gateway/telemetry"
    assert packet.done == (7, 8)
    assert json.loads(packet.payload) == {
        "Meter 1": [
            {"ts": 1000, "values": {"on": True, "ua": 229.8, "seq": 7}},
            {"ts": 2000, "values": {"ua": 230, "seq": 7}},
        ],
        "m2": [{"ts": 1500, "values": {"t": "idle", "seq": 8}}],
    }


def test_a_batch_above_64_kb_is_cut_and_only_its_last_packet_finishes_it() -> None:
    session = _session()
    readings = [Reading(1000 + i, {"text": f"{i:05}" + "x" * 995}) for i in range(200)]
    batches = [Batch(1, "m2", readings[:150]), Batch(2, "m2", readings[150:])]
    packets = session.encode(batches, 0, historical=False).packets
    assert len(packets) == 4  # 200 kB of samples, 64 kB a message
    assert all(len(p.payload) <= 65536 for p in packets)
    bodies = [json.loads(p.payload)["m2"] for p in packets]
    assert [s["ts"] for b in bodies for s in b] == [r.ts for r in readings]  # each once, in order
    for seq in (1, 2):
        carrying = [
            i for i, b in enumerate(bodies) if any(s["values"]["edge_seq"] == seq for s in b)
        ]
        finishing = [i for i, p in enumerate(packets) if seq in p.done]
        assert finishing == [carrying[-1]]  # done in the packet of its last sample, once
        assert len(carrying) > 1  # the batch really spans packets


def test_tag_errors_become_last_error_attributes_when_they_change() -> None:
    session = _session()
    session.on_connect(0)
    first = session.encode(
        [Batch(1, "m1", [Reading(1000, {"ua": 1}, {"ib": "timeout", "ic": "crc"})])],
        0,
        historical=False,
    ).packets
    assert [p.topic for p in first] == ["v1/gateway/telemetry", "v1/gateway/attributes"]
    assert json.loads(first[1].payload) == {
        "Meter 1": {"last_error": "ib: timeout; ic: crc", "last_error_ts": 1000}
    }
    assert (first[0].done, first[1].done) == ((), (1,))  # finished once its errors are sent
    same = session.encode(
        [Batch(2, "m1", [Reading(2000, {"ua": 2}, {"ib": "timeout", "ic": "crc"})])],
        0,
        historical=False,
    ).packets
    assert [p.topic for p in same] == ["v1/gateway/telemetry"]
    cleared = session.encode([Batch(3, "m1", [Reading(3000, {"ua": 3})])], 0, historical=False)
    assert json.loads(cleared.packets[-1].payload) == {
        "Meter 1": {"last_error": "", "last_error_ts": 3000}
    }
    only_errors = session.encode(
        [Batch(4, "m2", [Reading(4000, {}, {"t": "timeout"})])], 0, historical=False
    )
    assert only_errors.idle == ()  # no telemetry: finished by its attributes packet
    assert json.loads(only_errors.packets[0].payload) == {
        "m2": {"last_error": "t: timeout", "last_error_ts": 4000}
    }
    assert only_errors.packets[0].done == (4,)


def test_offline_disconnects_online_connects_again_and_goodbye_ends_the_rest() -> None:
    session = _session()
    [off] = session.device_state("m1", False, 10)
    assert (off.topic, json.loads(off.payload)) == ("v1/gateway/disconnect", {"device": "Meter 1"})
    assert session.device_state("m1", False, 11) == ()  # said once
    assert [json.loads(o.payload) for o in session.on_connect(12)[:-1]] == [
        {"device": "m2", "type": "generic@0001"}
    ]  # a reconnect does not announce a device known silent
    assert [json.loads(o.payload) for o in session.goodbye(13)] == [{"device": "m2"}]
    [on] = session.device_state("m1", True, 14)
    assert (on.topic, json.loads(on.payload)) == (
        "v1/gateway/connect",
        {"device": "Meter 1", "type": "chint-dtsu666@3f2a"},
    )
    assert session.device_state("m1", True, 15) == ()
    assert session.device_state("ghost", False, 16) == ()
    assert session.on_message("v1/gateway/rpc", b"{}", 17).note is not None


def test_last_error_is_cut_to_the_packet_limit_and_limit_lowers_it() -> None:
    session = _session()
    session.limit(8192)  # a broker taking 8 KB: the packets stay below it, topic included
    session.on_connect(0)
    reason = "no answer from 10.0.0.17:502 within 2.0 s (timeout)"
    errors = {f"plc/area/tag_{i:05d}": reason for i in range(2000)}  # ~140 kB of text
    encoded = session.encode([Batch(1, "m2", [Reading(1000, {}, errors)])], 0, historical=False)
    (packet,) = encoded.packets
    assert packet.topic == "v1/gateway/attributes"
    assert not packet.data  # no readings in it
    assert 7000 < len(packet.payload) <= 8192 - 521
    text = json.loads(packet.payload)["m2"]["last_error"]
    assert text.startswith(f"plc/area/tag_00000: {reason}; plc/area/tag_00001: ")
    kept = text.count(reason)
    assert text.endswith(f"; ... and {2000 - kept} more")
    session.limit(1 << 20)  # never above its own cap (64 KB here)
    wide = [Reading(2000 + i, {f"v{j}": float(j) for j in range(50)}) for i in range(200)]
    out = session.encode([Batch(2, "m1", wide)], 0, historical=False).packets
    assert len(out) > 1
    assert all(len(p.payload) <= 65536 for p in out)
