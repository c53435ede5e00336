"""The listener against a real Mosquitto: messages published by a paho client, decoded lines."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.errors import PublishError
from agent.message import encode_event_parts, encode_message, splice_seq
from agent.north.decoding import Decoder, SeqTracker, covers, default_filters, minimal_filters
from agent.north.dialects.alink import AlinkGateway, SubDevice
from agent.north.dialects.common import Batch
from agent.north.dialects.iotda import IotdaGateway
from agent.north.dialects.iotda import SubDevice as IotdaSub
from agent.north.dialects.thingsboard import TbGateway
from agent.north.facts import batch_of_events
from agent.north.listen import Listener, ListenOptions, Summary, summary_lines
from agent.north.options import MqttOptions
from agent.north.sparkplug.encode import EdgeSession, Outgoing, TagSpec
from drivers.base import Reading
from tests.support import events as ev
from tests.support.mosquitto import HOST, Mosquitto, free_port

TS = 1_764_270_000_123


class Publisher:
    """A paho client on its own thread; each publish waits for its PUBACK."""

    def __init__(self, port: int) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-publisher")
        self.client.connect(HOST, port)
        self.client.loop_start()

    def send(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(10)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def publisher(mosquitto: Mosquitto) -> Iterator[Publisher]:
    p = Publisher(mosquitto.port)
    try:
        yield p
    finally:
        p.stop()


def _options(port: int, dialect: str = "edge-json", *filters: str) -> ListenOptions:
    mqtt_options = MqttOptions(host=HOST, port=port, client_id="test-listener", connect_timeout=5)
    return ListenOptions(mqtt=mqtt_options, dialect=dialect, filters=filters)


def _listen(
    port: int, send: Sequence[tuple[str, bytes]], publisher: Publisher, count: int,
    dialect: str = "edge-json", *, as_json: bool = False,
) -> tuple[list[str], Summary]:  # fmt: skip
    """Subscribe, publish ``send``, print until ``count`` messages (20 s at most)."""
    lines: list[str] = []
    listener = Listener(_options(port, dialect), lines.append, as_json=as_json)
    try:
        listener.connect()
        for topic, payload in send:
            publisher.send(topic, payload)
        summary = listener.run(count=count, timeout=20)
    finally:
        listener.close()
    assert summary.stopped == "count", lines
    return lines, summary


def _text(lines: list[str]) -> list[str]:
    """The lines without their time (``HH:MM:SS.mmm``)."""
    return [line.split("  ", 1)[1] for line in lines]


def _edge(seq: int, device: str = "motor-01") -> tuple[str, bytes]:
    reading = Reading(TS + seq, {"speed_rpm": 1480, "temp_c": 41.5}, {"current_a": "timeout"})
    return f"edge/box/{device}", encode_message("box", device, seq, [reading])


def test_edge_json_lines_name_the_values_and_warn_on_a_gap_and_a_duplicate(
    mosquitto: Mosquitto, publisher: Publisher
) -> None:
    send = [_edge(1), _edge(2), _edge(4), _edge(4), _edge(1, "pump")]
    lines, summary = _listen(mosquitto.port, send, publisher, count=5)
    assert _text(lines) == [
        "edge/box/motor-01  box/motor-01 seq=1 1 reading speed_rpm=1480 temp_c=41.5 "
        "current_a=ERROR(timeout)",
        "edge/box/motor-01  box/motor-01 seq=2 1 reading speed_rpm=1480 temp_c=41.5 "
        "current_a=ERROR(timeout)",
        "edge/box/motor-01  box/motor-01 seq=4 1 reading speed_rpm=1480 temp_c=41.5 "
        "current_a=ERROR(timeout)",
        "WARNING  box/motor-01: gap: seq 3 missing (1 batch)",
        "edge/box/motor-01  box/motor-01 seq=4 1 reading speed_rpm=1480 temp_c=41.5 "
        "current_a=ERROR(timeout)",
        "WARNING  box/motor-01: duplicate: seq 4 again",
        "edge/box/pump  box/pump seq=1 1 reading speed_rpm=1480 temp_c=41.5 "
        "current_a=ERROR(timeout)",
    ]
    motor = summary.devices[("box", "motor-01")]
    assert (motor.first, motor.last, motor.gaps, motor.missing, motor.duplicates) == (1, 4, 1, 1, 1)
    assert summary.messages == 5
    assert summary_lines(summary, False)[1:] == [
        "   box/motor-01: seq 1..4, 1 gap (1 missing), 1 duplicate",
        "   box/pump: seq 1..1, 0 gaps, 0 duplicates",
    ]


def test_events_messages_are_shown_with_their_values_and_their_seq_followed(
    mosquitto: Mosquitto, publisher: Publisher
) -> None:
    def events(seq: int, source: str, *batch: dict[str, object]) -> tuple[str, bytes]:
        head, tail = encode_event_parts("box", source, list(batch))
        return f"edge/box/events/{source}", splice_seq(head, seq, tail)

    send = [
        _edge(1),
        events(2, "press-01", ev.state("press-01", TS, "fault", reason="fault"),
               ev.count("press-01", "total", 42, 2, TS - 1000, TS)),
        events(3, "_box", ev.clock(TS, "unsynced")),
        events(5, "press-01", ev.alarm("press-01", "overcurrent", TS, active=True, ts=TS)),
    ]  # fmt: skip
    lines, summary = _listen(mosquitto.port, send, publisher, count=4)
    assert _text(lines)[1:] == [
        'edge/box/events/press-01  box/press-01 seq=2 2 events: state state="fault" '
        'state_reason="fault" mode="production"; count count_total=42',
        'edge/box/events/_box  box/_box seq=3 1 event: clock clock_state="unsynced"',
        "edge/box/events/press-01  box/press-01 seq=5 1 event: alarm alarm_overcurrent=true",
        "WARNING  box/press-01: gap: seq 3..4 missing (2 batches)",
    ]
    assert summary.devices[("box", "press-01")].last == 5


def test_the_gateways_own_data_and_alink_pack_events_are_shown() -> None:
    decoder = Decoder("auto")
    own = decoder.decode(
        "v1/devices/me/telemetry", b'[{"ts":1,"values":{"clock_state":"ok","edge_seq":9}}]'
    )
    assert own.summary == 'telemetry (gateway) edge_seq=9 clock_state="ok"'
    assert [(s.device, s.seq) for s in own.samples] == [("(gateway)", 9)]
    gateway = AlinkGateway("a1GW", "gw01", {"m": SubDevice("a1MC", "press-01")})
    batch = batch_of_events(4, "m", [ev.state("m", TS, "running")])
    box = batch_of_events(5, "_box", [ev.clock(TS, "ok")])
    packet = gateway.pack([batch, box], first_id=7).packets[0]
    shown = decoder.decode(packet.topic, packet.payload)
    assert shown.summary == (
        "a1GW/gw01 thing.event.property.pack.post id=7 (gateway) edge_seq=5 "
        'clock_state="ok" events: clock; a1MC/press-01 edge_seq=4 mode="production" '
        'state="running" state_reason="" events: state'
    )
    assert [(s.device, s.seq) for s in shown.samples] == [("(gateway)", 5), ("a1MC/press-01", 4)]


def _sparkplug_session() -> tuple[list[Outgoing], EdgeSession]:
    """NBIRTH, DBIRTH, DDATA edge/seq 5, (DDATA 6 made, never sent), DDATA 7 with a tag error."""
    s = EdgeSession("plant", "box")
    s.will(TS)
    tags = [TagSpec("speed_rpm", "Int16", "rpm"), TagSpec("temp_c", "Float")]
    sent = [
        s.nbirth(TS),
        s.dbirth("motor-01", tags, TS, Reading(TS, {"speed_rpm": 1480, "temp_c": 40.0})),
        s.ddata("motor-01", [Reading(TS + 1, {"speed_rpm": -87, "temp_c": 41.5})], TS, 5),
    ]
    s.ddata("motor-01", [Reading(TS + 2, {"speed_rpm": 1})], TS, 6)  # lost on the way
    sent.append(
        s.ddata("motor-01", [Reading(TS + 3, {"speed_rpm": 12}, {"temp_c": "timeout"})], TS, 7)
    )
    return sent, s


def test_sparkplug_ddata_names_come_from_the_births_and_gaps_are_seen(
    mosquitto: Mosquitto, publisher: Publisher
) -> None:
    sent, _ = _sparkplug_session()
    # another node whose births this listener never saw: its aliases stay numbers
    other = EdgeSession("plant", "late")
    other.will(TS)
    other.nbirth(TS)
    other.dbirth("valve", [TagSpec("open")], TS, Reading(TS, {"open": True}))
    unseen = other.ddata("valve", [Reading(TS, {"open": False})], TS, 9)
    send = [(o.topic, o.payload) for o in [*sent, unseen]]
    lines, summary = _listen(mosquitto.port, send, publisher, count=5, dialect="sparkplug-b")
    assert _text(lines) == [
        "spBv1.0/plant/NBIRTH/box  NBIRTH plant/box seq=0 bdSeq=0 Node Control/Rebirth=false",
        "spBv1.0/plant/DBIRTH/box/motor-01  DBIRTH plant/box/motor-01 seq=1 edge/seq=0 "
        "speed_rpm=1480 rpm temp_c=40.0",
        "spBv1.0/plant/DDATA/box/motor-01  DDATA plant/box/motor-01 seq=2 edge/seq=5 "
        "speed_rpm=-87 temp_c=41.5",
        "spBv1.0/plant/DDATA/box/motor-01  DDATA plant/box/motor-01 seq=4 edge/seq=7 "
        "speed_rpm=12 temp_c=null (timeout)",
        "WARNING  plant/box: gap: Sparkplug seq jumped from 2 to 4 (1 message missing)",
        "WARNING  plant/box/motor-01: gap: seq 6 missing (1 batch)",
        "spBv1.0/plant/DDATA/late/valve  DDATA plant/late/valve seq=2 "
        "alias 2 (no BIRTH seen)=9 alias 3 (no BIRTH seen)=false",
    ]
    node = summary.nodes["plant/box"]
    assert (node.messages, node.gaps, node.missing, node.bd_seq) == (4, 1, 1, 0)
    motor = summary.devices[("plant/box", "motor-01")]
    assert (motor.first, motor.last, motor.missing) == (5, 7, 1)
    assert ("plant/late", "valve") not in summary.devices  # no name: edge/seq is not known


def test_json_lines_carry_the_full_decode(mosquitto: Mosquitto, publisher: Publisher) -> None:
    sent, _ = _sparkplug_session()
    send = [(o.topic, o.payload) for o in sent]
    lines, summary = _listen(mosquitto.port, send, publisher, count=4, dialect="auto", as_json=True)
    objects = [json.loads(line) for line in lines]
    assert [o["type"] for o in objects] == ["message"] * 4 + ["warning"] * 2
    last = objects[3]
    assert (last["dialect"], last["kind"], last["sparkplug"]) == (
        "sparkplug-b", "DDATA", {"node": "plant/box", "seq": 4, "bdSeq": None},
    )  # fmt: skip
    metrics = {m["name"]: m for m in last["body"]["metrics"]}
    assert metrics["edge/seq"]["value"] == 7
    assert metrics["edge/seq"]["datatype"] == "UInt64"
    assert metrics["speed_rpm"]["value"] == 12
    assert metrics["temp_c"]["is_null"] is True
    assert metrics["temp_c"]["properties"] == {"Quality": -2147483136, "edgeError": "timeout"}
    assert last["samples"] == [{"source": "plant/box", "device": "motor-01", "seq": 7}]
    assert {(o["counter"], o["warning"], o["missing"]) for o in objects[4:]} == {
        ("sparkplug", "gap", 1), ("seq", "gap", 1),
    }  # fmt: skip
    end = json.loads(summary_lines(summary, True)[0])
    assert end["type"] == "summary"
    assert end["devices"] == [
        {"source": "plant/box", "device": "motor-01", "first": 5, "last": 7, "samples": 2,
         "gaps": 1, "missing": 1, "duplicates": 0, "late": 0},
    ]  # fmt: skip


def test_count_stops_after_that_many_messages(mosquitto: Mosquitto, publisher: Publisher) -> None:
    send = [_edge(seq) for seq in range(1, 6)]
    lines, summary = _listen(mosquitto.port, send, publisher, count=2)
    assert [line.split("  ")[2].split()[1] for line in lines] == ["seq=1", "seq=2"]
    assert summary.messages == 2
    assert summary_lines(summary, False)[0].endswith("(count reached)")


def test_timeout_stops_a_quiet_listener(mosquitto: Mosquitto) -> None:
    listener = Listener(_options(mosquitto.port), lambda line: None)
    try:
        # the status topic is one of the first; events have a level more
        assert listener.connect() == ("edge/+/+", "edge/+/events/+")
        summary = listener.run(timeout=0.3)
    finally:
        listener.close()
    assert (summary.stopped, summary.messages) == ("timeout", 0)
    assert 0.3 <= summary.seconds < 5


def test_an_unreachable_broker_is_one_sentence() -> None:
    port = free_port()  # nothing listens there
    listener = Listener(_options(port), lambda line: None)
    with pytest.raises(PublishError) as caught:
        listener.connect()
    listener.close()
    assert str(caught.value) == (
        f"cannot connect to broker {HOST}:{port}: connection refused "
        "(is it running, is the port right?)"
    )


def test_a_refused_password_says_which_options_to_check(tmp_path: Path) -> None:
    with Mosquitto(tmp_path / "broker", users={"box": "right"}) as broker:
        mqtt_options = MqttOptions(
            host=HOST, port=broker.port, client_id="l", username="box", password="wrong"
        )
        listener = Listener(ListenOptions(mqtt=mqtt_options), lambda line: None)
        with pytest.raises(PublishError) as caught:
            listener.connect()
        listener.close()
    assert str(caught.value) == (
        f"broker {HOST}:{broker.port} refused the connection: "
        "not authorised (check --username and --password-env)"
    )


def _cloud_messages() -> list[tuple[str, bytes]]:
    """Each cloud dialect's telemetry, as the pure encoders make it; seq 2 of TB sent twice."""
    readings = [Reading(TS, {"speed_rpm": 1480}), Reading(TS + 1000, {"speed_rpm": 1490})]
    batches = [Batch(1, "motor-01", readings[:1]), Batch(2, "motor-01", readings)]
    tb = TbGateway().pack(batches).packets
    alink = AlinkGateway("gwpk", "gw", {"motor-01": SubDevice("pk", "m1", "secret")})
    ali = alink.pack(batches, first_id=1).packets
    iot = IotdaGateway("gw-1", {"motor-01": IotdaSub("m1-id", "Motor")}).pack(batches).packets
    return [(p.topic, p.payload) for p in [*tb, tb[-1], *ali, *iot]]


def test_auto_guesses_the_cloud_dialects_by_topic_and_follows_edge_seq(
    mosquitto: Mosquitto, publisher: Publisher
) -> None:
    send = _cloud_messages()
    lines, summary = _listen(mosquitto.port, send, publisher, count=len(send), dialect="auto")
    text = _text(lines)
    assert text[0] == (
        "v1/gateway/telemetry  telemetry motor-01 3 samples edge_seq=1..2 speed_rpm=1480"
    )
    assert text[1] == text[0]  # the same packet again: every sample of it is a duplicate
    assert text[2:5] == [
        "WARNING  v1/gateway/motor-01: duplicate: seq 1 again, same content",
        "WARNING  v1/gateway/motor-01: duplicate: seq 2 again, same content",
        "WARNING  v1/gateway/motor-01: duplicate: seq 2 again, same content",
    ]
    alink_lines = [t for t in text if t.startswith("/sys/gwpk/gw/")]
    assert alink_lines[0].endswith(
        "thing.event.property.pack.post id=1 pk/m1 edge_seq=1 speed_rpm=1480"
    )
    iotda = [t for t in text if t.startswith("$oc/devices/gw-1/")]
    assert iotda == [
        "$oc/devices/gw-1/sys/gateway/sub_devices/properties/report  gw-1 report m1-id "
        "3 samples edge_seq=1..2 speed_rpm=1480"
    ]
    for key in [("gwpk/gw", "pk/m1"), ("gw-1", "m1-id")]:
        seqs = summary.devices[key]
        assert (seqs.first, seqs.last, seqs.gaps, seqs.duplicates) == (1, 2, 0, 0), key


def test_one_batch_over_several_messages_is_no_duplicate() -> None:
    """A cloud may carry one batch in several messages: same seq, other content."""
    decoder, tracker = Decoder("auto"), SeqTracker()
    warnings = []
    for topic, payload in _cloud_messages()[2:]:  # Alink: three posts for two batches; IoTDA
        warnings += tracker.observe(decoder.decode(topic, payload))
    assert warnings == []
    assert tracker.devices[("gwpk/gw", "pk/m1")].samples == 3


def test_undecodable_payloads_are_shown_not_fatal() -> None:
    decoder = Decoder("sparkplug-b")
    decoded = decoder.decode("spBv1.0/g/DDATA/n/d", b"\xff\xff\xff")
    assert decoded.kind == "undecodable"
    assert decoded.summary.startswith("not a Sparkplug B payload")
    assert (
        Decoder("edge-json")
        .decode("edge/a/b", b'{"v": 9}')
        .summary.startswith("not an edge-json message (unsupported message version v=9")
    )


@pytest.mark.parametrize(
    ("wide", "narrow", "expected"),
    [("#", "edge/+/+", True), ("edge/+/+", "edge/+/status", True),
     ("edge/+/status", "edge/+/+", False), ("#", "$oc/devices/#", False),
     ("+/#", "$oc/x", False), ("a/#", "a", True), ("a/+", "a/#", False)],
)  # fmt: skip
def test_covers(wide: str, narrow: str, expected: bool) -> None:
    assert covers(wide, narrow) is expected


def test_default_filters() -> None:
    assert default_filters("edge-json") == ("edge/+/+", "edge/+/events/+")
    assert default_filters("sparkplug-b") == ("spBv1.0/#",)
    assert default_filters("thingsboard") == ("v1/gateway/#", "v1/devices/me/telemetry")
    assert default_filters("alink") == ("/sys/#",)
    assert default_filters("iotda") == ("$oc/devices/#",)
    assert default_filters("auto") == ("#", "$oc/devices/#")
    assert minimal_filters(["a/b", "a/+", "a/b", "c"]) == ("a/+", "c")
