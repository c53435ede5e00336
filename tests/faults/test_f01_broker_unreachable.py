"""F1: the broker is unreachable for a while under load.

Pass: nothing lost, order per device kept, the backlog drains while live data
keeps flowing, the agent's memory stays flat (the buffer is on disk, not in RAM).
"""

from __future__ import annotations

import time
from pathlib import Path

from tests.faults.harness import Rig, rss_kb, wait_status
from tests.faults.proxy import Mode
from tests.support.mosquitto import Mosquitto

OUTAGE_S = 12.0
RSS_GROWTH_LIMIT_KB = 30 * 1024


def test_f01_outage_under_load_loses_nothing(tmp_path: Path, broker: Mosquitto) -> None:
    with Rig(tmp_path, broker, devices=4, interval="100ms") as rig:
        assert rig.checker.wait_for_count(20)
        assert rig.agent.proc is not None
        rss_before = rss_kb(rig.agent.proc.pid)
        rig.proxy.set(Mode.REFUSE)
        rig.proxy.reset_connections()
        wait_status(rig.agent, lambda d: not d["broker"]["connected"], 15)
        time.sleep(OUTAGE_S)
        during = rig.agent.status()
        assert during["buffer"]["pending_batches"] >= 4 * OUTAGE_S * 5, "the buffer absorbs it"
        rss_outage = rss_kb(rig.agent.proc.pid)
        polls_at_return = sum(d["polls_ok"] for d in during["devices"].values())
        rig.proxy.set(Mode.PASS)
        drained = wait_status(rig.agent, lambda d: d["buffer"]["pending_batches"] < 20, 60)
        # polling went on while the backlog drained, and new batches were committed
        assert sum(d["polls_ok"] for d in drained["devices"].values()) > polls_at_return
        assert drained["buffer"]["last_seq"] > during["buffer"]["last_seq"]
        report = rig.finish()
    assert report.problems() == []
    assert report.missing == []
    assert rss_outage - rss_before < RSS_GROWTH_LIMIT_KB, (rss_before, rss_outage)
