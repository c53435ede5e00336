"""The listener's Sparkplug decode against Eclipse Tahu's decoder, metric by metric."""

from __future__ import annotations

from typing import Any

from agent.north.decoding import Decoder
from agent.north.sparkplug.encode import EdgeSession
from drivers.base import Reading
from tests.agent.north.sparkplug.test_tahu import NOW, TAGS, VALUES
from tests.support.tahu import Decode


def _same(ours: dict[str, Any], tahu: dict[str, Any], name: str | None) -> None:
    """One metric: name (DDATA: resolved from the birth), alias, type, value, properties."""
    where = (name, ours, tahu)
    assert ours["name"] == name, where
    assert ours["alias"] == (int(tahu["alias"]) if "alias" in tahu else None), where
    assert ours["datatype"] == tahu["type"], where
    value = tahu.get("value")
    # Tahu gives 64-bit integers as strings; a float travels as a 32-bit float
    assert (str(ours["value"]) if isinstance(value, str) else ours["value"]) == value, where
    assert ours["is_historical"] == tahu.get("isHistorical", False), where
    props = {k: v["value"] for k, v in tahu.get("properties", {}).items()}
    assert ours["properties"] == props, where


def test_births_and_aliased_data_decode_as_tahu_reads_them(tahu_decode: Decode) -> None:
    session = EdgeSession("plant", "box-1", next_bd_seq=7)
    session.will(NOW)
    out = [
        session.nbirth(NOW),
        session.dbirth("m1", TAGS, NOW, Reading(NOW, VALUES), edge_seq=41),
        session.ddata("m1", [Reading(NOW + 1, {"speed_rpm": -87}, {"temp_c": "timeout"})], NOW, 42),
        session.ddata("m1", [Reading(NOW - 9, {"count": 2**40, "run": False})], NOW, 43,
                      historical=True),
    ]  # fmt: skip
    decoder = Decoder("sparkplug-b")
    ours = [decoder.decode(o.topic, o.payload).body for o in out]
    tahu = tahu_decode([o.payload for o in out])
    names: dict[str, str] = {}
    for mine, theirs in zip(ours, tahu, strict=True):
        assert str(mine["seq"]) == theirs["seq"]
        assert len(mine["metrics"]) == len(theirs["metrics"])
        for m, t in zip(mine["metrics"], theirs["metrics"], strict=True):
            if "name" in t and "alias" in t:
                names[t["alias"]] = t["name"]
            _same(m, t, t.get("name", names.get(t.get("alias", ""))))
    assert [m["name"] for m in ours[2]["metrics"]] == ["edge/seq", "speed_rpm", "temp_c"]
