"""Piece counters: wraps, resets, gaps and restarts with the reference's numbers (T1-T4)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.compute.counters import Counter, CounterError, CounterSpec, Width
from agent.compute.facts import CountStep

SHANGHAI = timezone(timedelta(hours=8))


def _ms(hh: int, mm: int, ss: int = 0) -> int:
    return int(datetime(2026, 3, 2, hh, mm, ss, tzinfo=SHANGHAI).timestamp() * 1000)


def _steps(spec: CounterSpec, reads: list[tuple[int, int]]) -> list[CountStep | None]:
    counter = Counter(spec)
    return [counter.feed(ts, value) for ts, value in reads]


def _restart(counter: Counter) -> Counter:
    """What a restart sees: the state as committed (JSON text), read back."""
    return Counter.from_state(counter.spec, json.loads(json.dumps(counter.state())))


def test_t1_a_16_bit_rollover_is_a_wrap_of_10() -> None:
    steps = _steps(CounterSpec("uint16", max_rate=20), [(0, 65_530), (1_000, 4)])
    assert steps == [
        CountStep(0, None, None, "first", 65_530),
        CountStep(1_000, 0, 10, "wrap", 4),
    ]


def test_t2_a_signed_int32_overflow_is_an_ordinary_rise_of_5() -> None:
    counter = Counter(CounterSpec("int32", max_rate=20))
    counter.feed(0, 2_147_483_645)
    step = counter.feed(1_000, -2_147_483_646)
    assert step == CountStep(1_000, 0, 5, "normal", 2_147_483_650)
    assert counter.running_total == 5


def test_t3_an_implausible_wrap_is_a_reset_counted_from_zero() -> None:
    steps = _steps(CounterSpec("uint32", max_rate=20), [(0, 1_234_567), (5_000, 12)])
    assert steps[1] == CountStep(5_000, 0, 12, "reset", 12)


def test_t3_with_the_reset_signal_the_reset_is_declared() -> None:
    counter = Counter(CounterSpec("uint32", max_rate=20, reset_signal=True))
    counter.feed(0, 1_234_567)
    assert counter.feed(5_000, 12, reset=True) == CountStep(5_000, 0, 12, "declared", 12)
    assert counter.running_total == 12


def test_t4a_a_short_outage_across_a_restart_is_a_wrap_counted_once() -> None:
    spec = CounterSpec("uint16", max_rate=20)
    saved = {"v": 1, "width": "uint16", "last_raw": 65_000, "last_ts_ms": _ms(12, 0)}
    saved["running_total"] = 100_000
    counter = Counter.from_state(spec, saved)
    step = counter.feed(_ms(12, 10), 1_464)
    assert step == CountStep(_ms(12, 10), _ms(12, 0), 2_000, "wrap", 1_464)
    assert counter.running_total == 102_000
    # Second restart after the step was committed with the state: the read
    # delivered again adds nothing, the next one continues from it.
    again = _restart(counter)
    assert again.feed(_ms(12, 10), 1_464) is None
    assert again.running_total == 102_000
    assert again.feed(_ms(12, 10, 1), 1_470) == CountStep(
        _ms(12, 10, 1), _ms(12, 10), 6, "normal", 1_470
    )
    assert again.running_total == 102_006


def test_t4b_an_outage_longer_than_a_wrap_period_is_a_gap() -> None:
    spec = CounterSpec("uint16", max_rate=20)
    assert spec.wrap_period_s() == pytest.approx(3_276.8)
    counter = Counter.from_state(
        spec,
        {
            "v": 1,
            "width": "uint16",
            "last_raw": 65_000,
            "last_ts_ms": _ms(12, 0),
            "running_total": 7,
        },
    )
    step = counter.feed(_ms(14, 0), 1_464)
    assert step == CountStep(_ms(14, 0), _ms(12, 0), None, "gap", 1_464)
    assert step.prev_ts_ms is not None
    assert step.ts_ms - step.prev_ts_ms == 7_200_000
    assert counter.running_total == 7
    # The gap's read is the new reference: counting goes on from it.
    assert counter.feed(_ms(14, 0, 1), 1_480) == CountStep(
        _ms(14, 0, 1), _ms(14, 0), 16, "normal", 1_480
    )


def test_an_error_read_yields_nothing_and_the_next_compares_with_the_last_good() -> None:
    counter = Counter(CounterSpec("uint16", max_rate=20))
    counter.feed(0, 65_530)
    assert counter.feed(1_000, error="timeout") is None
    assert counter.feed(2_000, None, error="crc") is None
    # 3 s since the last good read: up to 60 counts; the wrap of 40 fits.
    assert counter.feed(3_000, 34) == CountStep(3_000, 0, 40, "wrap", 34)


def test_a_counter_that_never_wraps_sums_its_rises() -> None:
    counter = Counter(CounterSpec("uint64", max_rate=1_000))
    values = [0, 10, 10, 900, 1_500, 2_000]
    steps = [counter.feed(i * 1_000, v) for i, v in enumerate(values)]
    assert [s.kind for s in steps if s] == [
        "first",
        "normal",
        "normal",
        "normal",
        "normal",
        "normal",
    ]
    assert [s.delta for s in steps if s] == [None, 10, 0, 890, 600, 500]
    assert counter.running_total == 2_000


def test_a_burst_exactly_at_max_rate_is_plausible_and_one_more_is_not() -> None:
    spec = CounterSpec("uint16", max_rate=20)
    exact = _steps(spec, [(0, 100), (2_000, 140)])[1]
    assert exact is not None
    assert (exact.kind, exact.delta) == ("normal", 40)
    over = _steps(spec, [(0, 100), (2_000, 141)])[1]
    assert over is not None
    assert (over.kind, over.delta) == ("gap", None)
    wrap_exact = _steps(spec, [(0, 65_526), (1_000, 10)])[1]
    assert wrap_exact is not None
    assert (wrap_exact.kind, wrap_exact.delta) == ("wrap", 20)


def test_a_bound_from_a_decimal_rate_is_exact() -> None:
    """0.3 counts/s over 10 s allows 3 counts, although 0.3 * 10 is 2.9999... in floats."""
    step = _steps(CounterSpec("uint32", max_rate=0.3), [(0, 5), (10_000, 8)])[1]
    assert step is not None
    assert (step.kind, step.delta) == ("normal", 3)


def test_a_reset_to_a_value_above_zero_counts_from_zero() -> None:
    spec = CounterSpec("uint32", max_rate=20)
    step = _steps(spec, [(0, 5_000), (10_000, 7)])[1]
    assert step == CountStep(10_000, 0, 7, "reset", 7)
    # More than the rate could have counted since a reset: not explained, a gap.
    step = _steps(spec, [(0, 5_000), (10_000, 201)])[1]
    assert step == CountStep(10_000, 0, None, "gap", 201)


def test_without_max_rate_a_fall_to_half_or_less_is_a_reset_else_a_gap() -> None:
    spec = CounterSpec("uint16")
    assert spec.wrap_period_s() is None
    # No wrap without a bound: 65,530 -> 4 is taken as a reset (4 counted), a lower bound.
    assert _steps(spec, [(0, 65_530), (1_000, 4)])[1] == CountStep(1_000, 0, 4, "reset", 4)
    assert _steps(spec, [(0, 1_000), (1_000, 500)])[1] == CountStep(1_000, 0, 500, "reset", 500)
    assert _steps(spec, [(0, 1_000), (1_000, 501)])[1] == CountStep(1_000, 0, None, "gap", 501)
    # Any rise is accepted: nothing bounds it.
    assert _steps(spec, [(0, 0), (1, 60_000)])[1] == CountStep(1, 0, 60_000, "normal", 60_000)


def test_a_declared_reset_wins_over_a_plausible_rise() -> None:
    counter = Counter(CounterSpec("uint16", max_rate=20, reset_signal=True))
    counter.feed(0, 10)
    assert counter.feed(1_000, 15, reset=True) == CountStep(1_000, 0, 15, "declared", 15)


def test_a_reset_flag_on_a_counter_without_a_signal_is_refused() -> None:
    counter = Counter(CounterSpec("uint16", max_rate=20))
    with pytest.raises(CounterError, match="without a reset signal"):
        counter.feed(0, 10, reset=True)


def test_a_float_is_accepted_when_it_holds_a_whole_number() -> None:
    counter = Counter(CounterSpec("uint32", max_rate=20))
    counter.feed(0, 100.0)
    assert counter.feed(1_000, 104.0) == CountStep(1_000, 0, 4, "normal", 104)
    with pytest.raises(CounterError, match="not a whole number"):
        counter.feed(2_000, 104.5)
    with pytest.raises(CounterError, match="may have lost counts"):
        Counter(CounterSpec("uint64")).feed(0, float(2**60))


@pytest.mark.parametrize("value", [True, "12", float("nan"), float("inf")])
def test_values_that_are_not_counts_are_refused(value: object) -> None:
    with pytest.raises(CounterError):
        Counter(CounterSpec("uint16")).feed(0, value)


@pytest.mark.parametrize(
    ("width", "value"),
    [("uint16", 65_536), ("uint16", -1), ("int16", 32_768), ("int32", -(2**31) - 1)],
)
def test_values_outside_the_width_are_refused(width: Width, value: int) -> None:
    with pytest.raises(CounterError, match="outside"):
        Counter(CounterSpec(width)).feed(0, value)


def test_signed_16_bit_values_are_reinterpreted() -> None:
    counter = Counter(CounterSpec("int16", max_rate=10))
    counter.feed(0, 32_766)
    assert counter.feed(1_000, -32_766) == CountStep(1_000, 0, 4, "normal", 32_770)
    counter = Counter(CounterSpec("int16", max_rate=10))
    counter.feed(0, -3)  # 65,533 unsigned
    assert counter.feed(1_000, 1) == CountStep(1_000, 0, 4, "wrap", 1)


@pytest.mark.parametrize("rate", [0, -1, float("nan"), float("inf"), True])
def test_a_bad_max_rate_is_refused(rate: float) -> None:
    with pytest.raises(CounterError, match="max_rate"):
        CounterSpec("uint16", max_rate=rate)


def test_an_unknown_width_is_refused() -> None:
    with pytest.raises(CounterError, match="width"):
        CounterSpec("uint8")  # type: ignore[arg-type]


def test_a_state_for_another_width_or_malformed_is_refused() -> None:
    state = Counter(CounterSpec("uint16")).state()
    with pytest.raises(CounterError, match="saved for 'uint16'"):
        Counter.from_state(CounterSpec("uint32"), state)
    with pytest.raises(CounterError, match="version"):
        Counter.from_state(CounterSpec("uint16"), {**state, "v": 2})
    with pytest.raises(CounterError, match="set together"):
        Counter.from_state(CounterSpec("uint16"), {**state, "last_raw": 5})
    with pytest.raises(CounterError, match="outside"):
        Counter.from_state(CounterSpec("uint16"), {**state, "last_raw": 70_000, "last_ts_ms": 1})
    with pytest.raises(CounterError, match="not an integer"):
        Counter.from_state(CounterSpec("uint16"), {**state, "running_total": "5"})


def test_a_fresh_counter_restored_from_its_empty_state_starts_with_first() -> None:
    counter = _restart(Counter(CounterSpec("uint16", max_rate=20)))
    step = counter.feed(5, 3)
    assert step is not None
    assert step.kind == "first"
    assert counter.running_total == 0


@settings(max_examples=300, deadline=None)
@given(
    width=st.sampled_from(["uint16", "int16", "uint32"]),
    start=st.one_of(st.integers(min_value=0, max_value=2**32), st.integers(-200_000, -1)),
    moves=st.lists(
        # Up to 3,200 s at 20/s: below one 16-bit wrap period, so never a gap.
        st.tuples(st.integers(1, 3_200_000), st.floats(min_value=0, max_value=1)),
        min_size=1,
        max_size=60,
    ),
    restart_at=st.integers(min_value=0, max_value=60),
)
def test_deltas_sum_to_the_true_increments(
    width: Width, start: int, moves: list[tuple[int, float]], restart_at: int
) -> None:
    """Any increments within max_rate * dt, wrapping as they may, are counted exactly,
    also across a restart through the saved state."""
    spec = CounterSpec(width, max_rate=20)
    modulus = spec.modulus
    true = start % modulus
    ts = 0
    counter = Counter(spec)

    def register(n: int) -> int:  # what the device shows: signed widths read negative
        n %= modulus
        return n - modulus if spec.signed and n >= modulus // 2 else n

    counter.feed(ts, register(true))
    made = 0
    for i, (dt_ms, share) in enumerate(moves):
        if i == restart_at:
            counter = _restart(counter)
        ts += dt_ms
        increment = int(20 * dt_ms / 1000 * share)
        true += increment
        made += increment
        step = counter.feed(ts, register(true))
        assert step is not None
        assert step.kind in ("normal", "wrap")
    assert counter.running_total == made
