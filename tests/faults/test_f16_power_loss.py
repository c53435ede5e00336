"""F16: power loss under the running agent, on the power-loss file system model.

The agent process (4 counters at 50 ms, a real Mosquitto, the checker on it)
keeps its buffer on ``tests/support/powerloss.py``: every write since a file's
last fsync lives only in the model's memory (the status socket stays on a
plain folder). A new box runs 2-5 s; a restarted one first runs 0.5-2 s and
stops cleanly, then runs 2-5 s. Then the last seq status reports committed is
noted and the power is cut (the agent SIGKILLed at the same instant, every
unsynced write dropped). The backing files are what a disk that honours
fsync would hold; they are inspected as they are, then mounted again, and the
agent restarts on them, runs on, drains and is stopped cleanly; the checker
judges everything it received.

* ``FULL`` (the default): the backing file passes ``quick_check``, holds every
  seq status reported committed, and all of them are delivered; no seq is
  missing, none is reused, re-sends only of what the file still held.
* ``NORMAL``: intact; the file lost at most a tail (the commits since the last
  WAL sync), no hole below it; batches published and then lost from the file
  keep their seqs: the next start continues above the synced reservation, so
  no seq comes back with other content, and the skipped range is counted in
  ``dropped_batches`` (nothing is lost that the counter does not explain).
* ``OFF`` (forced through ``tests/faults/sync_off_agent.py``; the config does
  not accept it): the same judge as for FULL must fail, on committed seqs
  missing. This is what makes the FULL case a test.

Each round prints its figures (``-s``): seqs committed before the cut, what the
file kept, committed seqs lost, of which already published.
"""

from __future__ import annotations

import random
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.faults.checker import Report
from tests.faults.harness import Rig, pending_seqs, quick_check, wait_status
from tests.support.mosquitto import Mosquitto
from tests.support.powerloss import CutReport, PowerLossFS

FIRST_RUN = (0.5, 2.0)
"""Seconds of a first run, stopped cleanly (random, seeded per round)."""
RUN_FOR = (2.0, 5.0)
"""Seconds the restarted agent runs before the cut (random, seeded per round)."""
LAUNCHER = "tests.faults.sync_off_agent"


@dataclass
class Cut:
    """One round: what the agent had reported at the cut, what the disk kept, what arrived."""

    mode: str
    committed: int  # status last_seq just before the cut
    delivered: set[int]  # seqs the checker had received when the power went
    check: list[str]  # quick_check of the backing file as the cut left it
    disk_last: int  # meta.last_seq of the backing file
    pending: list[int]  # seqs still in the backing file
    fs: CutReport
    report: Report | None = None  # after the restart, the drain and a clean stop

    @property
    def lost(self) -> list[int]:
        """Seqs reported committed that the file no longer holds (delivered or not)."""
        return list(range(self.disk_last + 1, self.committed + 1))

    @property
    def lost_published(self) -> list[int]:
        """Of those, the ones the checker had already received: their seqs must not be reused."""
        return [s for s in self.lost if s in self.delivered]

    def __str__(self) -> str:
        r = self.report
        return (f"{self.mode}: committed {self.committed}, file kept up to {self.disk_last} "
                f"({len(self.pending)} pending), lost {len(self.lost)} committed seqs "
                f"({len(self.lost_published)} already published); after restart: "
                f"{r.summary() if r else None}; cut: {self.fs}")  # fmt: skip


def _meta_last_seq(db: Path) -> int:
    conn = sqlite3.connect(db.resolve().as_uri() + "?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT last_seq FROM meta").fetchone()[0])
    except sqlite3.OperationalError:  # no meta table: the schema itself was never synced
        return 0
    finally:
        conn.close()


def _inspect(mode: str, committed: int, delivered: set[int], db: Path, fs: CutReport) -> Cut:
    """The backing file as a reboot finds it: integrity, last seq, pending seqs."""
    check = quick_check(db)
    disk_last = _meta_last_seq(db) if check == ["ok"] else -1
    pending = pending_seqs(db) if disk_last > 0 else []
    return Cut(mode, committed, delivered, check, disk_last, pending, fs)


def _power_cut_round(
    tmp_path: Path, broker: Mosquitto, mode: str, seed: int, *, first_run: bool = True
) -> Cut:
    """(Run, stop cleanly,) run, cut, inspect the disk, remount, restart, drain, stop."""
    rng = random.Random(seed)
    disk, mnt = tmp_path / "disk", tmp_path / "mnt"
    buffer = {"synchronous": "FULL" if mode == "OFF" else mode, "path": str(mnt / "buffer.db")}
    with (
        PowerLossFS(disk, mnt, timeout=20) as fs,
        Rig(tmp_path, broker, devices=4, interval="50ms", buffer=buffer, start_agent=False) as rig,
    ):  # the agent's status socket and pointer stay in tmp_path/agent/data (no FUSE)
        if mode == "OFF":
            rig.agent.module = LAUNCHER
        if first_run:  # stopped cleanly: its batches are on the disk, the file too
            rig.agent.start()
            assert rig.checker.wait_for_count(1, 20), "nothing published"
            time.sleep(rng.uniform(*FIRST_RUN))
            assert rig.agent.stop() == 0, rig.agent.log()[-3000:]
        rig.agent.start()
        assert rig.checker.wait_for_count(rig.checker.count() + 1, 20), "nothing published"
        time.sleep(rng.uniform(*RUN_FOR))
        committed = int(rig.agent.status()["buffer"]["last_seq"])
        assert rig.agent.proc is not None
        report = fs.cut(kill=[rig.agent.proc.pid])
        rig.agent.proc.wait(10)
        time.sleep(0.5)  # what the broker accepted before the cut reaches the checker
        cut = _inspect(mode, committed, rig.checker.seqs(), disk / "buffer.db", report)
        fs.mount()  # the same disk after the reboot
        restarted = int(rig.agent.start().status()["buffer"]["last_seq"])
        wait_status(rig.agent, lambda d: d["buffer"]["last_seq"] > restarted + 40
                    and d["buffer"]["pending_batches"] < 20)  # fmt: skip
        cut.report = rig.finish(timeout=3 if mode == "OFF" else 30)
        if mode == "OFF":  # the launcher did patch the PRAGMA, at every start
            starts = rig.agent.log().count("PRAGMA synchronous is 0")
            assert starts == 2 + first_run, rig.agent.log()[-3000:]
    print(cut)
    return cut


def _assert_nothing_committed_lost(cut: Cut) -> None:
    """FULL's promise: intact, every seq reported committed in the file and delivered."""
    r = cut.report
    assert r is not None
    assert cut.check == ["ok"], cut
    assert cut.disk_last >= cut.committed, f"committed seqs gone from the file: {cut}"
    assert [s for s in r.missing if s <= cut.committed] == [], f"committed seqs missing: {cut}"
    assert r.lost == 0, cut
    _assert_sound(cut)


def _assert_sound(cut: Cut) -> None:
    """Both modes: no seq reused, order kept, re-sends only across a restart."""
    r = cut.report
    assert r is not None
    assert r.reused == [], f"seqs reused for other batches: {r.reused[:10]}; {cut}"
    assert r.order_violations == {}, cut
    assert r.wrong_tag == [], cut
    assert r.decode_errors == [], cut
    # A cut also loses unsynced deletes, so the restart may re-send more than the
    # window; but only what the file held, and only after a new connection.
    survivors = set(cut.pending)
    bad = [d for d in r.illegal_duplicates if d.births_between == 0 or d.seq not in survivors]
    assert bad == [], f"duplicates the cut does not explain: {bad[:5]}; {cut}"


ROUNDS = pytest.mark.parametrize(
    ("seed", "first_run"), [(1, False), (2, True), (3, True)],
    ids=["new-box", "restarted-2", "restarted-3"],
)  # fmt: skip
"""A new box cut in its first seconds (its file never checkpointed), and two restarted ones."""


@ROUNDS
def test_f16_full_keeps_every_committed_batch(
    tmp_path: Path, broker: Mosquitto, seed: int, first_run: bool
) -> None:
    cut = _power_cut_round(tmp_path, broker, "FULL", seed, first_run=first_run)
    assert cut.committed > 0
    _assert_nothing_committed_lost(cut)
    assert cut.report is not None
    assert cut.report.missing == [], cut
    assert cut.report.dropped == 0, cut


@ROUNDS
def test_f16_normal_loses_a_tail_and_never_reuses_a_seq(
    tmp_path: Path, broker: Mosquitto, seed: int, first_run: bool
) -> None:
    cut = _power_cut_round(tmp_path, broker, "NORMAL", seed, first_run=first_run)
    r = cut.report
    assert r is not None
    assert cut.check == ["ok"], cut
    # A tail, no hole: every seq up to the file's last one is in the file or was delivered.
    assert set(range(1, cut.disk_last + 1)) <= set(cut.pending) | cut.delivered, cut
    if cut.pending:
        assert cut.pending == list(range(cut.pending[0], cut.disk_last + 1)), cut
    # The seqs the file lost were skipped at the restart and counted as dropped.
    assert r.dropped >= len(cut.lost), cut
    assert r.lost == 0, cut
    _assert_sound(cut)
    gone = [s for s in r.missing if s <= cut.committed]
    assert set(gone) <= set(cut.lost), f"missing seqs below the file's last one: {cut}"


def test_f16_off_loses_committed_batches_and_the_judge_sees_it(
    tmp_path: Path, broker: Mosquitto
) -> None:
    cut = _power_cut_round(tmp_path, broker, "OFF", 2)
    assert cut.committed > 0
    assert cut.lost, f"OFF lost nothing: the model or the launcher is not doing its job: {cut}"
    with pytest.raises(AssertionError, match="committed seqs"):
        _assert_nothing_committed_lost(cut)
