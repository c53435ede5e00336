"""F18 (slow link): a slow but healthy uplink (a few KB/s), with a small keepalive.

The in-flight window takes longer than twice the keepalive to cross the
link, so the oldest batch waits for its PUBACK longer than the dead-link
check allows, yet PUBACKs keep arriving. Pass: the link is never aborted
(one connection from start to end), and everything arrives once the cap is
lifted. F2 checks the other side: a link that moves nothing is still dropped.
"""

from __future__ import annotations

import time
from pathlib import Path

from tests.faults.harness import Rig, wait_status
from tests.faults.proxy import Mode
from tests.support.mosquitto import Mosquitto

SLOW_S = 25.0  # the old check aborted about every 2 x keepalive (10 s) here
BANDWIDTH = 1500  # bytes/s: well below the ~5 kB/s two devices at 100 ms produce


def test_f18_a_slow_link_moving_bytes_is_not_aborted(tmp_path: Path, broker: Mosquitto) -> None:
    with Rig(tmp_path, broker, devices=2, interval="100ms",
             mqtt={"keepalive": "5s"}) as rig:  # fmt: skip
        assert rig.checker.wait_for_count(5)
        rig.proxy.set(Mode.PASS, bandwidth=BANDWIDTH)
        time.sleep(SLOW_S)
        doc = rig.agent.status()
        rig.proxy.set(Mode.PASS)
        wait_status(rig.agent, lambda d: d["buffer"]["pending_batches"] < 10, 60)
        accepted = rig.proxy.stats.accepted
        report = rig.finish()
    assert doc["broker"]["connected"], doc["broker"]
    assert doc["broker"]["reconnects"] == 0, doc["broker"]
    assert accepted == 1, f"{accepted} connections: the slow link was aborted"
    assert report.problems() == []
    assert report.missing == []
