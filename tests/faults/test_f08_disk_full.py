"""F8: the buffer reaches its size cap, and the disk itself fills up.

Pass: no crash, no corruption; with the cap reached the oldest batches are
dropped, counted and shown in status, the file stays within the cap; once the
broker (or disk space) returns the agent recovers and drains, and every
missing seq is accounted for by the drop counter.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.harness import Rig, prefill, quick_check, wait_status
from tests.faults.proxy import Mode
from tests.support.mosquitto import Mosquitto

CAP = 2_000_000


def test_f08_cap_reached_drops_oldest_counted_and_recovers(
    tmp_path: Path, broker: Mosquitto
) -> None:
    with Rig(tmp_path, broker, devices=4, interval="50ms", start_agent=False,
             buffer={"max_size": f"{CAP}B"}) as rig:  # fmt: skip
        prefill(rig.agent.buffer, 12_000, max_bytes=CAP, pad=100)  # past the cap already
        rig.proxy.set(Mode.REFUSE)
        rig.agent.start()
        full = wait_status(rig.agent, lambda d: d["buffer"]["dropped_batches"] > 0, 30)
        first_drops = full["buffer"]["dropped_batches"]
        doc = wait_status(rig.agent, lambda d: d["buffer"]["dropped_batches"] > first_drops, 30)
        assert doc["buffer"]["file_bytes"] <= CAP
        assert os.path.getsize(rig.agent.buffer) <= CAP
        rig.proxy.set(Mode.PASS)
        wait_status(rig.agent, lambda d: d["buffer"]["pending_batches"] < 20, 60)
        report = rig.finish()
    assert quick_check(rig.agent.buffer) == ["ok"]
    assert report.dropped >= first_drops
    assert report.missing, "the cap should have dropped something"
    assert report.lost == 0, report.summary()
    assert report.problems() == []


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 3 MB tmpfs (root only): a real ENOSPC."""
    mount = tmp_path / "agent" / "data"
    mount.mkdir(parents=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)],
                            capture_output=True, text=True, check=False)  # fmt: skip
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip()}): needs root")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False, capture_output=True)


def test_f08_real_enospc_no_crash_and_recovers(
    tmp_path: Path, broker: Mosquitto, tiny_disk: Path
) -> None:
    with Rig(tmp_path, broker, devices=4, interval="50ms",
             buffer={"max_size": "64MB"}) as rig:  # fmt: skip
        rig.proxy.set(Mode.REFUSE)
        rig.proxy.reset_connections()
        filler = tiny_disk / "filler"
        free = os.statvfs(tiny_disk).f_bavail * os.statvfs(tiny_disk).f_frsize
        filler.write_bytes(b"\0" * max(0, free - 200_000))
        deadline = time.monotonic() + 40
        while "commit failed" not in rig.agent.log() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "commit failed" in rig.agent.log(), "the disk never filled"
        time.sleep(1)
        assert rig.agent.proc is not None
        assert rig.agent.proc.poll() is None, "the agent died of a full disk"
        stuck = rig.agent.status()["buffer"]["last_seq"]
        filler.unlink()
        wait_status(rig.agent, lambda d: d["buffer"]["last_seq"] > stuck + 20, 40)
        rig.proxy.set(Mode.PASS)
        wait_status(rig.agent, lambda d: d["buffer"]["pending_batches"] < 20, 60)
        report = rig.finish()
    assert report.lost == 0, report.summary()
    assert report.problems() == []
