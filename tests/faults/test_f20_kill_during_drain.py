"""F20: kill -9 while a backlog drains: re-sends stay within the window, nothing is lost.

A batch leaves the buffer in the writer's next group commit after its PUBACK.
The publisher counts the acked rows whose delete is not yet committed against
``mqtt.max_inflight``, so a kill re-sends at most that many. The agent is
SIGKILLed ``KILLS`` times at random points of a backlog drain and restarted.

Pass: nothing lost; every duplicate is a re-send after a new connection, at
most ``WINDOW`` per connection (the checker's bound); no seq reused.
"""

from __future__ import annotations

import random
from pathlib import Path

from tests.faults.harness import Rig, prefill
from tests.support.mosquitto import Mosquitto

ROWS = 30_000
KILLS = 4
WINDOW = 100  # the default max_inflight, stated explicitly


def test_f20_kill_during_backlog_drain_resends_at_most_the_window(
    tmp_path: Path, broker: Mosquitto
) -> None:
    rng = random.Random(20)
    with Rig(tmp_path, broker, devices=1, interval="200ms", start_agent=False,
             mqtt={"max_inflight": WINDOW}) as rig:  # fmt: skip
        assert prefill(rig.agent.buffer, ROWS) == ROWS
        for _ in range(KILLS):
            rig.agent.start()
            target = rig.checker.count() + rng.randint(500, 4000)
            assert rig.checker.wait_for_count(target, 60), "the drain did not go on"
            rig.agent.kill()
        rig.agent.start()
        report = rig.finish(timeout=120)
    assert report.problems() == []
    assert report.missing == []
    assert report.reused == []
    assert report.births >= KILLS + 1
    assert len(report.duplicates) <= WINDOW * KILLS, report.summary()
