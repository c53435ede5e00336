"""Events as a machine's values (docs/EVENTS.md): the table, the births, empty batches."""

from __future__ import annotations

import pytest

from agent.message import encode_event_parts, splice_seq
from agent.north.destination import IotdaOptions, SparkplugOptions, ThingsboardOptions
from agent.north.dialects import iotda
from agent.north.dialects.common import Batch
from agent.north.dialects.iotda_session import IotdaSession
from agent.north.dialects.tb_session import TbSession
from agent.north.facts import event_values, events_batch, machine_tags
from agent.north.sparkplug.session import SparkplugSession
from agent.runtime.sessions import machine_facts
from tests.support.events import MACHINE, T0, machine_plan, state


def test_every_event_type_has_its_values() -> None:
    gap = {"type": "counter_gap", "id": "m/gap/total/9", "ts": T0 + 9000, "counter": "total",
           "from": T0, "to": T0 + 9000, "raw": 3}  # fmt: skip
    assert event_values(gap) == {"counter_gap_total_s": 9.0}
    assert event_values({"type": "clock", "id": "c", "ts": 1, "state": "ok"}) == {
        "clock_state": "ok"
    }
    shift = {
        "type": "shift", "id": "m/x", "ts": T0, "shift": "2026-12-07/day", "final": True,
        "OEE": 0.5, "A": 1, "P": None, "good": 9, "total": 10,
        "reject": 1, "run_s": 60, "energy": {"kwh_per_good": 0.25, "kwh_per_total": None},
    }  # fmt: skip
    assert event_values(shift) == {
        "shift": "2026-12-07/day", "shift_final": True, "oee": 0.5, "availability": 1.0,
        "run_s": 60.0, "kwh_per_good": 0.25, "good": 9, "total": 10, "reject": 1,
    }  # fmt: skip
    assert event_values(state(MACHINE, T0, "idle", mode=None)) == {
        "state": "idle",
        "state_reason": "",
        "mode": "",
    }


def test_an_event_without_a_needed_field_is_an_unreadable_batch() -> None:
    bad = {"type": "count", "id": "m/count/total/1", "ts": 1, "counter": "total"}
    head, tail = encode_event_parts("box", MACHINE, [bad])
    with pytest.raises(ValueError, match="count event lacks a field"):
        events_batch(1, splice_seq(head, 1, tail))


def test_machine_tags_type_every_value_and_the_facts_announce_the_machine() -> None:
    tags = {t.name: t.datatype for t in machine_tags(["total", "reject"], ["jam"])}
    assert tags["count_reject"] == "Int64"
    assert tags["counter_gap_total_s"] == "Double"
    assert tags["alarm_jam"] == "Boolean"
    assert tags["shift_final"] == "Boolean"
    assert "count_good" not in tags
    facts = machine_facts([machine_plan()])[MACHINE]
    assert (facts.profile, facts.vendor, facts.model) == ("machine@1", None, None)
    assert {"count_total", "alarm_overcurrent"} <= {t.name for t in facts.tags}


def test_a_batch_of_events_with_no_values_is_acknowledged_without_a_packet() -> None:
    facts = machine_facts([machine_plan()])
    empty = Batch(7, MACHINE, [], events=[state(MACHINE, T0, "idle")])
    spark = SparkplugSession(SparkplugOptions(group_id="g", edge_node_id="n"), "box", facts)
    spark.will(T0)
    spark.on_connect(T0)
    tb = TbSession(ThingsboardOptions(), "box", facts)
    subs = {MACHINE: iotda.SubDevice("prod_m", "drive")}
    hw = IotdaSession(IotdaOptions(gateway_id="gw", secret="s", subdevices=subs), "box", facts)
    for session in (spark, tb, hw):
        encoded = session.encode([empty], T0, historical=False)
        assert (encoded.packets, encoded.idle) == ((), (7,)), session
