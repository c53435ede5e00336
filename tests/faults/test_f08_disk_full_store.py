"""F8, at the store and buffer level: a full disk is told from the cap at every cap size.

A full disk never drops a batch, neither committed nor new: the store raises
:class:`DiskFull` and changes nothing, whether the cap is small or large and
the file nearly empty or nearly at its cap. Only the cap drops, and only at it.
What the writer holds in RAM while the disk is full is committed, every batch
of it, once space returns.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

from agent.buffer.inbox import Put, Work
from agent.buffer.records import OnFull, StoreConfig
from agent.buffer.store import Store
from agent.errors import DiskFull
from agent.message import encode_parts
from drivers.base import Reading
from tests.faults.harness import AGENT, pending_seqs
from tests.support.smalldisk import fill, small_disk


def _puts(n: int, pad: int = 0) -> Work:
    readings = [Reading(ts=1_764_270_000_000, values={"m": 1, "pad": "x" * pad})]
    head, tail = encode_parts(AGENT, "c1", readings)
    return Work(puts=[Put("c1", head, tail, 1_764_270_000_000, 1) for _ in range(n)], n_ops=n)


def _fill_to(store: Store, share: float) -> None:
    """Commit padded rows until ``share`` of the cap's pages are used."""
    for _ in range(2000):  # bounded
        if store._free_pages() <= store.max_pages * (1 - share):
            return
        store.commit(_puts(5, pad=300))
    raise AssertionError("the file never reached the share asked for")


@pytest.mark.parametrize("slack", [2, 3])
@pytest.mark.parametrize("on_full", ["drop_oldest", "drop_newest"])
@pytest.mark.parametrize(
    ("cap", "share"),
    [(100_000, 0.3), (300_000, 0.1), (300_000, 0.6), (1_000_000, 0.67), (1_000_000, 0.9),
     (4_000_000, 0.3), (4_000_000, 0.95)],
)  # fmt: skip
def test_f08_full_disk_below_cap_never_drops(
    tmp_path: Path, cap: int, share: float, on_full: OnFull, slack: int
) -> None:
    """Whatever the cap and the file's share of it: a full disk drops nothing, new or old.

    ``slack`` pages are left on the disk: room for a WAL frame or two, so a
    commit of many rows fails while one that refused them all (meta only) fits.
    """
    with small_disk(tmp_path / "data", "8m") as disk:
        path = disk / "buffer.db"
        store = Store(StoreConfig(path, AGENT, cap, on_full, "FULL"))
        _fill_to(store, share)
        store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        committed = store.last_seq
        filler = fill(disk)
        os.truncate(filler, max(0, filler.stat().st_size - slack * 4096))
        failed = 0
        for n in itertools.islice(itertools.cycle([60, 20, 5, 1]), 400):  # bounded
            try:
                store.commit(_puts(n))
            except DiskFull:
                failed += 1
                if failed == 10:
                    break
            else:
                committed += n
            assert store.dropped == 0, f"{store.dropped} batches dropped on a full disk"
            assert store.last_seq == committed
        assert failed == 10, "the disk never filled"
        assert pending_seqs(path) == list(range(1, committed + 1))
        filler.unlink()
        assert store.commit(_puts(5)) == committed + 5
        assert store.dropped == 0
        store.close()


@pytest.mark.parametrize("on_full", ["drop_oldest", "drop_newest"])
@pytest.mark.parametrize("cap", [100_000, 300_000, 1_000_000])
def test_f08_cap_reached_with_room_on_disk_drops(tmp_path: Path, cap: int, on_full: OnFull) -> None:
    """The cap still drops (and counts) at every size: a full disk is not assumed."""
    path = tmp_path / "buffer.db"
    store = Store(StoreConfig(path, AGENT, cap, on_full, "FULL"))
    n = 0
    for _ in range(cap // 1000):  # bounded: well past the cap
        store.commit(_puts(5, pad=300))
        n += 5
    assert store.dropped > 0
    assert store.last_seq + (0 if on_full == "drop_oldest" else store.dropped) == n
    seqs = pending_seqs(path)
    assert len(seqs) + store.dropped == n
    store.close()
    assert os.path.getsize(path) <= cap
