"""The DDATA written directly (``EdgeSession.ddata``) against the runtime's (``ddata_pb``)."""

from __future__ import annotations

import copy
import random
import struct
from dataclasses import dataclass
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.north.sparkplug import sparkplug_b_pb2 as pb
from agent.north.sparkplug.encode import QUALITY_BAD, EdgeSession, Outgoing, TagSpec
from agent.north.sparkplug.metrics import INT_RANGES
from agent.north.sparkplug.wire import varint
from drivers.base import Reading
from tests.support.tahu import Decode

KINDS = [
    "Int8", "Int16", "Int32", "Int64", "UInt8", "UInt16", "UInt32", "UInt64",
    "Float", "Double", "Boolean", "String", "DateTime", "Text",
]  # fmt: skip
TAGS = [TagSpec(f"{kind.lower()}_{n}", kind) for kind in KINDS for n in range(2)]
RANGES = {k: INT_RANGES[pb.DataType.Value(k)] for k in KINDS if pb.DataType.Value(k) in INT_RANGES}
NOW = 1_764_270_000_123


def _session() -> tuple[EdgeSession, bytes]:
    session = EdgeSession("plant", "box-1")
    session.will(NOW)
    session.nbirth(NOW)
    return session, session.dbirth("m1", TAGS, NOW).payload


PROTOTYPE, DBIRTH = _session()


def _fit(kind: str) -> st.SearchStrategy[Any]:
    """Values the tag carries."""
    if kind in RANGES:
        low, high = RANGES[kind]
        return st.integers(low, high) | st.sampled_from([low, high, 0, 127, 128, 16383, 16384])
    if kind in ("Float", "Double"):
        return st.floats(allow_nan=False, allow_infinity=False, width=32 if kind == "Float" else 64)
    if kind == "Boolean":
        return st.booleans()
    return st.text(max_size=140)  # long enough for a metric of more than 127 bytes


def _odd(kind: str) -> st.SearchStrategy[Any]:
    """Values the tag refuses, or that the fast path leaves to the runtime."""
    if kind in RANGES:
        low, high = RANGES[kind]
        return st.sampled_from([low - 1, high + 1, True, 1.5, "7"])
    if kind in ("Float", "Double"):
        return st.sampled_from([float("nan"), float("inf"), 3, 10**400, 1e300, True, "x"])
    if kind == "Boolean":
        return st.sampled_from([0, 1, "true", None])
    return st.sampled_from(["\ud800", 5, b"x", None])


def _value(kind: str) -> st.SearchStrategy[Any]:
    # mostly fit; one in 25 odd, so most batches are sent, not refused
    return st.integers(0, 24).flatmap(lambda r: _odd(kind) if r == 0 else _fit(kind))


@st.composite
def readings(draw: st.DrawFn) -> Reading:
    names = draw(st.lists(st.sampled_from(TAGS), max_size=12, unique=True))
    values = {spec.name: draw(_value(str(spec.datatype))) for spec in names}
    if draw(st.integers(0, 3)) == 0:  # errors, some on a tag that also has a value
        failed = draw(st.lists(st.sampled_from([t.name for t in TAGS]), max_size=3, unique=True))
        errors = {name: draw(st.text(max_size=20)) for name in failed}
    else:
        errors = {}
    ts = draw(st.integers(0, 2**64 - 1) | st.sampled_from([0, NOW, NOW - 3_600_000]))
    if draw(st.integers(0, 40)) == 0:
        ts = draw(st.sampled_from([-1, 2**64]))
    return Reading(ts, values, errors)


@dataclass
class Call:
    readings: list[Reading]
    now_ms: int
    edge_seq: int
    historical: bool


calls = st.builds(
    Call, st.lists(readings(), max_size=6), st.integers(0, 2**64 - 1) | st.just(NOW),
    st.integers(0, 2**40), st.booleans(),
)  # fmt: skip


def _run(
    session: EdgeSession, call: Call, *, reference: bool
) -> Outgoing | tuple[type[BaseException], str]:
    build = session.ddata_pb if reference else session.ddata
    try:
        return build("m1", call.readings, call.now_ms, call.edge_seq, historical=call.historical)
    except Exception as exc:
        return type(exc), str(exc)


def _parsed(data: bytes) -> pb.Payload:
    payload = pb.Payload()
    payload.ParseFromString(data)
    return payload


@settings(max_examples=400, deadline=None)
@given(st.lists(calls, min_size=1, max_size=4))
def test_the_written_ddata_is_the_runtime_message(batch: list[Call]) -> None:
    fast, ref = copy.deepcopy(PROTOTYPE), copy.deepcopy(PROTOTYPE)
    for call in batch:  # in turn on one session: the kept tag bytes are reused
        got, want = _run(fast, call, reference=False), _run(ref, call, reference=True)
        if isinstance(want, Outgoing):
            assert isinstance(got, Outgoing), got
            assert got.topic == want.topic
            assert (got.qos, got.retain) == (want.qos, want.retain)
            assert _parsed(got.payload) == _parsed(want.payload)
            assert got.payload == want.payload  # field order too: the runtime's bytes
        else:
            assert got == want  # refused alike: same error type and message
        assert fast.birth_mark("m1") == ref.birth_mark("m1")  # no seq taken by a refusal


def test_varint_matches_the_runtime() -> None:
    for n in [0, 1, 127, 128, 300, 16383, 16384, 2**32, 2**63, 2**64 - 1]:
        assert pb.Payload(seq=n).SerializeToString() == b"\x18" + varint(n)


def test_a_metric_of_more_than_127_bytes_has_a_two_byte_length() -> None:
    fast, ref = copy.deepcopy(PROTOTYPE), copy.deepcopy(PROTOTYPE)
    reading = [Reading(NOW, {"string_0": "x" * 300, "int8_0": -1})]
    got, want = fast.ddata("m1", reading, NOW, 1), ref.ddata_pb("m1", reading, NOW, 1)
    assert got.payload == want.payload
    assert _parsed(got.payload).metrics[1].string_value == "x" * 300


def _sample(rng: random.Random) -> list[Reading]:
    out = []
    for _ in range(rng.randint(1, 4)):
        values: dict[str, Any] = {}
        for spec in rng.sample(TAGS, rng.randint(1, 10)):
            kind = str(spec.datatype)
            if kind in RANGES:
                low, high = RANGES[kind]
                values[spec.name] = rng.choice([low, high, 0, rng.randint(low, high)])
            elif kind in ("Float", "Double"):
                values[spec.name] = rng.choice([0.0, -1.5, rng.uniform(-1e6, 1e6)])
            elif kind == "Boolean":
                values[spec.name] = rng.random() < 0.5
            else:
                values[spec.name] = rng.choice(["", "ok", "m³/h", "x" * 150])
        errors = {rng.choice(TAGS).name: "timeout"} if rng.random() < 0.3 else {}
        out.append(Reading(NOW - rng.randint(0, 10**9), values, errors))
    return out


def _expected(kind: str, value: Any) -> Any:
    """How Tahu's decoder shows a value: 64-bit integers as decimal strings, floats to float32."""
    if kind == "UInt32":
        # this decoder reads a UInt32 from long_value, where the Sparkplug 3.0
        # table and the agent put it in int_value: it shows none (the property
        # test above checks the value with the protobuf runtime)
        return None
    if kind in RANGES:
        return str(value) if kind in ("Int64", "UInt64", "DateTime") else value
    if kind == "Float":
        return struct.unpack("<f", struct.pack("<f", value))[0]
    return value


def test_tahu_reads_a_sample_of_written_ddata(tahu_decode: Decode) -> None:
    rng = random.Random(13)
    session, ref = copy.deepcopy(PROTOTYPE), copy.deepcopy(PROTOTYPE)
    by_alias = {m.alias: (m.name, pb.DataType.Name(m.datatype)) for m in _parsed(DBIRTH).metrics}
    sent: list[tuple[list[Reading], bool]] = []
    payloads = []
    for n in range(60):
        batch, historical = _sample(rng), n % 3 == 0
        payloads.append(session.ddata("m1", batch, NOW, n, historical=historical).payload)
        payloads.append(ref.ddata_pb("m1", batch, NOW, n, historical=historical).payload)
        sent.append((batch, historical))
    both = tahu_decode(payloads)
    decoded = both[::2]
    assert decoded == both[1::2]  # the runtime's DDATA reads the same
    assert len(decoded) == 60
    for n, ((batch, historical), message) in enumerate(zip(sent, decoded, strict=True)):
        assert message["seq"] == str((n + 1 + 1) % 256)  # NBIRTH 0, DBIRTH 1
        edge, *metrics = message["metrics"]
        assert (edge["type"], edge["value"]) == ("UInt64", str(n))
        want = [(reading, name) for reading in batch for name in [*reading.values, *reading.errors]]
        assert len(metrics) == len(want)
        for metric, (reading, name) in zip(metrics, want, strict=True):
            tag, kind = by_alias[int(metric["alias"])]
            assert tag == name
            assert metric["type"] == kind
            assert metric["timestamp"] == str(reading.ts)
            assert metric.get("isHistorical", False) is historical
            if name in reading.errors:
                assert metric["value"] is None
                assert metric["properties"]["Quality"]["value"] == QUALITY_BAD
                assert metric["properties"]["edgeError"]["value"] == reading.errors[name]
            else:
                assert metric["value"] == _expected(kind, reading.values[name]), (kind, metric)
