"""F5: a slow, fragmented, lossy link to the broker.

Phases: high latency with every write split into 1-7 byte pieces; a bandwidth
cap; resets every few seconds. Pass: nothing lost, no undecodable message, and
the backlog does not run away (it is back near zero once the link is good).
"""

from __future__ import annotations

import time
from pathlib import Path

from tests.faults.harness import Rig, wait_status
from tests.faults.proxy import Mode
from tests.support.mosquitto import Mosquitto

PHASE_S = 8.0


def test_f05_slow_fragmented_lossy_link(tmp_path: Path, broker: Mosquitto) -> None:
    with Rig(tmp_path, broker, devices=2, interval="200ms") as rig:
        assert rig.checker.wait_for_count(5)
        rig.proxy.set(Mode.PASS, latency_ms=300, split=True)
        time.sleep(PHASE_S)
        rig.proxy.set(Mode.PASS, bandwidth=4000)
        time.sleep(PHASE_S)
        rig.proxy.set(Mode.PASS, latency_ms=50, split=True)
        for _ in range(3):
            time.sleep(PHASE_S / 3)
            rig.proxy.reset_connections()
        rig.proxy.set(Mode.PASS)
        wait_status(rig.agent, lambda d: d["buffer"]["pending_batches"] < 10, 60)
        assert rig.proxy.stats.resets >= 1
        report = rig.finish()
    assert report.problems() == []
    assert report.missing == []
    assert report.decode_errors == []
