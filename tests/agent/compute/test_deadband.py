"""Deadband and heartbeat: what gets reported."""

from __future__ import annotations

from agent.compute.deadband import Filter
from drivers.base import Reading, TagBase


def _filter(**tags: TagBase) -> Filter:
    return Filter(tags)


def test_tags_without_rules_pass_every_poll() -> None:
    f = _filter(a=TagBase())
    assert not f.active
    for ts in range(3):
        assert f.apply(Reading(ts, {"a": 1})).values == {"a": 1}


def test_deadband_reports_only_moves_larger_than_the_band() -> None:
    f = _filter(a=TagBase(deadband=0.5), b=TagBase())
    sent = [
        f.apply(Reading(ts, {"a": v, "b": v})).values
        for ts, v in enumerate([10.0, 10.3, 10.6, 10.2, 11.2, 11.2])
    ]
    assert [s.get("a") for s in sent] == [10.0, None, 10.6, None, 11.2, None]
    assert all("b" in s for s in sent)


def test_heartbeat_reports_a_quiet_tag_again() -> None:
    f = _filter(a=TagBase(deadband=1.0, heartbeat=1.0))
    assert f.apply(Reading(0, {"a": 5})).values == {"a": 5}
    assert f.apply(Reading(500, {"a": 5})).values == {}
    assert f.apply(Reading(1000, {"a": 5})).values == {"a": 5}


def test_heartbeat_alone_reports_on_any_change() -> None:
    f = _filter(s=TagBase(heartbeat=60.0))
    assert f.apply(Reading(0, {"s": "RUN"})).values == {"s": "RUN"}
    assert f.apply(Reading(1, {"s": "RUN"})).values == {}
    assert f.apply(Reading(2, {"s": "STOP"})).values == {"s": "STOP"}


def test_errors_always_pass_and_a_recovered_tag_is_reported_at_once() -> None:
    f = _filter(a=TagBase(deadband=10.0))
    assert f.apply(Reading(0, {"a": 1})).values == {"a": 1}
    failed = f.apply(Reading(1, {}, {"a": "timeout"}))
    assert failed.errors == {"a": "timeout"}
    assert f.apply(Reading(2, {"a": 1})).values == {"a": 1}


def test_bools_and_strings_report_on_change_despite_a_deadband() -> None:
    f = _filter(run=TagBase(deadband=5.0))
    assert f.apply(Reading(0, {"run": False})).values == {"run": False}
    assert f.apply(Reading(1, {"run": False})).values == {}
    assert f.apply(Reading(2, {"run": True})).values == {"run": True}


def test_a_nan_does_not_freeze_a_deadband_tag() -> None:
    """A serial line can carry "nan"; after it, real values must be reported again."""
    f = _filter(a=TagBase(deadband=0.5))
    assert f.apply(Reading(0, {"a": 10.0})).values == {"a": 10.0}
    assert "a" in f.apply(Reading(1, {"a": float("nan")})).values
    assert f.apply(Reading(2, {"a": 10.0})).values == {"a": 10.0}
    assert f.apply(Reading(3, {"a": 10.1})).values == {}
