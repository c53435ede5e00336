"""F3: PUBACKs are lost (broker -> agent bytes dropped), then the connection is reset.

Pass: nothing lost; duplicates are re-sends after the reconnect of seqs within
the in-flight window, never anything else.
"""

from __future__ import annotations

import time
from pathlib import Path

from tests.faults.harness import Rig, wait_status
from tests.faults.proxy import Mode
from tests.support.mosquitto import Mosquitto

WINDOW = 50


def test_f03_lost_pubacks_give_only_windowed_duplicates(tmp_path: Path, broker: Mosquitto) -> None:
    with Rig(tmp_path, broker, devices=4, interval="100ms",
             mqtt={"max_inflight": WINDOW}) as rig:  # fmt: skip
        rig.checker.window = WINDOW
        assert rig.checker.wait_for_count(10)
        rig.proxy.set(Mode.DROP_S2C)
        time.sleep(4)  # the window fills: the broker has them, the agent has no PUBACK
        assert rig.agent.status()["broker"]["inflight"] > 0
        rig.proxy.set(Mode.RESET)
        rig.proxy.set(Mode.PASS)
        wait_status(rig.agent, lambda d: d["broker"]["reconnects"] >= 1, 30)
        report = rig.finish()
    assert report.problems() == []
    assert report.missing == []
    assert report.duplicates, "the fault should have caused re-sends"
    assert all(d.legal for d in report.duplicates)
    assert len({d.seq for d in report.duplicates}) <= WINDOW
