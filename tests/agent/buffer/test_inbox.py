"""The loop-to-writer hand-off: the RAM bound covers what the writer took and retries."""

from __future__ import annotations

from agent.buffer.inbox import Inbox, Put
from agent.buffer.records import FactRow, FactsSave


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


def test_the_pieces_of_a_cut_events_batch_are_taken_by_one_commit() -> None:
    """The state rides on the last piece: a commit that ended inside the group let the
    first pieces land without it, and a kill then counted their pieces again."""
    inbox = Inbox()
    save = FactsSave("m", b"{}")
    for i in range(3):
        inbox.put(Put("m", b"h", b"t", 0, 1, save=save if i == 2 else None, more=i < 2))
    inbox.put(Put("d", b"h", b"t", 0, 1))
    work = inbox.take(1)
    assert [p.more for p in work.puts] == [True, True, False]
    assert work.saves == [save]
    assert len(inbox.take(10).puts) == 1


def test_state_only_saves_of_one_key_fold_while_they_wait() -> None:
    """A full disk holds the work: a save every few seconds must not pile up in RAM."""
    inbox = Inbox()
    row = FactRow("m", 1, "state", b"{}")
    assert inbox.save(FactsSave("m", b"1", (row,)))
    for n in range(2, 1000):
        assert not inbox.save(FactsSave("m", str(n).encode()))
    assert inbox.save(FactsSave("n", b"x"))
    work = inbox.take(10)
    assert work.saves == [FactsSave("m", b"999", (row,)), FactsSave("n", b"x")]
    # a batch carrying the key's state ends the folding: a later save comes after it
    inbox.save(FactsSave("m", b"a"))
    inbox.put(Put("m", b"h", b"t", 0, 1, save=FactsSave("m", b"b")))
    assert inbox.save(FactsSave("m", b"c"))
    assert [s.state for s in inbox.take(10).saves] == [b"a", b"b", b"c"]
