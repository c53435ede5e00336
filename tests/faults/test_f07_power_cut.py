"""F7: the files on disk at one instant while the agent writes (a frozen copy, not a power cut).

The agent is frozen (SIGSTOP) at a random moment, its database and WAL are
copied as they are (no checkpoint, no fsync, no clean close), and it runs on
(SIGCONT). Each copy is then opened like after a reboot.

Pass: every copy passes ``quick_check``; every seq the agent reported
committed before the freeze is in the copy.

What it shows: the files are consistent at any instant and a commit is in
them once status reports it, i.e. what a crash of the process leaves. What
it cannot show: a lost fsync. The copy reads through the page cache, so it
passes as well with ``PRAGMA synchronous=OFF`` patched in. The power cut
itself is F16 (``test_f16_power_loss.py``), on the power-loss file system
model, where OFF fails and FULL keeps every committed batch. F7 is thereby
mostly redundant with F6 (SIGKILL) and F16; it is kept because it is cheap.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import time
from pathlib import Path

from tests.faults.harness import Rig, pending_seqs, quick_check
from tests.faults.proxy import Mode
from tests.support.mosquitto import Mosquitto

CUTS = 10


def _snapshot(db: Path, into: Path) -> Path:
    into.mkdir(parents=True)
    for suffix in ("", "-wal"):
        source = Path(f"{db}{suffix}")
        if source.exists():
            shutil.copyfile(source, into / f"{db.name}{suffix}")
    return into / db.name


def test_f07_power_cut_keeps_every_committed_batch(tmp_path: Path, broker: Mosquitto) -> None:
    rng = random.Random(7)
    cuts: list[tuple[int, Path]] = []
    with Rig(tmp_path, broker, devices=4, interval="50ms",
             buffer={"synchronous": "FULL"}) as rig:  # fmt: skip
        rig.proxy.set(Mode.REFUSE)  # nothing is acked: every committed seq stays on disk
        rig.proxy.reset_connections()
        assert rig.agent.proc is not None
        pid = rig.agent.proc.pid
        for i in range(CUTS):
            time.sleep(rng.uniform(0.1, 0.5))
            committed = int(rig.agent.status()["buffer"]["last_seq"])
            os.kill(pid, signal.SIGSTOP)
            try:
                cuts.append((committed, _snapshot(rig.agent.buffer, tmp_path / f"cut{i}")))
            finally:
                os.kill(pid, signal.SIGCONT)
        delivered = rig.checker.seqs()  # published (and so deleted) before the broker went
    assert cuts[-1][0] > cuts[0][0] > 0
    for committed, copy in cuts:
        assert quick_check(copy) == ["ok"], copy
        kept = set(pending_seqs(copy)) | delivered
        lost = sorted(set(range(1, committed + 1)) - kept)
        assert lost == [], f"{copy}: committed rows lost"
