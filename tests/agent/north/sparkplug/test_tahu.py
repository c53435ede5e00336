"""Every payload kind, decoded by Eclipse Tahu's JavaScript decoder (independent code)."""

from __future__ import annotations

from agent.north.sparkplug.encode import QUALITY_BAD, EdgeSession, TagSpec
from drivers.base import Reading, Value
from tests.support.tahu import Decode

TAGS = [
    TagSpec("run", None), TagSpec("speed_rpm", "Int16", "rpm"), TagSpec("count", None),
    TagSpec("temp_c", "Float", "°C"), TagSpec("flow", None, "m³/h"), TagSpec("state"),
]  # fmt: skip
NOW = 1_764_270_000_123
VALUES: dict[str, Value] = {
    "run": True,
    "speed_rpm": -87,
    "count": 2**40,
    "temp_c": 21.5,
    "flow": 0.1,
    "state": "ok",
}


def _session() -> EdgeSession:
    session = EdgeSession("plant", "box-1", next_bd_seq=7)
    session.will(NOW)
    return session


def test_nbirth_and_ndeath_decode_with_the_same_bd_seq(tahu_decode: Decode) -> None:
    session = _session()
    death, birth = tahu_decode([session.ndeath(NOW).payload, session.nbirth(NOW + 1).payload])
    assert death == {
        "timestamp": str(NOW),
        "metrics": [{"name": "bdSeq", "type": "Int64", "value": "7", "timestamp": str(NOW)}],
    }
    assert birth["seq"] == "0"
    assert birth["timestamp"] == str(NOW + 1)
    assert birth["metrics"][0] == death["metrics"][0] | {"timestamp": str(NOW + 1)}
    rebirth = birth["metrics"][1]
    assert (rebirth["name"], rebirth["type"], rebirth["value"]) == (
        "Node Control/Rebirth", "Boolean", False,
    )  # fmt: skip


def test_dbirth_decodes_names_aliases_types_values_and_units(tahu_decode: Decode) -> None:
    session = _session()
    session.nbirth(NOW)
    out = session.dbirth("m1", TAGS, NOW + 5, Reading(NOW + 2, VALUES), edge_seq=41)
    (birth,) = tahu_decode([out.payload])
    assert birth["seq"] == "1"
    got = {m["name"]: m for m in birth["metrics"]}
    assert got["edge/seq"] == {
        "name": "edge/seq", "alias": "2", "type": "UInt64", "value": "41",
        "timestamp": str(NOW + 5),
    }  # fmt: skip
    expect = {
        "run": ("Boolean", True), "speed_rpm": ("Int16", -87), "count": ("Int64", str(2**40)),
        "temp_c": ("Float", 21.5), "flow": ("Double", 0.1), "state": ("String", "ok"),
    }  # fmt: skip
    for name, (kind, value) in expect.items():
        assert (got[name]["type"], got[name]["value"]) == (kind, value), name
        assert got[name]["timestamp"] == str(NOW + 2)
    assert [got[t.name]["alias"] for t in TAGS] == [str(n) for n in range(3, 9)]
    assert got["speed_rpm"]["properties"] == {"engUnit": {"type": "String", "value": "rpm"}}
    assert got["flow"]["properties"]["engUnit"]["value"] == "m³/h"
    assert "properties" not in got["run"]


def test_ddata_decodes_aliases_only_with_nulls_and_history(tahu_decode: Decode) -> None:
    session = _session()
    session.nbirth(NOW)
    session.dbirth("m1", TAGS, NOW, Reading(NOW, VALUES))
    live = session.ddata(
        "m1", [Reading(NOW + 1, {"speed_rpm": 1480}, {"temp_c": "timeout"})], NOW + 2, 42
    )
    old = session.ddata("m1", [Reading(NOW - 60_000, {"run": False})], NOW + 3, 43, historical=True)
    first, second = tahu_decode([live.payload, old.payload])
    assert (first["seq"], second["seq"]) == ("2", "3")
    assert all("name" not in m for m in first["metrics"] + second["metrics"])
    seq, speed, temp = first["metrics"]
    assert (seq["alias"], seq["value"]) == ("2", "42")
    assert speed == {"alias": "4", "type": "Int16", "value": 1480, "timestamp": str(NOW + 1)}
    assert temp["alias"] == "6"
    assert temp["value"] is None
    assert temp["properties"] == {
        "Quality": {"type": "Int32", "value": QUALITY_BAD},
        "edgeError": {"type": "String", "value": "timeout"},
    }
    _, run = second["metrics"]
    assert run == {
        "alias": "3", "type": "Boolean", "value": False, "isHistorical": True,
        "timestamp": str(NOW - 60_000),
    }  # fmt: skip


def test_ddeath_decodes_with_the_next_seq(tahu_decode: Decode) -> None:
    session = _session()
    session.nbirth(NOW)
    session.dbirth("m1", TAGS[:1], NOW, Reading(NOW, {"run": True}))
    (death,) = tahu_decode([session.ddeath("m1", NOW + 9).payload])
    assert death == {"timestamp": str(NOW + 9), "seq": "2", "metrics": []}
