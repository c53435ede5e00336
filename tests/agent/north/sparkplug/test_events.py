"""A machine's events as Sparkplug B: the machine a device of the node, the box's clock NDATA.

A real buffer holding events messages (``tests/support/events.py``), the
publisher with the Edge Node session on a real Mosquitto, every payload read
back with Eclipse Tahu's decoder: the NBIRTH announces ``clock_state``, the
machine's DBIRTH its typed metrics, DDATA the values at each event's ts, in
order; the box's clock comes as NDATA.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from agent.buffer import Buffer
from agent.north.destination import SparkplugOptions
from agent.north.link import Publisher
from agent.north.sparkplug.encode import EDGE_SEQ
from agent.north.sparkplug.session import SparkplugSession
from agent.runtime.sessions import machine_facts
from tests.agent.north.test_publisher import AGENT, options, running
from tests.support.events import BOX_VALUES, MACHINE, MACHINE_VALUES, machine_plan, put_scenario
from tests.support.mosquitto import Mosquitto, Received, Subscriber
from tests.support.tahu import Decode

GROUP, NODE = "plants", "line-a"


def _kind(m: Received) -> str:
    return m.topic.split("/")[2]


async def test_machine_is_a_device_and_the_box_clock_a_node_metric(
    mosquitto: Mosquitto, tmp_path: Path, tahu_decode: Decode
) -> None:
    opts = SparkplugOptions(group_id=GROUP, edge_node_id=NODE, state_file=tmp_path / "bdseq")
    session = SparkplugSession(opts, AGENT, machine_facts([machine_plan()]))
    async with Buffer(tmp_path / "buffer.db", agent_id=AGENT, commit_interval=0.02) as buf:
        put_scenario(buf)
        await buf.flush()
        with Subscriber(mosquitto.port, "spBv1.0/#") as sub:
            pub = Publisher(options(mosquitto.port), buf, AGENT, session)
            async with running(pub):
                msgs = await sub.wait_for_async(lambda m: [_kind(x) for x in m].count("DDATA") >= 3)

                async def pending() -> int:
                    await buf.flush()
                    return (await buf.stats()).pending_batches

                for _ in range(100):
                    if await pending() == 0:
                        break
                    await asyncio.sleep(0.05)
                assert await pending() == 0
    kinds = [_kind(m) for m in msgs]
    assert kinds == ["NBIRTH", "DBIRTH", "DDATA", "NDATA", "DDATA", "DDATA"]
    assert msgs[1].topic == f"spBv1.0/{GROUP}/DBIRTH/{NODE}/{MACHINE}"
    decoded = tahu_decode([m.payload for m in msgs])
    nbirth, dbirth = decoded[0], decoded[1]

    node = {m["name"]: m for m in nbirth["metrics"]}
    assert node["clock_state"]["type"] == "String"
    assert node["clock_state"]["value"] is None  # nothing known before the first clock event

    born = {m["name"]: m for m in dbirth["metrics"]}
    assert {n: born[n]["type"] for n in ("state", "count_total", "alarm_overcurrent")} == {
        "state": "String", "count_total": "Int64", "alarm_overcurrent": "Boolean",
    }  # fmt: skip
    assert born["state_duration_s"]["type"] == "Double"
    assert born["state_duration_s"]["properties"]["engUnit"]["value"] == "s"
    names = {m["alias"]: n for n, m in born.items()}

    values: list[tuple[int, str, Any]] = []  # DDATA names no reading: flat, in order
    edge_seqs = []
    for ddata in (decoded[i] for i, k in enumerate(kinds) if k == "DDATA"):
        for metric in ddata["metrics"]:
            name = names[metric["alias"]]
            if name == EDGE_SEQ:
                edge_seqs.append(int(metric["value"]))
                continue
            value = metric["value"]  # Tahu writes a 64-bit integer as a decimal string
            value = int(value) if born[name]["type"] == "Int64" else value
            values.append((int(metric["timestamp"]), name, value))
    assert values == [(ts, n, v) for ts, vs in MACHINE_VALUES for n, v in vs.items()]
    assert edge_seqs == [1, 3, 4]

    ndata = decoded[kinds.index("NDATA")]
    clock = ndata["metrics"]
    assert [(int(m["timestamp"]), {"clock_state": m["value"]}) for m in clock] == BOX_VALUES
    assert clock[0]["alias"] == node["clock_state"]["alias"]
    assert [int(d["seq"]) for d in decoded[1:]] == [1, 2, 3, 4, 5]
    assert pub.stats.refused_by_dialect == 0
