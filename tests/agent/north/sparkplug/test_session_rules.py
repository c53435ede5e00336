"""SparkplugSession rules without a broker: cuts, refusals, STATE order, the bdSeq file."""

from __future__ import annotations

import json
from pathlib import Path

from agent.north.destination import SparkplugOptions
from agent.north.dialects.common import Batch
from agent.north.session import DeviceFacts
from agent.north.sparkplug import sparkplug_b_pb2 as pb
from agent.north.sparkplug.encode import TagSpec
from agent.north.sparkplug.session import SparkplugSession, load_next_bd_seq
from drivers.base import Reading
from tests.agent.north.sparkplug.host import Host

NOW = 1_764_270_000_000
FACTS = {"m1": DeviceFacts("m1", "p@1", tags=(TagSpec("small", "Int8"),))}


def _session(tmp_path: Path, **kw: object) -> SparkplugSession:
    opts = SparkplugOptions(group_id="g", edge_node_id="n", state_file=tmp_path / "bd", **kw)  # type: ignore[arg-type]
    return SparkplugSession(opts, "agent", FACTS, max_message_size=2048)


def _born(session: SparkplugSession, host: Host) -> None:
    will = session.will(NOW)
    assert will.qos == 1
    assert not will.retain
    for out in session.on_connect(NOW):
        host.receive(out.topic, out.payload)


def test_a_large_batch_is_cut_below_the_limit_and_the_last_packet_finishes_it(
    tmp_path: Path,
) -> None:
    session, host = _session(tmp_path), Host()
    _born(session, host)
    readings = [Reading(NOW + i, {f"t{j}": "x" * 40 for j in range(10)}) for i in range(20)]
    encoded = session.encode([Batch(7, "m1", readings)], NOW, historical=False)
    assert len(encoded.packets) > 3
    assert all(len(p.payload) + len(p.topic) + 9 <= 2048 for p in encoded.packets)
    assert [p.done for p in encoded.packets][-1] == (7,)
    assert all(p.done == () for p in encoded.packets[:-1])
    for p in encoded.packets:
        host.receive(p.topic, p.payload)  # a DBIRTH for the new tags first, then aliases only
    assert len([v for k, v in host.values.items() if k[0] == "m1" and k[1].startswith("t")]) == 10


def test_a_value_its_datatype_cannot_carry_is_a_bad_null_and_refused(tmp_path: Path) -> None:
    session, host = _session(tmp_path), Host()
    _born(session, host)
    encoded = session.encode(
        [Batch(1, "m1", [Reading(NOW, {"small": 300})])], NOW, historical=False
    )
    assert [(r.seq, r.device) for r in encoded.refused] == [(1, "m1")]
    assert "Int8" in encoded.refused[0].reason
    (ddata,) = encoded.packets
    payload = pb.Payload()
    payload.ParseFromString(ddata.payload)
    assert [m.is_null for m in payload.metrics] == [False, True]  # edge/seq, then the null
    assert ddata.done == (1,)


def test_a_refused_value_is_not_born_later_as_the_current_value(tmp_path: Path) -> None:
    session, host = _session(tmp_path), Host()
    _born(session, host)
    encoded = session.encode(
        [Batch(1, "m1", [Reading(NOW, {"small": 300})]),
         Batch(2, "m1", [Reading(NOW + 1, {"new": 5})])],  # a new tag: DBIRTH again
        NOW, historical=False,
    )  # fmt: skip
    for p in encoded.packets:
        host.receive(p.topic, p.payload)
    assert [p.done for p in encoded.packets if p.done] == [(1,), (2,)]
    dbirth = pb.Payload()
    dbirth.ParseFromString(encoded.packets[1].payload)
    small = next(m for m in dbirth.metrics if m.name == "small")
    assert small.is_null  # born as the bad null that was sent, not as 300
    assert "Int8" in small.properties.values[1].string_value
    for out in session.on_connect(NOW + 2):  # a reconnect births it the same way
        host.receive(out.topic, out.payload)


def test_fit_and_unfit_batches_in_a_row_keep_the_seq_and_count_each_refusal(
    tmp_path: Path,
) -> None:
    session, host = _session(tmp_path), Host()
    _born(session, host)
    batches = [
        Batch(1, "m1", [Reading(NOW, {"small": 1})]),
        Batch(2, "m1", [Reading(NOW + 1, {"small": 300})]),  # does not fit: a bad null
        Batch(3, "m1", [Reading(NOW + 2, {"small": 2, "big": "x" * 3000})]),  # too large
        Batch(4, "m1", [Reading(NOW + 3 + i, {"small": i, "s": "y" * 100}) for i in range(30)]),
        Batch(5, "m1", [Reading(NOW + 40, {"small": 3})]),
    ]
    encoded = session.encode(batches, NOW, historical=True)
    for p in encoded.packets:
        host.receive(p.topic, p.payload)  # a seq gap would raise RebirthNeeded
    assert [p.done for p in encoded.packets if p.done] == [(1,), (2,), (3,), (4,), (5,)]
    assert [(r.seq, "Int8" in r.reason or "too large" in r.reason) for r in encoded.refused] == [
        (2, True),
        (3, True),
    ]
    assert host.history[-1][:3] == ("m1", "small", 3)  # historical: a backlog


def test_a_stale_offline_state_is_ignored_a_newer_one_asks_for_a_new_connection(
    tmp_path: Path,
) -> None:
    session = _session(tmp_path, primary_host="scada")
    topic = "spBv1.0/STATE/scada"
    session.will(NOW)
    assert not session.ready()
    online = session.on_message(topic, json.dumps({"online": True, "timestamp": 10}).encode(), NOW)
    assert online.ready_changed
    assert session.ready()
    session.on_connect(NOW)
    stale = session.on_message(topic, b'{"online": false, "timestamp": 9}', NOW)
    assert not stale.reconnect
    assert session.ready()
    bad = session.on_message(topic, b"OFFLINE", NOW)
    assert bad.note is not None
    assert session.ready()
    gone = session.on_message(topic, b'{"online": false, "timestamp": 11}', NOW)
    assert gone.reconnect
    assert not session.ready()


def test_dcmd_and_unknown_ncmd_metrics_are_noted_not_acted_on(tmp_path: Path) -> None:
    session = _session(tmp_path)
    session.will(NOW)
    session.on_connect(NOW)
    command = pb.Payload(timestamp=NOW)
    command.metrics.add(name="Node Control/Reboot", datatype=pb.Boolean, boolean_value=True)
    reaction = session.on_message("spBv1.0/g/NCMD/n", command.SerializeToString(), NOW)
    assert not reaction.rebirth
    assert "Node Control/Reboot" in (reaction.note or "")
    reaction = session.on_message("spBv1.0/g/DCMD/n/m1", command.SerializeToString(), NOW)
    assert "DCMD for m1 ignored" in (reaction.note or "")


def test_the_bd_seq_file_is_read_back_and_a_bad_one_starts_at_0(tmp_path: Path) -> None:
    session = _session(tmp_path)
    assert [session.will(NOW) is not None, session.bd_seq] == [True, 0]
    assert load_next_bd_seq(tmp_path / "bd") == 1
    assert not (tmp_path / "bd.tmp").exists()
    (tmp_path / "bd").write_text("255\n")
    again = _session(tmp_path)
    again.will(NOW)
    assert again.bd_seq == 255
    assert load_next_bd_seq(tmp_path / "bd") == 0
    (tmp_path / "bd").write_text("junk")
    assert load_next_bd_seq(tmp_path / "bd") == 0


def test_the_outage_reading_after_a_ddeath_is_not_a_birth_and_a_second_death(
    tmp_path: Path,
) -> None:
    """A device stops answering: the DDEATH goes out at once, its all-bad reading after it.

    That reading says nothing the DDEATH did not: it is acknowledged without a
    packet, never a DBIRTH (the device alive again) followed by a second DDEATH.
    """
    session, host = _session(tmp_path), Host()
    _born(session, host)
    first = session.encode([Batch(1, "m1", [Reading(NOW, {"small": 5})])], NOW, historical=False)
    for p in first.packets:
        host.receive(p.topic, p.payload)
    for out in session.device_state("m1", False, NOW + 1):
        host.receive(out.topic, out.payload)
    assert "m1" not in host.nodes[("g", "n")].devices
    bad = Reading(NOW + 1, {}, {"small": "timeout"})
    encoded = session.encode([Batch(2, "m1", [bad])], NOW + 1, historical=False)
    assert (encoded.packets, encoded.idle) == ((), (2,))
    # back: its DBIRTH shows the tag as bad (the last reading), its next data as it is
    births = session.device_state("m1", True, NOW + 2)
    for out in births:
        host.receive(out.topic, out.payload)
    (birth,) = births
    payload = pb.Payload()
    payload.ParseFromString(birth.payload)
    assert [m.is_null for m in payload.metrics if m.name == "small"] == [True]
    data = session.encode([Batch(3, "m1", [Reading(NOW + 3, {"small": 6})])], NOW, historical=False)
    for p in data.packets:
        host.receive(p.topic, p.payload)
    assert host.values[("m1", "small")] == 6


def test_data_of_a_device_gone_still_goes_out_between_a_birth_and_a_death(
    tmp_path: Path,
) -> None:
    """A backlog with values, encoded after its device's DDEATH, is sent (and it stays gone)."""
    session, host = _session(tmp_path), Host()
    _born(session, host)
    session.encode([Batch(1, "m1", [Reading(NOW, {"small": 5})])], NOW, historical=False)
    session.device_state("m1", False, NOW + 1)
    late = session.encode([Batch(2, "m1", [Reading(NOW, {"small": 7})])], NOW, historical=True)
    kinds = [p.topic.split("/")[2] for p in late.packets]
    assert kinds == ["DBIRTH", "DDATA", "DDEATH"]
    assert late.idle == ()
