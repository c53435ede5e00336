"""F6: the agent is killed with SIGKILL at random moments, again and again.

Pass, after every kill: the buffer passes ``PRAGMA quick_check``; every seq
committed before the kill (status ``last_seq`` just before it) eventually
reaches the broker; publishing resumes after each restart.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

from tests.faults.harness import Rig, quick_check
from tests.support.mosquitto import Mosquitto

KILLS = 20


def kill_cycle(rig: Rig, rng: random.Random) -> int:
    """Start, let it run a random while, note the last committed seq, SIGKILL; that seq."""
    rig.agent.start()
    first = rig.checker.count()
    assert rig.checker.wait_for_count(first + 1, 20), "publishing did not resume"
    time.sleep(rng.uniform(0.0, 1.0))
    committed = int(rig.agent.status()["buffer"]["last_seq"])
    rig.agent.kill()
    return committed


def test_f06_repeated_sigkill(tmp_path: Path, broker: Mosquitto) -> None:
    rng = random.Random(6)
    committed = 0
    with Rig(tmp_path, broker, devices=2, interval="50ms") as rig:
        rig.agent.kill()
        for _ in range(KILLS):
            committed = max(committed, kill_cycle(rig, rng))
            assert quick_check(rig.agent.buffer) == ["ok"]
        rig.agent.start()
        report = rig.finish()
    assert committed > 0
    assert report.last_seq >= committed
    assert report.problems() == []
    assert report.missing == [], "nothing committed may be lost"
    assert report.births >= KILLS
