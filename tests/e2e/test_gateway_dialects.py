"""The three gateway dialects end to end: the agent process against cloud stand-ins.

Per dialect (ThingsBoard, Alibaba Alink, Huawei IoTDA): a site file with the
dialect as its only ``north:`` destination, secrets in files and ``${ENV}``,
two counter simulators, a real Mosquitto, a CONNECT gate checking the
documented credentials, and the cloud's side played from its documentation
(``tests/support/clouds.py``). Checked: every committed seq arrives once per
connection and in order per device, devices are announced before their data,
a device whose simulator stops is announced gone and, when it is back,
announced again; Alink's refused (460) and throttled (429) replies.
"""

from __future__ import annotations

import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.site.loader import load_site
from tests.faults.harness import wait_status
from tests.support.clouds import AlinkCloud, IotdaCloud, ThingsboardCloud
from tests.support.gateways import GatewayRig
from tests.support.mosquitto import Mosquitto, Subscriber

ERROR_ONLY_PER_OUTAGE = 1
"""A device that stops answering leaves one reading of tag errors: no sample, no seq."""


def _outage(rig: GatewayRig, device: str, gone: str, back: str) -> None:
    """Stop ``device``'s simulator until the cloud saw ``gone``, then start it until ``back``."""
    cloud = rig.cloud
    name = rig.cloud_name(device)
    before = len(cloud.device_seqs(name))
    assert cloud.wait(lambda: len(cloud.device_seqs(name)) >= before + 3, 20)
    rig.stop_device(device)
    assert cloud.wait(lambda: (gone, name) in {e[:2] for e in cloud.events}, 20), cloud.events[-5:]
    doc = wait_status(rig.agent, lambda d: d["devices"][device]["state"] != "ok", 10)
    assert doc["devices"][device]["state"] != "ok"
    gone_at = len(cloud.events)
    other = rig.cloud_name(next(n for n in rig.names if n != device))
    during = len(cloud.device_seqs(other))
    assert cloud.wait(lambda: len(cloud.device_seqs(other)) >= during + 5, 20), "others flow on"
    rig.start_device(device)
    assert cloud.wait(lambda: (back, name) in {e[:2] for e in cloud.events[gone_at:]}, 30)
    returned = len(cloud.device_seqs(name))
    assert cloud.wait(lambda: len(cloud.device_seqs(name)) >= returned + 3, 20), "data again"


def _status_says_ready(rig: GatewayRig) -> None:
    doc = wait_status(rig.agent, lambda d: d["destinations"][rig.dialect]["ready"], 20)
    dest = doc["destinations"][rig.dialect]
    assert dest["dialect"] == rig.dialect
    assert dest["connected"] is True
    assert dest["pending_batches"] < 50
    assert rig.gate.refused() == []
    assert rig.gate.accepted >= 1


def test_thingsboard_devices_are_announced_with_their_profile_and_every_seq_arrives(
    tmp_path: Path,
) -> None:
    with GatewayRig(tmp_path, "thingsboard") as rig:
        cloud = rig.cloud
        assert isinstance(cloud, ThingsboardCloud)
        site = load_site(rig.agent.site_file, rig.agent.env)
        profiles = {d.id: f"{d.profile}@{d.profile_hash}" for d in site.devices}
        assert cloud.wait(lambda: all(len(cloud.device_seqs(n)) >= 5 for n in rig.names), 30)
        _status_says_ready(rig)
        assert cloud.types == profiles
        assert profiles["c1"].startswith("generic-counter@")
        for name in rig.names:
            attributes = cloud.attributes[name]
            assert attributes["profile"] == profiles[name]
            assert attributes["vendor"] == "edge-agent"
            assert attributes["last_error"] == ""
        _outage(rig, "c2", "disconnect", "connect")
        with cloud.lock:
            assert cloud.attributes["c2"]["last_error"] == ""  # cleared once it answers
            assert cloud.types["c2"] == profiles["c2"]
            announced = [e for e in cloud.events if e[0] == "connect" and e[1] == "c2"]
        assert len(announced) == 2
        judgement = rig.finish(allowed_missing=ERROR_ONLY_PER_OUTAGE)
        assert judgement.problems(ERROR_ONLY_PER_OUTAGE) == []
        assert judgement.duplicates == []
        # a clean stop disconnects every device
        assert cloud.wait(lambda: {("disconnect", n) for n in rig.names} <= set(cloud.events[-2:]))


def test_alink_binds_and_logs_in_before_posting_and_reads_the_reply_codes(
    tmp_path: Path,
) -> None:
    with GatewayRig(tmp_path, "alink") as rig:
        cloud = rig.cloud
        assert isinstance(cloud, AlinkCloud)
        subs = [rig.cloud_name(n) for n in rig.names]
        assert cloud.wait(lambda: all(len(cloud.device_seqs(n)) >= 5 for n in subs), 30)
        _status_says_ready(rig)
        with cloud.lock:
            kinds = [e[0] for e in cloud.events]
            assert kinds[:3] == ["topo", "login", "login"], cloud.events[:5]
            assert cloud.events[0][1:] == tuple(subs)
            assert cloud.not_logged_in == []
            assert cloud.errors == []
        connect = rig.gate.connects[0]
        assert connect.username == "gw01&a1GWpk0001"
        assert connect.client_id.startswith("a1GWpk0001.gw01|securemode=3,signmethod=hmacsha256,")

        _outage(rig, "c2", "logout", "login")
        assert cloud.logins[subs[1]] == 2
        assert cloud.logouts[subs[1]] == 1

        # 460: refused for its content: counted, acknowledged, never sent again
        before = rig.destination()["refused_by_cloud"]
        posts = len(cloud.posts)
        cloud.answer_next(460)
        assert cloud.wait(lambda: any(p.code == 460 for p in cloud.posts[posts:]), 20)
        refused = next(p for p in cloud.posts[posts:] if p.code == 460)
        values = sum(n for _, _, n in refused.samples)
        doc = wait_status(
            rig.agent, lambda d: d["destinations"]["alink"]["refused_by_cloud"] > before, 20
        )
        assert doc["destinations"]["alink"]["refused_by_cloud"] - before == values
        assert "460" in str(doc["destinations"]["alink"]["last_error"])
        refused_seqs = {s for _, s, _ in refused.samples}
        at = cloud.posts.index(refused)
        assert cloud.wait(lambda: len(cloud.posts) > at + 10, 20)
        with cloud.lock:
            later = {s for p in cloud.posts[at + 1 :] for _, s, _ in p.samples}
        assert refused_seqs.isdisjoint(later), "a refused batch was sent again"

        # 429: throttled: the link is dropped, the post is sent again and accepted
        reconnects = rig.destination()["reconnects"]
        posts = len(cloud.posts)
        cloud.answer_next(429)
        assert cloud.wait(lambda: any(p.code == 429 for p in cloud.posts[posts:]), 20)
        throttled = next(p for p in cloud.posts[posts:] if p.code == 429)
        wanted = {(d, s) for d, s, _ in throttled.samples}
        at = cloud.posts.index(throttled)
        assert cloud.wait(
            lambda: (
                wanted
                <= {(d, s) for p in cloud.posts[at + 1 :] if p.code == 200 for d, s, _ in p.samples}
            ),
            30,
        ), "a throttled post was not sent again"
        wait_status(rig.agent, lambda d: d["destinations"]["alink"]["reconnects"] > reconnects)
        assert rig.gate.accepted >= 2
        assert cloud.kinds("topo")[-1][1:] == tuple(subs)  # the new connection binds again

        judgement = rig.finish(allowed_missing=ERROR_ONLY_PER_OUTAGE)
        assert judgement.problems(ERROR_ONLY_PER_OUTAGE) == []
        assert cloud.not_logged_in == []
        # a clean stop logs every sub-device out
        assert cloud.wait(lambda: {("logout", n) for n in subs} <= set(cloud.events[-2:]))


def test_iotda_reports_sub_device_status_and_every_seq_arrives(tmp_path: Path) -> None:
    with GatewayRig(tmp_path, "iotda") as rig:
        cloud = rig.cloud
        assert isinstance(cloud, IotdaCloud)
        subs = [rig.cloud_name(n) for n in rig.names]
        assert cloud.wait(lambda: all(len(cloud.device_seqs(n)) >= 5 for n in subs), 30)
        _status_says_ready(rig)
        with cloud.lock:
            assert [e[0] for e in cloud.events[:2]] == ["status", "status"]
            assert {e[1:] for e in cloud.events[:2]} == {(n, "ONLINE") for n in subs}
        connect = rig.gate.connects[0]
        hour = time.strftime("%Y%m%d%H", time.gmtime(connect.at_ms / 1000))
        assert connect.client_id == f"prod_gw01_0_0_{hour}"

        _outage(rig, "c2", "status", "status")
        assert cloud.statuses[subs[1]][-2:] == ["OFFLINE", "ONLINE"]
        assert cloud.status(subs[0]) == "ONLINE"
        judgement = rig.finish(allowed_missing=ERROR_ONLY_PER_OUTAGE)
        assert judgement.problems(ERROR_ONLY_PER_OUTAGE) == []
        assert judgement.duplicates == []
        assert judgement.errors == []
        # a clean stop says OFFLINE for every sub-device
        assert cloud.wait(lambda: all(cloud.statuses[n][-1] == "OFFLINE" for n in subs), 10)


@pytest.mark.parametrize("dialect", ["alink", "iotda"])
def test_a_wrong_secret_is_refused_at_connect_and_nothing_is_sent(
    tmp_path: Path, dialect: str
) -> None:
    """The gate is a real check: the documented signature with another secret fails."""
    with GatewayRig(tmp_path, dialect, start_agent=False) as rig:  # type: ignore[arg-type]
        rig.agent.env["ALI_GW_SECRET" if dialect == "alink" else "HW_GW_SECRET"] = "not-it"
        rig.agent.start()
        assert rig.cloud.wait(lambda: len(rig.gate.refused()) >= 2, 20)
        doc = rig.agent.status()["destinations"][dialect]
        assert doc["connected"] is False
        assert rig.gate.accepted == 0
        assert rig.cloud.seqs() == set()
        assert "password" in rig.gate.refused()[0].refused  # type: ignore[operator]


def test_a_default_mosquitto_carries_topics_starting_with_a_dollar_except_sys(
    tmp_path: Path,
) -> None:
    """IoTDA's topics start with ``$oc/``: a stock Mosquitto passes them on (only
    ``$SYS/`` is refused), to a ``$oc/...`` filter but never to ``#``."""
    with (
        Mosquitto(tmp_path / "broker") as broker,
        Subscriber(broker.port, "$oc/devices/#") as dollar,
        Subscriber(broker.port, "#") as everything,
    ):
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="dollar-publisher")
        client.connect("127.0.0.1", broker.port)
        client.loop_start()
        try:
            for topic in ("$oc/devices/gw/sys/events/up", "$SYS/edge", "plain/topic"):
                client.publish(topic, b"x", qos=1).wait_for_publish(5)
            everything.wait_for(lambda got: any(m.topic == "plain/topic" for m in got), 10)
            dollar.wait_for(lambda got: len(got) >= 1, 10)
        finally:
            client.loop_stop()
            client.disconnect()
    assert [m.topic for m in dollar.messages] == ["$oc/devices/gw/sys/events/up"]
    assert [m.topic for m in everything.messages] == ["plain/topic"]
    log = broker.log_text()
    assert "Denied PUBLISH" in log
    assert "'$SYS/edge'" in log
