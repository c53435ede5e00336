"""F4: the broker is stopped and restarted.

The agent keeps no state at the broker (clean session), so to the agent this
is a broker without persistence. The *checker* must not lose what the broker
accepted while the checker was away, so the broker runs with persistence and
the checker holds a persistent session: every loss the checker sees is then
the agent's, not the test rig's.

Pass: nothing lost; the agent reconnects within reconnect_max + 1 s of the
broker coming back (measured through status polling, asserted loosely).
"""

from __future__ import annotations

import time
from pathlib import Path

from tests.faults.harness import Rig, wait_status
from tests.support.mosquitto import Mosquitto

RECONNECT_MAX_S = 2.0
SLACK_S = 3.0  # status polling, process start-up of mosquitto, a loaded CI box


def test_f04_broker_restart_loses_nothing(tmp_path: Path, broker: Mosquitto) -> None:
    with Rig(tmp_path, broker, devices=2, interval="100ms",
             mqtt={"reconnect_max": f"{RECONNECT_MAX_S}s"}) as rig:  # fmt: skip
        assert rig.checker.wait_for_count(10)
        delays = []
        for _ in range(2):
            broker.stop()
            wait_status(rig.agent, lambda d: not d["broker"]["connected"], 15)
            time.sleep(3)
            broker.start()
            t0 = time.monotonic()
            wait_status(rig.agent, lambda d: d["broker"]["connected"], 30)
            delays.append(time.monotonic() - t0)
        report = rig.finish()
    assert report.problems() == []
    assert report.missing == []
    assert max(delays) < RECONNECT_MAX_S + 1 + SLACK_S, delays
