"""A scripted Edge Node session fed to a spec-written host (``host.py``)."""

from __future__ import annotations

import pytest

from agent.north.sparkplug import sparkplug_b_pb2 as pb
from agent.north.sparkplug.encode import EdgeSession, Outgoing, TagSpec
from drivers.base import Reading
from tests.agent.north.sparkplug.host import Host, RebirthNeeded

TAGS = [TagSpec("speed_rpm", "Int32", "rpm"), TagSpec("temp_c", unit="°C")]


def _feed(host: Host, *messages: Outgoing) -> None:
    for message in messages:
        host.receive(message.topic, message.payload)


def _rebirth_request(session: EdgeSession) -> bytes:
    payload = pb.Payload(timestamp=9)
    payload.metrics.add(name="Node Control/Rebirth", datatype=pb.Boolean, boolean_value=True)
    return payload.SerializeToString()


def test_a_full_session_is_accepted_by_the_host() -> None:
    session, host = EdgeSession("plant", "box-1"), Host()
    will = session.will(1)
    _feed(host, session.nbirth(2), session.dbirth("m1", TAGS, 3, Reading(3, {"temp_c": 20.0})))
    _feed(host, session.ddata("m1", [Reading(4, {"speed_rpm": 1480})], 4, edge_seq=1))
    assert host.values[("m1", "speed_rpm")] == 1480
    assert host.values[("m1", "edge/seq")] == 1
    # the device drops out and comes back
    _feed(host, session.ddeath("m1", 5), session.dbirth("m1", TAGS, 6))
    _feed(host, session.ddata("m1", [Reading(7, {"temp_c": 21.5})], 7, edge_seq=2))
    assert host.values[("m1", "temp_c")] == 21.5
    # backlog goes to history, not to the live value
    _feed(host, session.ddata("m1", [Reading(1, {"temp_c": 1.0})], 8, 3, historical=True))
    assert host.values[("m1", "temp_c")] == 21.5
    assert ("m1", "temp_c", 1.0, 1) in host.history
    # the host asks for a rebirth: NBIRTH then every DBIRTH, seq from 0 again
    assert session.parse_ncmd(_rebirth_request(session)).rebirth
    _feed(host, session.nbirth(10), session.dbirth("m1", TAGS, 10))
    # enough DDATA to wrap seq 255 -> 0 (bounded: 300 messages)
    for i in range(300):
        _feed(host, session.ddata("m1", [Reading(11 + i, {"speed_rpm": i})], 11 + i, 4 + i))
    assert host.values[("m1", "speed_rpm")] == 299
    assert host.nodes[("plant", "box-1")].seq == (1 + 300) % 256
    # the Will fires: its bdSeq is the live NBIRTH's, so the host marks the node offline
    _feed(host, will)
    assert not host.nodes[("plant", "box-1")].online


def test_the_next_connect_s_birth_carries_the_next_bd_seq() -> None:
    session, host = EdgeSession("plant", "box-1"), Host()
    session.will(1)
    _feed(host, session.nbirth(2))
    stale_will = session.ndeath(3)
    session.will(4)  # reconnect: a new CONNECT, a new Will
    _feed(host, session.nbirth(5))
    assert host.nodes[("plant", "box-1")].bd_seq == 1
    _feed(host, stale_will)  # a late Will of the previous connection is not this session's death
    assert host.nodes[("plant", "box-1")].online


def test_a_skipped_seq_makes_the_host_ask_for_a_rebirth() -> None:
    session, host = EdgeSession("plant", "box-1"), Host()
    session.will(1)
    _feed(host, session.nbirth(2), session.dbirth("m1", TAGS, 3, Reading(3, {"temp_c": 2.0})))
    session.ddata("m1", [Reading(4, {"speed_rpm": 1})], 4, 1)  # lost on the way
    with pytest.raises(RebirthNeeded, match="seq gap"):
        _feed(host, session.ddata("m1", [Reading(5, {"speed_rpm": 2})], 5, 2))


def test_an_unknown_alias_makes_the_host_ask_for_a_rebirth() -> None:
    session, host = EdgeSession("plant", "box-1"), Host()
    session.will(1)
    _feed(host, session.nbirth(2), session.dbirth("m1", TAGS[:1], 3))
    other = EdgeSession("plant", "box-1")  # a second session's aliases, never born here
    other.will(1)
    other.nbirth(2)
    other.dbirth("m1", [TagSpec("x"), *TAGS], 3, Reading(3, {"x": 1, "temp_c": 0.0}))
    bad = other.ddata("m1", [Reading(4, {"temp_c": 1.0})], 4, 1)  # seq 2 matches, alias not
    with pytest.raises(RebirthNeeded, match="unknown alias"):
        _feed(host, bad)
