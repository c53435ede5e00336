"""F2: the broker link goes silently dead (a black-hole: no RST, no FIN, nothing).

Pass: the agent notices within about twice the keepalive (status shows the
broker disconnected) and loses nothing once the link is back.
"""

from __future__ import annotations

import time
from pathlib import Path

from tests.faults.harness import Rig, wait_status
from tests.faults.proxy import Mode
from tests.support.mosquitto import Mosquitto

KEEPALIVE_S = 5
MARGIN_S = 8  # loaded CI box: status polling, paho's tick, the reconnect attempt


def test_f02_dead_link_is_detected_and_nothing_is_lost(tmp_path: Path, broker: Mosquitto) -> None:
    with Rig(tmp_path, broker, devices=2, interval="100ms",
             mqtt={"keepalive": f"{KEEPALIVE_S}s"}) as rig:  # fmt: skip
        assert rig.checker.wait_for_count(10)
        rig.proxy.set(Mode.BLACKHOLE)
        t0 = time.monotonic()
        doc = wait_status(rig.agent, lambda d: not d["broker"]["connected"], 60)
        detected_after = time.monotonic() - t0
        assert doc["broker"]["last_error"]
        time.sleep(2)  # reconnect attempts meet the black-hole too
        assert not rig.agent.status()["broker"]["connected"]
        rig.proxy.set(Mode.PASS)
        wait_status(rig.agent, lambda d: d["broker"]["connected"], 30)
        report = rig.finish()
    assert detected_after < 2 * KEEPALIVE_S + MARGIN_S, detected_after
    assert report.problems() == []
    assert report.missing == []
