"""Tables: topics, seq and bdSeq rules, alias stability, datatypes, nulls, QoS."""

from __future__ import annotations

import pytest

from agent.errors import DialectError
from agent.north.sparkplug import sparkplug_b_pb2 as pb
from agent.north.sparkplug.encode import (
    QUALITY,
    EdgeSession,
    TagSpec,
    parse_command,
    state_topic,
    topic,
)
from agent.north.sparkplug.metrics import datatype_of, get_value, set_value, value_field
from drivers.base import Reading


@pytest.mark.parametrize(
    ("kind", "device", "expected"),
    [
        ("NBIRTH", None, "spBv1.0/g/NBIRTH/n"), ("NDEATH", None, "spBv1.0/g/NDEATH/n"),
        ("NDATA", None, "spBv1.0/g/NDATA/n"), ("NCMD", None, "spBv1.0/g/NCMD/n"),
        ("DBIRTH", "d", "spBv1.0/g/DBIRTH/n/d"), ("DDEATH", "d", "spBv1.0/g/DDEATH/n/d"),
        ("DDATA", "d", "spBv1.0/g/DDATA/n/d"), ("DCMD", "d", "spBv1.0/g/DCMD/n/d"),
    ],
)  # fmt: skip
def test_topics(kind: str, device: str | None, expected: str) -> None:
    assert topic("g", kind, "n", device) == expected


@pytest.mark.parametrize(
    ("kind", "node", "device"),
    [("DDATA", "n", None), ("NDATA", "n", "d"), ("STATE", "n", None), ("NDATA", "a/b", None),
     ("NDATA", "a+", None), ("DDATA", "n", "#"), ("NDATA", "", None)],
)  # fmt: skip
def test_bad_topics_are_refused(kind: str, node: str, device: str | None) -> None:
    with pytest.raises(DialectError):
        topic("g", kind, node, device)


def test_state_topic() -> None:
    assert state_topic("scada") == "spBv1.0/STATE/scada"


def _seq(data: bytes) -> int | None:
    payload = pb.Payload()
    payload.ParseFromString(data)
    return payload.seq if payload.HasField("seq") else None


def _bd_seq(data: bytes) -> int:
    payload = pb.Payload()
    payload.ParseFromString(data)
    (metric,) = [m for m in payload.metrics if m.name == "bdSeq"]
    return metric.long_value


def test_seq_counts_every_message_and_wraps_255_to_0() -> None:
    session = EdgeSession("g", "n")
    session.will(0)
    assert _seq(session.nbirth(0).payload) == 0
    seqs = [_seq(session.dbirth("d", [TagSpec("x")], 0, Reading(0, {"x": 1})).payload)]
    seqs += [_seq(session.ddata("d", [Reading(i, {"x": i})], i, i).payload) for i in range(256)]
    seqs.append(_seq(session.ddeath("d", 0).payload))
    assert seqs[:2] == [1, 2]
    assert seqs[254:258] == [255, 0, 1, 2]
    assert _seq(session.nbirth(1).payload) == 0  # a rebirth restarts it
    assert _seq(session.ndeath(1).payload) is None


def test_bd_seq_follows_connects_and_wraps() -> None:
    session = EdgeSession("g", "n", next_bd_seq=254)
    wills = [session.will(0) for _ in range(3)]
    assert [_bd_seq(w.payload) for w in wills] == [254, 255, 0]
    assert _bd_seq(session.nbirth(0).payload) == 0  # the birth matches the last Will
    assert session.next_bd_seq == 1
    assert (wills[0].qos, wills[0].retain, wills[0].topic) == (1, False, "spBv1.0/g/NDEATH/n")


def test_every_edge_message_is_qos0_not_retained() -> None:
    session = EdgeSession("g", "n")
    session.will(0)
    out = [session.nbirth(0), session.dbirth("d", [TagSpec("x")], 0, Reading(0, {"x": 1}))]
    out += [session.ddata("d", [Reading(0, {"x": 2})], 0, 1), session.ddeath("d", 0)]
    assert {(o.qos, o.retain) for o in out} == {(0, False)}


def _aliases(data: bytes) -> dict[str, int]:
    payload = pb.Payload()
    payload.ParseFromString(data)
    return {m.name: m.alias for m in payload.metrics}


def test_aliases_are_unique_per_node_and_stable_for_the_session() -> None:
    session = EdgeSession("g", "n")
    session.will(0)
    session.nbirth(0)
    tags = [TagSpec("a", "Int32"), TagSpec("b", "Int32")]
    first = _aliases(session.dbirth("d1", tags, 0).payload)
    other = _aliases(session.dbirth("d2", tags, 0).payload)
    assert set(first.values()).isdisjoint(other.values())
    session.ddeath("d1", 0)
    session.will(0)
    session.nbirth(0)
    assert _aliases(session.dbirth("d1", tags, 0).payload) == first


@pytest.mark.parametrize(
    ("declared", "value", "datatype", "field"),
    [
        (None, True, pb.Boolean, "boolean_value"), (None, 5, pb.Int64, "long_value"),
        (None, 1.5, pb.Double, "double_value"), (None, "x", pb.String, "string_value"),
        ("Int8", -1, pb.Int8, "int_value"), ("Int16", -87, pb.Int16, "int_value"),
        ("UInt16", 65535, pb.UInt16, "int_value"), ("UInt32", 2**32 - 1, pb.UInt32, "int_value"),
        ("Int32", -(2**31), pb.Int32, "int_value"), ("UInt64", 2**64 - 1, pb.UInt64, "long_value"),
        ("Int64", -5, pb.Int64, "long_value"), ("Float", 2.5, pb.Float, "float_value"),
        ("Double", 3, pb.Double, "double_value"), ("Text", "t", pb.Text, "string_value"),
    ],
)  # fmt: skip
def test_datatypes_round_trip(
    declared: str | None, value: bool | int | float | str, datatype: int, field: str
) -> None:
    assert datatype_of(declared, value) == datatype
    metric = pb.Payload.Metric(datatype=datatype)
    set_value(metric, datatype, value)
    assert metric.WhichOneof("value") == field
    back = pb.Payload.Metric()
    back.ParseFromString(metric.SerializeToString())
    assert get_value(back) == value


def test_int16_minus_87_is_sign_extended_to_32_bits() -> None:
    metric = pb.Payload.Metric(datatype=pb.Int16)
    set_value(metric, pb.Int16, -87)
    assert metric.int_value == 0xFFFFFFA9


@pytest.mark.parametrize(
    ("declared", "value"),
    [("Int8", 128), ("UInt8", -1), ("Int16", 1.5), ("Boolean", 1), ("String", 3),
     ("Int64", True), ("Double", float("nan")), ("Int32", "7")],
)  # fmt: skip
def test_values_that_do_not_fit_are_refused(declared: str, value: bool | int | float | str) -> None:
    datatype = datatype_of(declared, value)
    with pytest.raises(DialectError):
        set_value(pb.Payload.Metric(), datatype, value)


@pytest.mark.parametrize(
    ("declared", "value"),
    [("Int8", -128), ("Int8", 128), ("UInt8", 255), ("UInt8", -1), ("Int16", -87),
     ("Int16", 1.5), ("UInt64", 2**64 - 1), ("UInt64", 2**64), ("Int64", -(2**63)),
     ("Int64", True), ("DateTime", 0), ("DateTime", -1), ("Int32", "7"), ("Boolean", 1),
     ("Boolean", False), ("Float", 2), ("Double", float("inf")), ("String", 3), ("UUID", "u")],
)  # fmt: skip
def test_value_field_answers_what_set_value_does(
    declared: str, value: bool | int | float | str
) -> None:
    datatype = pb.DataType.Value(declared)
    metric = pb.Payload.Metric()
    try:
        set_value(metric, datatype, value)
    except DialectError as exc:
        with pytest.raises(DialectError, match=str(exc).replace("(", r"\(").replace(")", r"\)")):
            value_field(datatype, value)
        return
    name, wire = value_field(datatype, value)
    assert name == metric.WhichOneof("value")
    assert wire == getattr(metric, name)
    assert type(wire) is type(getattr(metric, name))


def test_a_refused_ddata_takes_no_seq() -> None:
    session = EdgeSession("g", "n")
    session.will(0)
    session.nbirth(0)
    session.dbirth("d", [TagSpec("a", "Int8"), TagSpec("b", "Int8")], 0)  # seq 1
    with pytest.raises(DialectError, match="does not fit Int8"):
        session.ddata("d", [Reading(5, {"a": 1, "b": 300})], 6, 1)
    out = session.ddata("d", [Reading(5, {"a": 1, "b": 2})], 6, 1)
    assert _seq(out.payload) == 2


@pytest.mark.parametrize("declared", ["DataSet", "Int8Array", "Nope"])
def test_non_scalar_datatypes_are_refused(declared: str) -> None:
    with pytest.raises(DialectError):
        datatype_of(declared, 1)


def test_a_tag_error_is_a_null_metric_with_bad_quality() -> None:
    session = EdgeSession("g", "n")
    session.will(0)
    session.nbirth(0)
    session.dbirth("d", [TagSpec("t", "Float")], 0)  # no value yet: null, no quality
    out = session.ddata("d", [Reading(5, {}, {"t": "timeout"})], 6, 1)
    payload = pb.Payload()
    payload.ParseFromString(out.payload)
    metric = payload.metrics[1]
    assert metric.is_null
    assert metric.WhichOneof("value") is None
    assert metric.datatype == pb.Float
    assert list(metric.properties.keys) == [QUALITY, "edgeError"]


def test_data_for_a_tag_not_born_is_refused() -> None:
    session = EdgeSession("g", "n")
    session.will(0)
    session.nbirth(0)
    session.dbirth("d", [TagSpec("t", "Float")], 0)
    with pytest.raises(DialectError, match="not in its DBIRTH"):
        session.ddata("d", [Reading(5, {"other": 1})], 6, 1)
    with pytest.raises(DialectError, match="no DBIRTH"):
        session.ddata("x", [Reading(5, {"t": 1.0})], 6, 1)


def test_nothing_before_will_and_nbirth() -> None:
    session = EdgeSession("g", "n")
    with pytest.raises(DialectError, match="no Will"):
        session.nbirth(0)
    session.will(0)
    with pytest.raises(DialectError, match="no NBIRTH"):
        session.dbirth("d", [TagSpec("t", "Float")], 0)


def test_ncmd_rebirth_by_name_or_by_alias() -> None:
    session = EdgeSession("g", "n")
    session.will(0)
    session.nbirth(0)
    by_alias = pb.Payload(timestamp=1)
    by_alias.metrics.add(alias=1, datatype=pb.Boolean, boolean_value=True)
    assert session.parse_ncmd(by_alias.SerializeToString()).rebirth
    named = pb.Payload(timestamp=1)
    named.metrics.add(name="Node Control/Rebirth", datatype=pb.Boolean, boolean_value=False)
    named.metrics.add(name="setpoint", datatype=pb.Int16, int_value=0xFFFFFFFF)
    command = parse_command(named.SerializeToString())
    assert not command.rebirth
    assert command.writes == {"setpoint": -1}


def test_garbage_commands_are_refused() -> None:
    with pytest.raises(DialectError, match="not a Sparkplug B payload"):
        parse_command(b"\xff\xff\xff")
    unknown = pb.Payload()
    unknown.metrics.add(alias=99, datatype=pb.Boolean, boolean_value=True)
    with pytest.raises(DialectError, match="unknown alias"):
        parse_command(unknown.SerializeToString())
