"""The Sparkplug referee catches what it is there to catch (messages fed by hand, no broker)."""

from __future__ import annotations

from agent.north.sparkplug.encode import EdgeSession, Outgoing, TagSpec
from drivers.base import Reading, Value
from tests.faults.sparkplug_checker import SparkplugChecker

NOW = 1_764_270_000_000
TAGS = [TagSpec("t1", "UInt16"), TagSpec("t2", "UInt16")]


def checker(window: int = 100) -> SparkplugChecker:
    """A checker that is never connected: :meth:`record` is called directly."""
    return SparkplugChecker(1, "g", "n", window=window)


def feed(c: SparkplugChecker, *messages: Outgoing, dup: bool = False) -> None:
    for m in messages:
        c.record(m.topic, m.payload, dup)


def born(node: EdgeSession, *devices: str) -> list[Outgoing]:
    """The Will's bdSeq taken, the NBIRTH, a DBIRTH per device."""
    node.will(NOW)
    return [node.nbirth(NOW), *(node.dbirth(d, TAGS, NOW) for d in devices)]


def data(
    node: EdgeSession, device: str, seq: int, tick: int = 0, *, historical: bool = False
) -> Outgoing:
    values: dict[str, Value] = {"t1": 1 + 1000 * tick, "t2": 2 + 1000 * tick}
    return node.ddata(device, [Reading(NOW + seq, values)], NOW, seq, historical=historical)


def test_a_clean_session_passes() -> None:
    c, node = checker(), EdgeSession("g", "n")
    feed(c, *born(node, "d1", "d2"))
    feed(c, data(node, "d1", 1, historical=True), data(node, "d2", 2), node.ndeath(NOW))
    report = c.report(2)
    assert [a.historical for a in c.arrivals() if a.kind == "DDATA"] == [True, False]
    assert c.first_ddata_after_birth(0, timeout=0) == c.arrivals()[3]
    assert report.problems() == []
    assert report.missing == []
    assert report.edge.values == 4  # tag values
    assert (report.births, report.deaths, report.unmatched_births()) == ([0], [0], [])


def test_a_lost_ddata_is_a_missing_seq_and_a_sparkplug_seq_gap() -> None:
    c, node = checker(), EdgeSession("g", "n")
    feed(c, *born(node, "d1"), data(node, "d1", 1))
    data(node, "d1", 2)  # never arrives
    feed(c, data(node, "d1", 3), data(node, "d1", 4))
    report = c.report(4)
    assert report.missing == [2]
    assert len(report.violations) == 1, report.violations  # resynchronised after the gap
    assert "seq gap" in report.violations[0]


def test_ddata_before_its_dbirth_and_after_the_ndeath_break_the_rules() -> None:
    c, node = checker(), EdgeSession("g", "n")
    births = born(node, "d1", "d2")
    feed(c, births[0], births[1], data(node, "d1", 1))
    feed(c, data(node, "d2", 2))  # d2's DBIRTH never arrived
    assert any("without its DBIRTH" in v for v in c.report(2).violations)
    c, node = checker(), EdgeSession("g", "n")
    feed(c, *born(node, "d1"), node.ndeath(NOW), data(node, "d1", 1))
    assert any("no live NBIRTH" in v for v in c.report(1).violations)


def test_a_resend_is_legal_only_after_a_new_connection_and_within_the_window() -> None:
    c, node = checker(window=1), EdgeSession("g", "n")
    feed(c, *born(node, "d1"), data(node, "d1", 1), data(node, "d1", 2))
    feed(c, node.ndeath(NOW), *born(node, "d1"), data(node, "d1", 1), data(node, "d1", 2))
    report = c.report(2)
    assert [(d.seq, d.legal) for d in report.duplicates] == [(1, True), (2, False)]
    c, node = checker(), EdgeSession("g", "n")
    feed(c, *born(node, "d1"), data(node, "d1", 1), data(node, "d1", 1))  # same connection
    assert [d.legal for d in c.report(1).duplicates] == [False]


def test_the_brokers_redelivery_to_the_checker_is_not_the_agents_duplicate() -> None:
    c, node = checker(), EdgeSession("g", "n")
    feed(c, *born(node, "d1"))
    first = data(node, "d1", 1)
    feed(c, first, data(node, "d1", 2))
    feed(c, first, dup=True)  # byte for byte again, DUP flag: the rig's own copy
    report = c.report(2)
    assert report.problems() == []
    assert [(d.seq, d.redelivered) for d in report.duplicates] == [(1, True)]


def test_order_reuse_wrong_tags_and_a_reused_bdseq_are_caught() -> None:
    c, node = checker(), EdgeSession("g", "n")
    feed(c, *born(node, "d1"), data(node, "d1", 2), data(node, "d1", 1))
    feed(c, node.ndeath(NOW), *born(node, "d1"), data(node, "d1", 2, tick=5))  # other content
    bad = node.ddata("d1", [Reading(NOW, {"t1": 1002})], NOW, 3)  # t2's value on t1
    feed(c, bad)
    report = c.report(3)
    assert report.edge.order_violations == {"d1": [(2, 1)]}
    assert report.edge.reused == [2]
    assert report.edge.wrong_tag == [(3, "t1", 1002)]
    restarted = EdgeSession("g", "n", next_bd_seq=0)  # a restart that forgot its bdSeq
    feed(c, node.ndeath(NOW), *born(restarted, "d1"))
    assert any("reuses bdSeq 0" in v for v in c.report(3).violations)


def test_a_will_of_a_connection_never_born_is_stale_not_a_death() -> None:
    c, node = checker(), EdgeSession("g", "n")
    feed(c, *born(node, "d1"), data(node, "d1", 1))
    other = EdgeSession("g", "n", next_bd_seq=9)
    feed(c, other.will(NOW))  # an older connection's Will arriving late
    feed(c, data(node, "d1", 2))
    report = c.report(2)
    assert report.problems() == []
    assert report.stale_deaths == [9]
    assert report.unmatched_births() == [0]  # the live connection has not ended
