"""seq is never reused, also when ``synchronous=NORMAL`` lost its last commits to a power cut.

Under NORMAL a commit is visible (and published) before it is on the disk, so a
power cut can roll the database back below seqs a consumer already holds. The
rollback is staged here by hand: the files as they were at an earlier instant
(what the disk kept) are put back after more batches were committed, while
the seq sidecar, which is always synced before a commit uses its seqs, keeps
its reservation.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from agent.buffer import Buffer, Synchronous
from drivers.base import Reading

AGENT = "seq-box"
_FILES = ("", "-wal", ".open")  # what a power cut leaves of the store (the sidecar is kept)


def _readings(i: int) -> list[Reading]:
    return [Reading(ts=1_764_270_000_000 + i, values={"v": i})]


async def _commit(buf: Buffer, n: int) -> list[int]:
    before = buf.last_seq
    for i in range(n):
        buf.put("dev", _readings(i))
    await buf.flush()
    return list(range(before + 1, buf.last_seq + 1))


def _marker_left(db: Path) -> bool:
    return Path(f"{db}.open").exists()


def _snapshot(db: Path, into: Path) -> None:
    into.mkdir()
    for suffix in _FILES:
        source = Path(f"{db}{suffix}")
        if source.exists():
            shutil.copyfile(source, into / f"{db.name}{suffix}")


def _restore(db: Path, snapshot: Path) -> None:
    for suffix in (*_FILES, "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
        saved = snapshot / f"{db.name}{suffix}"
        if saved.exists():
            shutil.copyfile(saved, f"{db}{suffix}")


async def _rolled_back(tmp_path: Path, mode: Synchronous) -> tuple[list[int], Buffer]:
    """Commit 1..10 and 11..20 while the disk only kept 1..10; the seqs handed out, and
    a buffer (not open) on the rolled-back files."""
    db = tmp_path / "buffer.db"
    async with Buffer(db, agent_id=AGENT, synchronous=mode, commit_interval=0) as buf:
        published = await _commit(buf, 10)
        _snapshot(db, tmp_path / "disk")  # the last sync: what the power cut leaves
        published += await _commit(buf, 10)
    # (the clean close above is the agent's last word; the cut came before it)
    _restore(db, tmp_path / "disk")
    return published, Buffer(db, agent_id=AGENT, synchronous=mode, commit_interval=0)


async def test_normal_after_a_rollback_never_reuses_a_published_seq(tmp_path: Path) -> None:
    published, again = await _rolled_back(tmp_path, "NORMAL")
    assert published == list(range(1, 21))
    async with again as buf:
        new = await _commit(buf, 5)
        stats = await buf.stats()
    assert min(new) > max(published), f"seqs {sorted(set(new) & set(published))} reused"
    # the skipped range is counted as possible loss, so a consumer's gap has a counted cause
    assert stats.dropped_batches == min(new) - 1 - 10


async def test_normal_clean_restart_continues_exactly(tmp_path: Path) -> None:
    db = tmp_path / "buffer.db"
    async with Buffer(db, agent_id=AGENT, synchronous="NORMAL", commit_interval=0) as buf:
        first = await _commit(buf, 10)
    async with Buffer(db, agent_id=AGENT, synchronous="NORMAL", commit_interval=0) as buf:
        second = await _commit(buf, 3)
        stats = await buf.stats()
    assert second == [max(first) + 1, max(first) + 2, max(first) + 3]
    assert stats.dropped_batches == 0
    assert not _marker_left(db)  # the clean close removed the run marker


async def test_full_unclean_restart_continues_exactly(tmp_path: Path) -> None:
    """Under FULL what COMMIT returned is on the disk: an unclean start needs no skip."""
    db = tmp_path / "buffer.db"
    async with Buffer(db, agent_id=AGENT, synchronous="FULL", commit_interval=0) as buf:
        await _commit(buf, 10)
        _snapshot(db, tmp_path / "disk")  # like a kill -9 now: the marker says FULL
    _restore(db, tmp_path / "disk")
    async with Buffer(db, agent_id=AGENT, synchronous="FULL", commit_interval=0) as buf:
        assert await _commit(buf, 2) == [11, 12]
        assert (await buf.stats()).dropped_batches == 0


async def test_an_unclean_normal_run_is_skipped_also_when_restarted_with_full(
    tmp_path: Path,
) -> None:
    """The run that was cut decides, not the mode of the next start."""
    published, _ = await _rolled_back(tmp_path, "NORMAL")
    db = tmp_path / "buffer.db"
    async with Buffer(db, agent_id=AGENT, synchronous="FULL", commit_interval=0) as buf:
        new = await _commit(buf, 2)
    assert min(new) > max(published)


async def test_normal_reserves_a_small_block(tmp_path: Path) -> None:
    """The skip after an unclean NORMAL run is at most one reservation block."""
    published, again = await _rolled_back(tmp_path, "NORMAL")
    async with again as buf:
        new = await _commit(buf, 1)
    assert max(published) < new[0] <= max(published) + 1_000 + 1


def _lose_whole_file(db: Path) -> None:
    """What a power cut leaves of a database never synced: the name, no content."""
    db.write_bytes(b"")
    Path(f"{db}-wal").unlink(missing_ok=True)
    Path(f"{db}-shm").unlink(missing_ok=True)


async def test_normal_run_cut_before_its_first_sync_counts_every_skipped_seq(
    tmp_path: Path,
) -> None:
    """The whole file lost (a fresh box cut before its first checkpoint): the skip is counted.

    Under NORMAL nothing of the database reaches the disk before a checkpoint,
    so a cut in the first seconds leaves an empty file, while the run marker and
    the seq sidecar (both synced) survive. The next start begins above the
    reservation; every seq below it is a gap the consumer sees and must be
    counted as dropped, or the gap has no counted cause.
    """
    db = tmp_path / "buffer.db"
    async with Buffer(db, agent_id=AGENT, synchronous="NORMAL", commit_interval=0) as buf:
        published = await _commit(buf, 10)
        _snapshot(db, tmp_path / "disk")
    _restore(db, tmp_path / "disk")
    _lose_whole_file(db)
    async with Buffer(db, agent_id=AGENT, synchronous="NORMAL", commit_interval=0) as buf:
        new = await _commit(buf, 3)
        stats = await buf.stats()
    assert min(new) > max(published)
    assert stats.dropped_batches == min(new) - 1  # nothing below the new seqs is in the file


async def test_two_cuts_before_any_sync_count_both_skips(tmp_path: Path) -> None:
    """A restart cut again before its first checkpoint: the count covers both lost runs."""
    db = tmp_path / "buffer.db"
    published: list[int] = []
    for _ in range(2):
        async with Buffer(db, agent_id=AGENT, synchronous="NORMAL", commit_interval=0) as buf:
            published += await _commit(buf, 10)
            (tmp_path / "disk").mkdir(exist_ok=True)
            shutil.copyfile(f"{db}.open", tmp_path / "disk" / "marker")
        shutil.copyfile(tmp_path / "disk" / "marker", f"{db}.open")  # the clean close was cut
        _lose_whole_file(db)
    async with Buffer(db, agent_id=AGENT, synchronous="NORMAL", commit_interval=0) as buf:
        new = await _commit(buf, 1)
        stats = await buf.stats()
    assert min(new) > max(published)
    assert stats.dropped_batches == min(new) - 1
