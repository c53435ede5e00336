"""What ended connections tell the publisher: size limits, storms, takeovers (pure logic)."""

from __future__ import annotations

import logging

import pytest

from agent.north import health as health_module
from agent.north.health import STABLE_S, SUMMARY_S, LinkEnd, LinkHealth
from agent.north.options import MqttOptions, PublisherStats, packet_size, payload_budget

LOST = "the connection to the broker was lost"


def health() -> tuple[LinkHealth, PublisherStats]:
    stats = PublisherStats()
    opts = MqttOptions(host="127.0.0.1", client_id="box-7", max_message_size=65536)
    return LinkHealth(opts, stats), stats


def test_the_same_large_head_twice_lowers_the_limit_and_names_the_size() -> None:
    h, _ = health()
    h.largest_acked = 300
    assert h.ended(LinkEnd(LOST, 0.05, False, (42, 6144))) == LOST
    sentence = h.ended(LinkEnd(LOST, 0.05, False, (42, 6144)))
    assert "after a 6,144-byte message" in sentence
    assert "set mqtt.max_message_size below it" in sentence
    assert h.limit == 3072


def test_a_size_the_broker_took_before_is_no_size_problem() -> None:
    h, _ = health()
    h.largest_acked = 8000
    h.ended(LinkEnd(LOST, 0.05, False, (42, 6144)))
    sentence = h.ended(LinkEnd(LOST, 0.05, False, (42, 6144)))
    assert "byte message" not in sentence
    assert h.limit == 65536


def test_our_own_dead_link_abort_is_not_counted_as_the_broker_closing() -> None:
    h, stats = health()
    for _ in range(3):
        assert h.ended(LinkEnd("no PUBACK", 10.5, True, (42, 6144))) == "no PUBACK"
    assert h.limit == 65536
    assert stats.early_disconnects == 0


def test_repeated_early_closes_name_a_probable_takeover() -> None:
    h, stats = health()
    assert h.ended(LinkEnd(LOST, 1.5, False, None)) == LOST
    sentence = h.ended(LinkEnd(LOST, 1.2, False, None))
    assert "probably another client with the client id 'box-7'" in sentence
    assert stats.early_disconnects == 2
    assert h.stable() is False  # nothing was warned through log_down here
    assert h.ended(LinkEnd(LOST, 1.2, False, None)) == LOST  # a stable link ended the streak


def test_immediate_closes_name_a_refusal_or_a_takeover() -> None:
    h, _ = health()
    h.ended(LinkEnd(LOST, 0.01, False, None))
    sentence = h.ended(LinkEnd(LOST, 0.01, False, None))
    assert "probably refuses something" in sentence


def test_a_long_link_ending_is_no_storm() -> None:
    h, stats = health()
    for _ in range(3):
        assert h.ended(LinkEnd(LOST, STABLE_S + 1, False, None)) == LOST
    assert stats.early_disconnects == 0


def test_packet_size_and_payload_budget_agree() -> None:
    topic = "edge/box/dev"
    for limit in (1024, 4096, 65536, 3_000_000):
        assert packet_size(topic, payload_budget(limit, topic)) <= limit
    assert packet_size("a", 0) == 1 + 1 + 2 + 1 + 2


class _Clock:
    """Stands in for the ``time`` module inside agent.north.health only."""

    def __init__(self, now: list[float]) -> None:
        self._now = now

    def monotonic(self) -> float:
        return self._now[0]


def test_a_storm_logs_one_warning_then_a_summary_per_period(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.DEBUG, "agent.north.link")
    now = [1000.0]
    monkeypatch.setattr(health_module, "time", _Clock(now))
    h, _ = health()
    for _ in range(500):  # a storm: hundreds of failures within seconds
        h.log_down(LOST)
        now[0] += 0.01
    now[0] += SUMMARY_S
    h.log_down(LOST)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 2, warnings
    assert "500 more failed or dropped connections" in warnings[1]
    assert h.stable() is True  # the link held: the warning is lifted ("reachable again")
