"""The loop-to-writer hand-off: the RAM bound covers what the writer took and retries."""

from __future__ import annotations

from agent.buffer.inbox import Inbox, Put


def _put(size: int) -> Put:
    return Put("c1", b"x" * size, b"", 1_764_270_000_000, 1)


def test_work_taken_and_not_committed_counts_against_the_ram_bound() -> None:
    inbox = Inbox(ram_limit=1000)
    assert inbox.put(_put(400))
    assert inbox.put(_put(400))
    work = inbox.take(10, (0, 0))  # the writer's commit of it fails and is retried
    assert len(work.puts) == 2
    assert not inbox.put(_put(400)), "the bound let RAM grow past it while a commit is retried"
    assert inbox.held() == (0, 1)
    inbox.committed()
    assert inbox.put(_put(400))


def test_a_refused_cut_piece_is_counted_as_had_by_the_other_destinations() -> None:
    inbox = Inbox(ram_limit=1000, destinations=3)
    assert inbox.put(_put(900))
    piece = Put("c1", b"x" * 400, b"", 1_764_270_000_000, 1, frozenset({1, 2}))
    assert not inbox.put(piece)
    assert not inbox.put(_put(400))
    work = inbox.take(10, (0, 0))
    assert work.refused == 2
    assert work.spared == {1: 1, 2: 1}  # they have its readings under the original seq
    assert inbox.take(10, (0, 0)).spared == {}
