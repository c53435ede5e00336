"""Alink session: signed CONNECT, topo add and login before data, replies paired by id."""

from __future__ import annotations

import calendar
import hashlib
import hmac
import json
from typing import Any

import pytest

from agent.north.destination import AlinkOptions
from agent.north.dialects import alink
from agent.north.dialects.alink_session import AlinkSession
from agent.north.dialects.common import Batch
from agent.north.session import Outgoing, Session
from drivers.base import Reading

NOW = calendar.timegm((2024, 3, 1, 10, 0, 0)) * 1000  # 10:00 UTC
GW_SECRET = "gw-secret"
SUBS = {
    "m1": alink.SubDevice("a1SUB", "meter01", secret="s-one"),
    "m2": alink.SubDevice("a1SUB", "meter02", secret="s-two"),
}


def _session(subs: dict[str, alink.SubDevice] = SUBS, **kw: Any) -> AlinkSession:
    options = AlinkOptions(
        product_key="a1GW", device_name="gw01", device_secret=GW_SECRET, subdevices=subs, **kw
    )
    return AlinkSession(options, "box-1", {})


def _hmac256(key: str, text: str) -> str:
    return hmac.new(key.encode(), text.encode(), hashlib.sha256).hexdigest()


def _reply(msg_id: str, code: int = 200, message: str = "success", **extra: Any) -> bytes:
    return json.dumps({"id": msg_id, "code": code, "message": message, **extra}).encode()


def _login_all(session: AlinkSession) -> list[Outgoing]:
    out = list(session.on_connect(NOW))
    for o in out:
        if o.topic.endswith("/combine/login"):
            msg_id = json.loads(o.payload)["id"]
            session.on_message("/ext/session/a1GW/gw01/combine/login_reply", _reply(msg_id), NOW)
    return out


def test_credentials_are_signed_with_the_connect_time_afresh_each_time() -> None:
    session: Session = _session()
    creds = session.credentials(NOW)
    assert creds is not None
    assert creds.client_id == f"a1GW.gw01|securemode=2,signmethod=hmacsha256,timestamp={NOW}|"
    assert creds.username == "gw01&a1GW"
    content = f"clientIda1GW.gw01deviceNamegw01productKeya1GWtimestamp{NOW}"
    assert creds.password == _hmac256(GW_SECRET, content)
    later = session.credentials(NOW + 1)
    assert later is not None
    assert later.password != creds.password
    assert session.will(NOW) is None  # Alibaba has no Will

    plain = AlinkSession(
        AlinkOptions(product_key="pk", device_name="dn", device_secret="k", sign_method="hmacsha1"),
        "box-1",
        {},
        tls=False,
    ).credentials(5)
    assert plain is not None
    assert plain.client_id == "pk.dn|securemode=3,signmethod=hmacsha1,timestamp=5|"
    expected = hmac.new(b"k", b"clientIdpk.dndeviceNamednproductKeypktimestamp5", hashlib.sha1)
    assert plain.password == expected.hexdigest()


def test_subscribes_to_the_gateway_reply_topics() -> None:
    assert sorted(_session().subscriptions()) == sorted(
        [
            ("/sys/a1GW/gw01/thing/topo/add_reply", 1),
            ("/ext/session/a1GW/gw01/combine/login_reply", 1),
            ("/ext/session/a1GW/gw01/combine/logout_reply", 1),
            ("/sys/a1GW/gw01/thing/event/property/pack/post_reply", 1),
            ("/ext/error/a1GW/gw01", 1),
        ]
    )


def _sign(secret: str, sub: alink.SubDevice, ts: int) -> str:
    pk, dn = sub.product_key, sub.device_name
    return _hmac256(secret, f"clientId{pk}.{dn}deviceName{dn}productKey{pk}timestamp{ts}")


def test_on_connect_binds_then_logs_in_every_sub_device_with_its_own_signature() -> None:
    out = _session().on_connect(NOW)
    assert [(o.topic, o.qos) for o in out] == [
        ("/sys/a1GW/gw01/thing/topo/add", 1),
        ("/ext/session/a1GW/gw01/combine/login", 0),
        ("/ext/session/a1GW/gw01/combine/login", 0),
    ]
    topo = json.loads(out[0].payload)
    assert topo["method"] == "thing.topo.add"
    assert [p["deviceName"] for p in topo["params"]] == ["meter01", "meter02"]
    for p, (secret, sub) in zip(
        topo["params"], [("s-one", SUBS["m1"]), ("s-two", SUBS["m2"])], strict=True
    ):
        assert p["productKey"] == "a1SUB"
        assert p["clientId"] == f"a1SUB.{sub.device_name}"
        assert p["timestamp"] == str(NOW)
        assert p["signmethod"] == "hmacsha256"
        assert p["sign"] == _sign(secret, sub, NOW)
    login = json.loads(out[1].payload)
    assert login["method"] == "combine.login"
    params = login["params"]
    assert (params["deviceName"], params["signMethod"], params["cleanSession"]) == (
        "meter01",
        "hmacsha256",
        "true",
    )
    assert params["sign"] == _sign("s-one", SUBS["m1"], NOW)
    ids = [int(json.loads(o.payload)["id"]) for o in out]
    assert ids == sorted(set(ids))  # unique, increasing
    assert ids[0] >= NOW % 86_400_000  # never below the milliseconds of the day


def test_topo_add_takes_30_sub_devices_a_request() -> None:
    subs = {f"d{i}": alink.SubDevice("pk", f"dn{i}", secret="s") for i in range(31)}
    out = _session(subs).on_connect(NOW)
    topo = [json.loads(o.payload) for o in out if o.topic.endswith("/topo/add")]
    assert [len(t["params"]) for t in topo] == [30, 1]
    assert sum(o.topic.endswith("/combine/login") for o in out) == 31


def test_data_waits_until_every_login_succeeded() -> None:
    session = _session()
    out = session.on_connect(NOW)
    first, second = (json.loads(o.payload)["id"] for o in out[1:])
    assert not session.ready()
    topic = "/ext/session/a1GW/gw01/combine/login_reply"
    reaction = session.on_message(topic, _reply(first), NOW)
    assert reaction.ready_changed
    assert not session.ready()
    refused = session.on_message(topic, _reply(second, 6287, "invalid sign"), NOW)
    assert refused.note == "login of m2 refused: 6287 invalid sign"
    assert not session.ready()
    session.on_connect(NOW + 1000)  # the next connection tries again
    assert not session.ready()


def test_a_new_connection_is_ready_for_its_logins_and_then_waits_for_their_replies() -> None:
    """The publisher sends on_connect only to a ready session: the logins must get out."""
    session = _session()
    for attempt in range(2):  # the first connection, and a reconnect after it was ready
        session.credentials(NOW + attempt)
        assert session.ready(), "nothing would send the topo add and the logins"
        _login_all(session) if attempt else session.on_connect(NOW)
        assert session.ready() is bool(attempt)
    session.credentials(NOW + 5)
    session.on_connect(NOW + 5)
    assert not session.ready()  # data waits for this connection's logins


def test_a_login_refused_for_a_missing_topology_is_sent_again_once_it_is_bound() -> None:
    session = _session({"m1": SUBS["m1"]})
    topo, login = session.on_connect(NOW)
    login_id = json.loads(login.payload)["id"]
    session.on_message(
        "/ext/session/a1GW/gw01/combine/login_reply",
        _reply(login_id, 6401, "topo relation not exist"),
        NOW,
    )
    reaction = session.on_message(
        "/sys/a1GW/gw01/thing/topo/add_reply", _reply(json.loads(topo.payload)["id"]), NOW
    )
    [again] = reaction.send
    assert again.topic.endswith("/combine/login")
    new_id = json.loads(again.payload)["id"]
    assert int(new_id) > int(login_id)
    session.on_message("/ext/session/a1GW/gw01/combine/login_reply", _reply(new_id), NOW)
    assert session.ready()


def test_pack_posts_carry_the_seq_and_their_id_is_the_reply_key() -> None:
    session = _session()
    connect_ids = [int(json.loads(o.payload)["id"]) for o in _login_all(session)]
    assert session.ready()
    batches = [
        Batch(41, "m1", [Reading(NOW - 5000, {"ua": 229.5, "on": True})]),
        Batch(42, "m2", [Reading(NOW - 4000, {"ua": 231})]),
    ]
    [packet] = session.encode(batches, NOW, historical=False).packets
    assert packet.topic == "/sys/a1GW/gw01/thing/event/property/pack/post"
    assert packet.done == (41, 42)
    body = json.loads(packet.payload)
    assert body["method"] == "thing.event.property.pack.post"
    assert body["sys"] == {"ack": 1}
    assert body["params"]["subDevices"] == [
        {
            "identity": {"productKey": "a1SUB", "deviceName": "meter01"},
            "properties": {
                "on": {"value": 1, "time": NOW - 5000},
                "ua": {"value": 229.5, "time": NOW - 5000},
                "edge_seq": {"value": 41, "time": NOW - 5000},
            },
            "events": {},
        },
        {
            "identity": {"productKey": "a1SUB", "deviceName": "meter02"},
            "properties": {
                "ua": {"value": 231, "time": NOW - 4000},
                "edge_seq": {"value": 42, "time": NOW - 4000},
            },
            "events": {},
        },
    ]
    key = session.reply_key(packet)
    assert key is not None
    assert key == body["id"]
    assert int(key) > max(connect_ids)
    encoded = session.encode([Batch(43, "m1", [Reading(NOW, {"ua": 1})])], NOW, historical=False)
    assert session.reply_key(encoded.packets[0]) == str(int(key) + 1)


def test_ids_after_a_restart_the_same_day_do_not_repeat_earlier_ones() -> None:
    before = _session()
    used = [int(json.loads(o.payload)["id"]) for o in before.on_connect(NOW)]
    restarted = _session()
    fresh = [int(json.loads(o.payload)["id"]) for o in restarted.on_connect(NOW + 1000)]
    assert min(fresh) > max(used)


@pytest.mark.parametrize(
    ("code", "verdict"),
    [
        (200, "accepted"),
        (460, "refused"),
        (6106, "refused"),
        (6320, "refused"),
        (6306, "refused"),
        (429, "retry"),
        (6452, "retry"),
        (500, "retry"),
        (6313, "retry"),
        (520, "retry"),
        (99999, "retry"),
    ],
)
def test_post_reply_verdicts(code: int, verdict: str) -> None:
    session = _session()
    reaction = session.on_message(
        "/sys/a1GW/gw01/thing/event/property/pack/post_reply",
        _reply("77", code, "the message", data={}, version="1.0"),
        NOW,
    )
    assert reaction.replies == (("77", verdict),)
    if verdict == "accepted":
        assert reaction.note is None
    else:
        assert reaction.note == f"pack post 77 {verdict}: {code} the message"


def test_a_platform_error_naming_a_request_asks_for_a_retry() -> None:
    reaction = _session().on_message(
        "/ext/error/a1GW/gw01", _reply("88", 520, "device session error"), NOW
    )
    assert reaction.replies == (("88", "retry"),)
    assert reaction.note == "platform error: 520 device session error"
    assert _session().on_message("/sys/a1GW/gw01/thing/other", b"{}", NOW).note is not None
    assert _session().on_message("/ext/error/a1GW/gw01", b"not json", NOW).replies == ()


def test_limits_cut_a_pack_at_20_sub_devices_and_200_properties() -> None:
    subs = {f"d{i}": alink.SubDevice("pk", f"dn{i}", secret="s") for i in range(25)}
    session = _session(subs, seq_property=None)
    many = [Batch(i, f"d{i}", [Reading(NOW, {"t": i})]) for i in range(25)]
    packets = session.encode(many, NOW, historical=False).packets
    assert [len(json.loads(p.payload)["params"]["subDevices"]) for p in packets] == [20, 5]
    assert [p.done for p in packets] == [tuple(range(20)), tuple(range(20, 25))]

    wide = Batch(99, "d0", [Reading(NOW, {f"t{k:03}": k for k in range(450)})])
    packets = session.encode([wide], NOW, historical=False).packets
    props = [
        sum(len(s["properties"]) for s in json.loads(p.payload)["params"]["subDevices"])
        for p in packets
    ]
    assert props == [200, 200, 50]
    assert [p.done for p in packets] == [(), (), (99,)]
    keys = [session.reply_key(p) for p in packets]
    assert len(set(keys)) == 3


def test_offline_logs_out_online_logs_in_again_and_goodbye_logs_out() -> None:
    session = _session()
    _login_all(session)
    [out] = session.device_state("m1", False, NOW)
    body = json.loads(out.payload)
    assert (out.topic, out.qos) == ("/ext/session/a1GW/gw01/combine/logout", 0)
    assert (body["method"], body["params"]) == (
        "combine.logout",
        {"productKey": "a1SUB", "deviceName": "meter01"},
    )
    assert session.ready()  # a logged-out device does not hold the others' data
    assert session.device_state("m1", False, NOW) == ()
    [back] = session.device_state("m1", True, NOW)
    assert back.topic.endswith("/combine/login")
    assert not session.ready()
    session.on_message(
        "/ext/session/a1GW/gw01/combine/login_reply", _reply(json.loads(back.payload)["id"]), NOW
    )
    assert session.ready()
    bye = session.goodbye(NOW)
    assert [json.loads(o.payload)["params"]["deviceName"] for o in bye] == ["meter01", "meter02"]
    assert session.device_state("ghost", False, NOW) == ()


def test_a_platform_error_naming_a_login_is_that_login_refused() -> None:
    session = _session({"m1": SUBS["m1"]})
    _topo, login = session.on_connect(NOW)
    error = _reply(json.loads(login.payload)["id"], 522, "device forbidden")
    reaction = session.on_message("/ext/error/a1GW/gw01", error, NOW)
    assert reaction.note == "login of m1 refused: 522 device forbidden"
    assert reaction.replies == ()
    assert not session.ready()
