"""IoTDA: the documented password vector, the device SDK's signing, the batch report."""

from __future__ import annotations

import calendar
import hashlib
import hmac
import time

import orjson
import pytest

from agent.north.dialects import iotda
from agent.north.dialects.common import Batch
from drivers.base import Reading

HOUR = calendar.timegm((2025, 4, 14, 1, 59, 59))
TS = calendar.timegm((2023, 11, 1, 8, 0, 0)) * 1000 + 123


def test_password_reproduces_the_documented_example() -> None:
    """Secret 12345678 at 2025041401: the timestamp is the HMAC key, the secret the message."""
    creds = iotda.connect_credentials("prod_gw01", "12345678", epoch_s=HOUR)
    assert creds.password == "c75150e6cb841417396819e4d2ee4358a416344a03a083e3a8567074ddec820a"
    assert creds.client_id == "prod_gw01_0_0_2025041401"
    assert creds.username == "prod_gw01"


def test_sign_type_1_asks_the_platform_to_check_the_hour() -> None:
    creds = iotda.connect_credentials("gw", "s", epoch_s=HOUR, check_time=True)
    assert creds.client_id == "gw_0_1_2025041401"


# Huawei's device SDK for Python (github.com/huaweicloud/huaweicloud-iot-device-sdk-python)
# is not published on PyPI (no package of it can be installed here), so it cannot be run
# as the Alink SDK is. The two functions below re-state, with the clock made a parameter,
# what its files at commit 36ce73bacb91847624f220ef32240a3f270efe02 do:
# iot_device_sdk_python/utils/iot_util.py (get_timestamp, get_client_id, sha256_mac) and
# iot_device_sdk_python/transport/mqtt/mqtt_connection.py (connect(): the client id from
# get_client_id(id, check_timestamp), user name = the device id, password =
# sha256_mac(secret)). A re-statement, not the SDK itself: it guards against our misreading
# of the prose documentation, not against an error we would repeat reading that code.
SDK_COMMIT = "36ce73bacb91847624f220ef32240a3f270efe02"


def _sdk_timestamp(now: float) -> str:
    """iot_util.get_timestamp: ``%Y%m%d%H`` of ``time.gmtime`` (here of ``now``)."""
    return time.strftime("%Y%m%d%H", time.gmtime(now))


def _sdk_credentials(device_id: str, secret: str, psw_sig_type: str, now: float) -> tuple[str, ...]:
    """mqtt_connection.connect's client id, user name and password (secret auth, direct)."""
    client_id = device_id + "_0_" + psw_sig_type + "_" + _sdk_timestamp(now)
    key = _sdk_timestamp(now).encode("utf-8")
    password = hmac.new(key, secret.encode("utf-8"), digestmod=hashlib.sha256).hexdigest()
    return client_id, device_id, password


SDK_INPUTS = [
    # device id, secret, UTC time
    ("prod_gw01", "12345678", (2025, 4, 14, 1, 59, 59)),  # the documented example's hour
    ("64f1a2b3c4d5e6f7a8b9c0d1_gateway-01", "0123456789abcdef0123456789abcdef",
     (2024, 2, 29, 23, 0, 0)),  # a leap day, the first second of an hour
    ("prod_line3.meter", "s3cr&t|with=odd,chars_0_0", (1999, 12, 31, 23, 59, 59)),
    ("gw", "\u5bc6\u94a5-secret", (2038, 1, 19, 3, 14, 8)),  # non-ASCII: UTF-8 on both sides
]  # fmt: skip


@pytest.mark.parametrize(("device_id", "secret", "utc"), SDK_INPUTS)
@pytest.mark.parametrize("check_time", [False, True])
def test_connect_credentials_equal_the_device_sdk_restated(
    device_id: str, secret: str, utc: tuple[int, ...], check_time: bool
) -> None:
    """Our client id, user name and password equal the SDK's code re-stated (see above).

    A documented re-statement of ``iot_util.py`` and ``mqtt_connection.py`` of
    huaweicloud/huaweicloud-iot-device-sdk-python at ``SDK_COMMIT``, not the SDK
    itself (it is not installable from PyPI).
    """
    now = calendar.timegm((*utc, 0, 0, 0))
    sdk = _sdk_credentials(device_id, secret, "1" if check_time else "0", now)
    ours = iotda.connect_credentials(device_id, secret, epoch_s=now, check_time=check_time)
    assert (ours.client_id, ours.username, ours.password) == sdk
    assert secret not in repr(ours)
    assert ours.password not in repr(ours)


def test_batch_report_is_exact() -> None:
    gw = iotda.IotdaGateway(
        "prod_gw01", {"m1": iotda.SubDevice("prod_meter01", "analog", {"ua": "Ua"})}
    )
    batch = Batch(
        9, "m1", [Reading(TS, {"ua": 229.8}, {"ib": "timeout"}), Reading(TS + 1000, {"ua": 230})]
    )
    [packet] = gw.pack([batch]).packets
    assert packet.topic == "$oc/devices/prod_gw01/sys/gateway/sub_devices/properties/report"
    assert packet.done == (9,)
    assert packet.payload == (
        b'{"devices":[{"device_id":"prod_meter01","services":['
        b'{"service_id":"analog","properties":{"Ua":229.8,"edge_seq":9},"event_time":"20231101T080000Z"},'
        b'{"service_id":"analog","properties":{"Ua":230,"edge_seq":9},"event_time":"20231101T080001Z"}'
        b"]}]}"
    )


def test_batch_report_splits_at_100_devices_and_max_bytes() -> None:
    subs = {f"d{i}": iotda.SubDevice(f"id{i}", "s") for i in range(150)}
    gw = iotda.IotdaGateway("gw", subs, seq_property=None)
    batches = [Batch(i, f"d{i}", [Reading(TS, {"t": 1})]) for i in range(150)]
    packets = gw.pack(batches).packets
    assert [len(orjson.loads(p.payload)["devices"]) for p in packets] == [100, 50]
    assert [s for p in packets for s in p.done] == list(range(150))

    small = iotda.IotdaGateway("gw", subs, max_bytes=1500)
    long = [Batch(i, "d0", [Reading(TS, {"text": "x" * 200})]) for i in range(20)]
    packets = small.pack(long).packets
    assert len(packets) > 1
    assert all(len(p.payload) <= 1500 for p in packets)


def test_sub_device_status_is_exact_and_split_by_100() -> None:
    gw = iotda.IotdaGateway("gw", {})
    [packet] = gw.status({"b": False, "a": True}, now_ms=TS)
    assert packet.topic == "$oc/devices/gw/sys/events/up"
    assert packet.payload == (
        b'{"services":[{"service_id":"$sub_device_manager","event_type":"sub_device_update_status",'
        b'"event_time":"20231101T080000Z","paras":{"device_statuses":['
        b'{"device_id":"a","status":"ONLINE"},{"device_id":"b","status":"OFFLINE"}]}}]}'
    )
    many = gw.status({f"d{i:03}": True for i in range(230)}, now_ms=TS)
    sizes = [len(orjson.loads(p.payload)["services"][0]["paras"]["device_statuses"]) for p in many]
    assert sizes == [100, 100, 30]
    assert gw.status({}, now_ms=TS) == []
