"""A corrupt buffer file: every skipped seq is counted, no moved-aside file is overwritten."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.buffer import Buffer
from tests.agent.buffer.test_buffer import corrupt_files, fill


def damage(path: Path, where: str) -> None:
    """``header``: nothing readable; ``rows``: the last page, meta still readable."""
    with path.open("r+b") as f:
        if where == "rows":
            f.seek(path.stat().st_size - 4096)
            f.write(b"\xff" * 4096)
        else:
            f.write(b"garbage!" * 16)


@pytest.mark.parametrize("where", ["header", "rows"])
async def test_every_seq_skipped_after_recovery_is_counted_dropped(
    tmp_path: Path, where: str
) -> None:
    """A consumer explains a gap in seq by ``dropped_batches``: all of it must be there.

    The new file starts above the sidecar's reservation (a block above the last
    seq), so the gap is the old file's unpublished rows plus the unused rest of
    the reservation; both are seqs the consumer will never see.
    """
    path = tmp_path / "b.db"
    async with Buffer(path, agent_id="a") as buf:
        await fill(buf, 0, 300, pad=300)
        acked = [r.seq for r in await buf.fetch(0, 100)]
        buf.ack(acked)
        await buf.flush()
    damage(path, where)
    async with Buffer(path, agent_id="a") as buf:
        await fill(buf, 1000, 1)
        first_new = (await buf.fetch(0, 10))[-1].seq
        stats = await buf.stats()
    never_seen = first_new - 1 - len(acked)
    assert stats.dropped_batches >= never_seen > 0
    assert corrupt_files(tmp_path)


async def test_two_corrupt_files_in_one_second_are_both_kept(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    for round_ in range(3):  # well within one second
        async with Buffer(path, agent_id="a") as buf:
            await fill(buf, round_ * 10, 5)
        damage(path, "header")
    async with Buffer(path, agent_id="a"):
        pass
    aside = corrupt_files(tmp_path)
    assert len([p for p in aside if not p.name.endswith("-wal")]) == 3, aside
