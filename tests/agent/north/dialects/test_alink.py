"""Alink: the published signing vectors, the official SDK's results, pack limits, floats."""

from __future__ import annotations

import re
import warnings

import orjson
import pytest

from agent.north.dialects import alink
from agent.north.dialects.common import Batch, Refused
from drivers.base import Reading

SUB = alink.SubDevice("a1SUB", "meter01", secret="subsecret", float_tags=frozenset({"ua"}))


def test_connect_reproduces_the_documented_example() -> None:
    """Alibaba's "establish MQTT connections" page: clientId 12345, device/pk, secret, 789."""
    creds = alink.connect_credentials(
        "pk", "device", "secret", timestamp_ms=789, client_id="12345", tls=False, method="hmacsha1"
    )
    assert creds.client_id == "12345|securemode=3,signmethod=hmacsha1,timestamp=789|"
    assert creds.username == "device&pk"
    assert creds.password.upper() == "FAFD82A3D602B37FB0FA8B7892F24A477F851A14"


def test_topology_sign_reproduces_the_documented_example() -> None:
    """The BatchAddThingTopo example: HMAC-MD5 with key 1234."""
    params = {
        "clientId": "868575026974305",
        "deviceName": "868575026974305",
        "productKey": "a1PB5fp1234",
        "timestamp": "1646277090411",
    }
    assert alink.sign("1234", params, "hmacMd5").upper() == "3BA0DFA4C477B40C007D84D30D6466CC"


def test_tls_is_securemode_2_and_the_default_client_id_is_pk_dot_dn() -> None:
    creds = alink.connect_credentials("a1pk", "gw", "s", timestamp_ms=1700000000000)
    assert creds.client_id == "a1pk.gw|securemode=2,signmethod=hmacsha256,timestamp=1700000000000|"
    expected = alink.sign(
        "s",
        {
            "productKey": "a1pk",
            "deviceName": "gw",
            "clientId": "a1pk.gw",
            "timestamp": "1700000000000",
        },
    )
    assert creds.password == expected
    assert "password" not in repr(creds)  # a secret-derived value is never printed


SDK_INPUTS = [
    # product key, device name, device secret, TLS
    ("a1pk", "gw01", "gwsecret", False),
    ("a1B2c3D4e5F", "gateway-01", "0123456789abcdef0123456789abcdef", True),
    ("a1pk", "line_3.meter", "s3cr&t|with=odd,chars", False),
    ("a1Xy", "dev", "\u5bc6\u94a5-secret", True),  # a non-ASCII secret: UTF-8 on both sides
]


def _sdk_client(
    product_key: str = "a1pk",
    device_name: str = "gw01",
    device_secret: str = "gwsecret",
    tls: bool = False,
) -> object:
    """aliyun-iot-linkkit's client, configured as for a connect (no connection is made)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the SDK's paho 1 style constructor
        from linkkit import linkkit

        kit = linkkit.LinkKit(
            host_name="127.0.0.1",
            product_key=product_key,
            device_name=device_name,
            device_secret=device_secret,
        )
        kit.config_mqtt(port=1883, secure="TLS" if tls else "")
        # the SDK's own function that computes the client id, user name and password
        kit._LinkKit__config_mqtt_client_internal()
    return kit


@pytest.mark.parametrize(("pk", "dn", "secret", "tls"), SDK_INPUTS)
def test_connect_credentials_equal_the_official_python_sdk(
    pk: str, dn: str, secret: str, tls: bool
) -> None:
    """aliyun-iot-linkkit signs HMAC-SHA1 with clientId pk&dn and a seconds timestamp.

    An independent implementation of the documented signature: the same inputs
    must give the same user name and password, and the same securemode.
    """
    kit = _sdk_client(pk, dn, secret, tls)
    client = kit._LinkKit__mqtt_client  # type: ignore[attr-defined]
    sdk_id = client._client_id.decode()
    stamp = re.search(r"timestamp=(\d+)\|", sdk_id)
    assert stamp is not None
    assert sdk_id.startswith(f"{pk}&{dn}|securemode={2 if tls else 3},signmethod=hmacsha1,")
    ours = alink.connect_credentials(
        pk,
        dn,
        secret,
        timestamp_ms=int(stamp.group(1)),
        client_id=f"{pk}&{dn}",
        tls=tls,
        method="hmacsha1",
    )
    assert ours.client_id.startswith(f"{pk}&{dn}|securemode={2 if tls else 3},signmethod=hmacsha1,")
    assert client._username.decode() == ours.username
    assert client._password.decode() == ours.password


@pytest.mark.parametrize(("pk", "dn", "secret", "tls"), SDK_INPUTS)
def test_topo_add_sign_equals_the_official_python_sdk(
    pk: str, dn: str, secret: str, tls: bool
) -> None:
    kit = _sdk_client(tls=tls)
    sub = alink.SubDevice(pk, dn, secret=secret)
    kit.gateway_add_subdev_topo([[pk, dn, secret]])  # type: ignore[attr-defined]
    queued = list(kit._LinkKit__mqtt_client._out_messages.values())  # type: ignore[attr-defined]
    assert [m.topic for m in queued] == ["/sys/a1pk/gw01/thing/topo/add"]
    sdk = orjson.loads(queued[0].payload)["params"][0]
    ours = orjson.loads(
        alink.topo_add("a1pk", "gw01", [sub], msg_id=1, timestamp_ms=int(sdk["timestamp"])).payload
    )["params"][0]
    assert ours == {**sdk, "signmethod": "hmacsha256"}  # the SDK spells it hmacSha256
    assert sdk["signmethod"].lower() == "hmacsha256"


def test_login_payload_is_exact() -> None:
    packet = alink.login("a1pk", "gw01", SUB, msg_id=7, timestamp_ms=1700000000000)
    sign = alink.sign(
        "subsecret",
        {
            "clientId": "a1SUB.meter01",
            "deviceName": "meter01",
            "productKey": "a1SUB",
            "timestamp": "1700000000000",
        },
    )
    assert packet.topic == "/ext/session/a1pk/gw01/combine/login"
    assert packet.payload == (
        b'{"id":"7","version":"1.0","params":{"clientId":"a1SUB.meter01","deviceName":"meter01",'
        b'"productKey":"a1SUB","timestamp":"1700000000000","sign":"' + sign.encode() + b'",'
        b'"signMethod":"hmacsha256","cleanSession":"true"},"method":"combine.login"}'
    )


def test_pack_post_is_exact_with_floats_and_the_seq() -> None:
    gw = alink.AlinkGateway("a1pk", "gw01", {"m1": SUB})
    batch = Batch(
        42, "m1", [Reading(1700000000000, {"ua": 230, "on": True, "n": 3}, {"ib": "timeout"})]
    )
    encoded = gw.pack([batch], first_id=42)
    assert [p.done for p in encoded.packets] == [(42,)]
    assert encoded.packets[0].topic == "/sys/a1pk/gw01/thing/event/property/pack/post"
    assert encoded.packets[0].payload == (
        b'{"id":"42","version":"1.0","sys":{"ack":1},"params":{"properties":{},"events":{},'
        b'"subDevices":[{"identity":{"productKey":"a1SUB","deviceName":"meter01"},"properties":{'
        b'"n":{"value":3,"time":1700000000000},"on":{"value":1,"time":1700000000000},'
        b'"ua":{"value":230.0,"time":1700000000000},'
        b'"edge_seq":{"value":42,"time":1700000000000}},"events":{}}]},'
        b'"method":"thing.event.property.pack.post"}'
    )


@pytest.mark.parametrize(
    ("value", "as_float", "text"),
    [
        (1.0, False, b"1.0"),
        (1, True, b"1.0"),
        (1, False, b"1"),
        (23.6, False, b"23.6"),
        (1e16, False, b"10000000000000000.0"),
        (1e-7, False, b"0.0000001"),
        (-0.0, False, b"-0.0"),
        (True, True, b"1"),
        ("on", False, b'"on"'),
    ],
)
def test_float_values_always_carry_a_decimal_point(
    value: object, as_float: bool, text: bytes
) -> None:
    assert orjson.dumps(alink.alink_value(value, as_float)) == text  # type: ignore[arg-type]
    if isinstance(value, float):
        assert float(text) == value


def test_pack_splits_at_20_sub_devices_200_properties_and_repeated_devices() -> None:
    subs = {f"d{i}": alink.SubDevice("pk", f"dn{i}") for i in range(25)}
    gw = alink.AlinkGateway("gpk", "gdn", subs, seq_property=None)
    many = [Batch(i, f"d{i}", [Reading(1000, {"t": 1})]) for i in range(25)]
    assert [len(_subs(p.payload)) for p in gw.pack(many, first_id=1).packets] == [20, 5]

    wide = Batch(1, "d0", [Reading(1000, {f"t{k:03}": k for k in range(450)})])
    packets = gw.pack([wide], first_id=1).packets
    assert [_props(p.payload) for p in packets] == [200, 200, 50]
    assert [p.done for p in packets] == [(), (), (1,)]
    assert [orjson.loads(p.payload)["id"] for p in packets] == ["1", "2", "3"]  # ids never repeat
    wrapped = gw.pack([wide], first_id=2**32 - 1).packets
    assert [orjson.loads(p.payload)["id"] for p in wrapped] == ["4294967295", "0", "1"]

    twice = Batch(3, "d0", [Reading(1000, {"t": 1}), Reading(2000, {"t": 2})])
    assert [_props(p.payload) for p in gw.pack([twice], first_id=1).packets] == [1, 1]


def test_pack_stays_under_max_bytes_and_refuses_what_cannot_fit() -> None:
    gw = alink.AlinkGateway("gpk", "gdn", {"d": alink.SubDevice("pk", "dn")}, max_bytes=2000)
    batches = [Batch(s, "d", [Reading(s, {"text": "x" * 300})]) for s in range(1, 11)]
    batches.append(Batch(11, "d", [Reading(11, {"text": "y" * 5000})]))
    batches.append(Batch(12, "ghost", [Reading(12, {"t": 1})]))
    encoded = gw.pack(batches, first_id=1)
    assert all(len(p.payload) <= 2000 for p in encoded.packets)
    assert [s for p in encoded.packets for s in p.done] == list(range(1, 13))
    assert encoded.refused == (
        Refused(11, "d", 11, "too large"),
        Refused(12, "ghost", None, "no cloud identity"),
    )


def test_a_batch_of_errors_only_is_done_without_a_packet() -> None:
    gw = alink.AlinkGateway("gpk", "gdn", {"d": alink.SubDevice("pk", "dn")})
    encoded = gw.pack([Batch(5, "d", [Reading(1, {}, {"t": "timeout"})])], first_id=1)
    assert encoded.packets == ()
    assert encoded.idle == (5,)


@pytest.mark.parametrize(
    ("code", "verdict"),
    [
        (200, alink.Verdict.ACCEPTED),
        (460, alink.Verdict.REFUSED),
        (429, alink.Verdict.RETRY),
        (500, alink.Verdict.RETRY),
        (6100, alink.Verdict.RETRY),
        (6813, alink.Verdict.RETRY),
    ],
)
def test_post_reply_codes(code: int, verdict: alink.Verdict) -> None:
    reply = alink.parse_reply(
        b'{"code":%d,"data":{},"id":"42","message":"m","version":"1.0"}' % code
    )
    assert (reply.msg_id, reply.code, reply.verdict) == ("42", code, verdict)


@pytest.mark.parametrize("payload", [b"nope", b"[]", b'{"code":"200"}'])
def test_a_reply_that_is_not_alink_is_an_error(payload: bytes) -> None:
    with pytest.raises(ValueError, match="reply"):
        alink.parse_reply(payload)


def _subs(payload: bytes) -> list[object]:
    subs: list[object] = orjson.loads(payload)["params"]["subDevices"]
    return subs


def _props(payload: bytes) -> int:
    return sum(len(s["properties"]) for s in orjson.loads(payload)["params"]["subDevices"])
