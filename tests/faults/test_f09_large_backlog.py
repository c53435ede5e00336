"""F9: a large backlog on disk, then an agent start.

The buffer holds ``ROWS`` committed batches (as after a long outage); the
agent starts with the broker reachable. Pass: the file stays within its cap,
publishing starts within seconds, and the whole backlog drains (with live
data behind it), nothing lost, nothing out of order. The long run
(``python -m tests.faults.longrun --backlog 1000000``) does 1M rows.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from tests.faults.harness import Rig, prefill, rss_kb, wait_status
from tests.support.mosquitto import Mosquitto

ROWS = 100_000  # CI; the long run does 1M
CAP = 64_000_000
FIRST_PUBLISH_S = 15.0  # generous: a loaded 2-core CI box; typically well under 2 s


def test_f09_large_backlog_drains(tmp_path: Path, broker: Mosquitto) -> None:
    with Rig(tmp_path, broker, devices=1, interval="200ms", start_agent=False,
             buffer={"max_size": f"{CAP}B"}) as rig:  # fmt: skip
        assert prefill(rig.agent.buffer, ROWS, max_bytes=CAP) == ROWS
        rig.agent.start()
        t0 = time.monotonic()
        assert rig.checker.wait_for_count(1, FIRST_PUBLISH_S), "publishing did not start"
        started_after = time.monotonic() - t0
        assert rig.agent.proc is not None
        rss_start = rss_kb(rig.agent.proc.pid)
        doc = wait_status(rig.agent, lambda d: d["buffer"]["pending_batches"] < 50, 180)
        rss_end = rss_kb(rig.agent.proc.pid)
        assert doc["buffer"]["file_bytes"] <= CAP
        assert os.path.getsize(rig.agent.buffer) <= CAP
        report = rig.finish(timeout=120)
    assert started_after < FIRST_PUBLISH_S
    assert report.problems() == []
    assert report.missing == []
    assert report.distinct >= ROWS
    assert rss_end - rss_start < 30 * 1024, (rss_start, rss_end)
