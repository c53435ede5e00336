"""F19: batches larger than the broker's maximum packet size.

Mosquitto runs with ``max_packet_size 4096`` and closes any connection that
sends a larger packet. The buffer holds, among small batches, a 6 KB batch of
many readings and a 6 KB single reading (as stored before the limit was
known). Pass: the queue never blocks: the large batch is cut (its readings
arrive under new seqs), the single reading is refused and counted, everything
else arrives (0 lost), and the status names the broker's limit. With
``mqtt.max_message_size`` set below the broker's limit the same happens
without a single dropped connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from agent.buffer import Buffer
from agent.status.document import StatusDocument
from drivers.base import Reading
from tests.faults.harness import AGENT, Rig, offline_buffer, wait_status
from tests.support.mosquitto import Mosquitto

BROKER_LIMIT = 4096
PIECES = 40  # readings of the large batch, about 150 bytes each


@pytest.fixture
def small_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    b = Mosquitto(tmp_path / "broker", persistence=True, max_packet_size=BROKER_LIMIT)
    b.start()
    try:
        yield b
    finally:
        b.stop()


def fill(path: Path) -> tuple[int, int]:
    """Small rows, a large multi-reading row, a large single reading, small rows: their seqs."""

    async def go() -> tuple[int, int]:
        path.parent.mkdir(parents=True, exist_ok=True)
        async with Buffer(path, agent_id=AGENT, commit_interval=0) as buf:
            for i in range(5):
                buf.put("small", [Reading(1_764_270_000_000 + i, {"m": i})])
            buf.put("big", [Reading(1_764_270_001_000 + k, {"k": k, "pad": "x" * 120})
                            for k in range(PIECES)])  # fmt: skip
            await buf.flush()
            multi = buf.last_seq
            buf.put("huge", [Reading(1_764_270_002_000, {"blob": "y" * 6000})])
            await buf.flush()
            single = buf.last_seq
            for i in range(5, 10):
                buf.put("small", [Reading(1_764_270_000_000 + i, {"m": i})])
            await buf.flush()
            return multi, single

    return asyncio.run(go())


def run_case(rig: Rig, expect: str) -> tuple[StatusDocument, list[int]]:
    multi, single = fill(rig.agent.buffer)
    rig.agent.start()
    doc = wait_status(rig.agent, lambda d: d["broker"]["oversized_refused"] >= 1, 60)
    assert doc["broker"]["oversized_refused"] == 1  # the single 6 KB reading, counted once
    assert expect in (doc["broker"]["last_error"] or expect), doc["broker"]
    wait_status(rig.agent, lambda d: d["buffer"]["pending_batches"] < 5, 60)
    assert rig.agent.stop() == 0, rig.agent.log()[-3000:]
    last = offline_buffer(rig.agent)["last_seq"]
    assert rig.checker.wait_for_seqs(last, 60, allowed_missing=2)  # the two replaced rows
    report = rig.checker.report(last)
    # the two large rows were replaced (new seqs) or refused, never published as such
    assert report.missing == [multi, single], report.summary()
    assert [p for p in report.problems() if "lost" not in p] == []
    big = [
        r["values"]["k"]
        for m in rig.checker.sub.messages
        if m.topic.endswith("/big")
        for r in orjson.loads(m.payload)["readings"]
    ]
    assert sorted(set(big)) == list(range(PIECES))  # every reading of the large batch arrived
    assert all(len(m.payload) <= BROKER_LIMIT for m in rig.checker.sub.messages)
    return doc, big


def test_f19_unknown_broker_limit_is_found_and_nothing_blocks(
    tmp_path: Path, small_broker: Mosquitto
) -> None:
    with Rig(tmp_path, small_broker, devices=1, interval="200ms", start_agent=False,
             mqtt={"reconnect_max": "1s"}) as rig:  # fmt: skip
        doc, _ = run_case(rig, "closes the connection after a")
    assert "max_message_size" in (doc["broker"]["last_error"] or "")
    assert doc["broker"]["oversized_split"] >= 1


def test_f19_configured_limit_cuts_without_dropping_the_link(
    tmp_path: Path, small_broker: Mosquitto
) -> None:
    with Rig(tmp_path, small_broker, devices=1, interval="200ms", start_agent=False,
             mqtt={"max_message_size": "4000B"}) as rig:  # fmt: skip
        doc, _ = run_case(rig, "")
    assert doc["broker"]["early_disconnects"] == 0
    assert doc["broker"]["oversized_split"] >= 2  # both large rows, cut before sending
