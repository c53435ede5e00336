"""Energy per shift, per state and per part; the numbers are worked out by hand in comments."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from fractions import Fraction
from zoneinfo import ZoneInfo

import pytest

from agent.compute.energy import MeterRead, energy_summary, float32, float32_step
from agent.compute.facts import StateInterval

SHANGHAI = ZoneInfo("Asia/Shanghai")
MINUTE = 60_000


def t(hhmm: str) -> int:
    """Epoch ms of a local ``HH:MM`` on Monday 2 March 2026 in Shanghai."""
    hh, mm = (int(p) for p in hhmm.split(":"))
    return int(datetime(2026, 3, 2, hh, mm, tzinfo=SHANGHAI).timestamp()) * 1000


# The day shift 08:00-16:00, a read every 10 min (thinned here to the reads around the
# two shift ends and the state change at 12:00; the register is cumulative).
SHIFT_READS = [
    MeterRead(t("07:55"), 900.5),
    MeterRead(t("08:05"), 901.5),
    MeterRead(t("11:55"), 950.25),
    MeterRead(t("12:05"), 951.25),
    MeterRead(t("15:57"), 1000.0),
    MeterRead(t("16:04"), 1000.875),
]
SHIFT_STATES = [
    StateInterval(t("07:00"), t("12:00"), "running"),
    StateInterval(t("12:00"), None, "idle"),
]


def test_shift_energy_is_interpolated_at_its_ends() -> None:
    got = energy_summary(
        SHIFT_READS,
        t("08:00"),
        t("16:00"),
        SHIFT_STATES,
        poll_interval_ms=10 * MINUTE,
        good=950,
        total=1000,
    )
    # E(08:00) = 900.5 + (901.5 - 900.5) x 5/10 = 901.0
    # E(12:00) = 950.25 + (951.25 - 950.25) x 5/10 = 950.75
    # E(16:00) = 1000.0 + (1000.875 - 1000.0) x 3/7 = 1000.375
    # kwh = 1000.375 - 901.0 = 99.375; running 950.75 - 901.0 = 49.75; idle 49.625
    assert got.kwh == Fraction("99.375")
    assert got.kwh_by_state == {"running": Fraction("49.75"), "idle": Fraction("49.625")}
    assert sum(got.kwh_by_state.values()) == got.kwh
    d = got.to_dict()
    # per good part 99.375 / 950 = 0.1046052..., per part 99.375 / 1000
    assert (d["kwh"], d["kwh_per_good"], d["kwh_per_total"]) == (99.375, 0.104605, 0.099375)
    assert (d["complete"], d["boundary_uncertain"], d["meter_gaps"]) == (True, False, 0)
    assert d["covered_s"] == 8 * 3600
    # The largest read, 1000.875, lies in [512, 1024): a float32 step of 2^-14 kWh.
    assert d["resolution_kwh"] == 2.0**-14


def test_the_next_shift_gets_the_rest_of_the_boundary_pair() -> None:
    got = energy_summary(SHIFT_READS, t("16:00"), t("16:04"), poll_interval_ms=10 * MINUTE)
    # E(16:04) - E(16:00) = 1000.875 - 1000.375: the two shifts share the pair exactly.
    assert got.kwh == Fraction("0.5")
    assert got.kwh_by_state == {"unknown": Fraction("0.5")}


def test_float32_near_2_pow_24_is_taken_exactly_as_the_register_holds_it() -> None:
    # Above 2^24 = 16,777,216 a float32 step is 2 kWh: 16,777,217 is stored as 16,777,216,
    # 16,777,219 (half-way) as 16,777,220 (even), 16,777,223 as 16,777,224. So the reads
    # are 16,777,215 / 16,777,216 / 16,777,218 / 16,777,220 / 16,777,224.
    values = [16_777_215.0, 16_777_217.0, 16_777_218.0, 16_777_219.0, 16_777_223.0]
    reads = [MeterRead(i * 1000, v) for i, v in enumerate(values)]
    states = [
        StateInterval(0, 2500, "running"),
        StateInterval(2500, 4000, "idle"),
    ]
    got = energy_summary(reads, 0, 4000, states, poll_interval_ms=1000, good=3, total=4)
    # 16,777,224 - 16,777,215 = 9 kWh. E(2.5 s) = 16,777,218 + 2 x 0.5 = 16,777,219, a value
    # float32 cannot hold but the arithmetic here can: running 4, idle 5.
    assert got.kwh == 9
    assert got.kwh_by_state == {"running": 4, "idle": 5}
    d = got.to_dict()
    assert (d["kwh_per_good"], d["kwh_per_total"], d["resolution_kwh"]) == (3.0, 2.25, 2.0)
    # Adding 1 kWh in float32 at 2^24 is lost: why nothing is accumulated in float32.
    assert float32(16_777_216.0 + 1.0) == 16_777_216
    assert float32_step(16_777_215.0) == 1.0


def test_a_float32_value_printed_and_read_back_is_the_registers_own() -> None:
    # 12453.123 as float32 is 12453.123046875 (a step of 2^-10 = 0.0009765625 kWh there);
    # 12454.5 - 12453.123046875 = 1.376953125 = 705/512, exactly.
    reads = [MeterRead(0, 12_453.123), MeterRead(MINUTE, 12_454.5)]
    got = energy_summary(reads, 0, MINUTE, poll_interval_ms=MINUTE)
    assert got.kwh == Fraction(705, 512)
    assert got.resolution_kwh == 0.0009765625


def test_an_exact_register_in_hundredths_keeps_its_decimals() -> None:
    # An int32 register in 0.01 kWh (Acrel ADW300): 1245312 and 1245450 -> 1.38 kWh.
    reads = [MeterRead(0, Decimal(1_245_312) / 100), MeterRead(MINUTE, Decimal(1_245_450) / 100)]
    got = energy_summary(reads, 0, MINUTE, poll_interval_ms=MINUTE, register="exact")
    assert got.kwh == Fraction("1.38")
    assert got.resolution_kwh == 0.0


def test_many_small_steps_add_up_without_float_error() -> None:
    # 600 reads a second apart, 0.1 kWh more each, from 100,000 kWh (a float32 step of
    # 2^-7 kWh there), states changing every 1.7 s between reads: the parts add up to
    # exactly last - first.
    reads = [MeterRead(i * 1000, 100_000 + 0.1 * i) for i in range(600)]
    states = [
        StateInterval(k * 1700, (k + 1) * 1700, "running" if k % 2 else "idle")
        for k in range(600_000 // 1700 + 1)
    ]
    got = energy_summary(reads, 0, 599_000, states, poll_interval_ms=1000)
    assert got.kwh == float32(100_000 + 0.1 * 599) - float32(100_000.0)
    assert sum(got.kwh_by_state.values()) == got.kwh
    assert set(got.kwh_by_state) == {"running", "idle"}


def test_a_declared_reset_counts_from_zero() -> None:
    # 500 -> 510 (10 kWh), meter replaced, 2 kWh on the new one, then 2 -> 4 (2 kWh): 14.
    reads = [
        MeterRead(0, 500.0),
        MeterRead(1000, 510.0),
        MeterRead(2000, 2.0, reset=True),
        MeterRead(3000, 4.0),
    ]
    got = energy_summary(reads, 0, 3000, poll_interval_ms=1000)
    assert (got.kwh, got.meter_gaps, got.complete) == (Fraction(14), 0, True)


def test_an_undeclared_decrease_is_a_gap_never_a_guess() -> None:
    # The same reads without the declaration: 510 -> 2 is refused (no wrap for a kWh
    # register); 10 + 2 = 12 kWh over the 2 s known, 1 s unknown.
    reads = [
        MeterRead(0, 500.0),
        MeterRead(1000, 510.0),
        MeterRead(2000, 2.0),
        MeterRead(3000, 4.0),
    ]
    got = energy_summary(reads, 0, 3000, poll_interval_ms=1000, good=6, total=6)
    assert (got.kwh, got.meter_gaps, got.covered_ms, got.complete) == (Fraction(12), 1, 2000, False)
    assert got.kwh_per_good == 2


def test_a_running_figure_covers_what_is_read_so_far() -> None:
    reads = SHIFT_READS[:4]  # the last read is 12:05
    got = energy_summary(
        reads, t("08:00"), t("16:00"), poll_interval_ms=10 * MINUTE, as_of_ms=t("12:05")
    )
    # E(12:05) - E(08:00) = 951.25 - 901.0
    assert (got.kwh, got.complete) == (Fraction("50.25"), True)
    later = energy_summary(
        reads, t("08:00"), t("16:00"), poll_interval_ms=10 * MINUTE, as_of_ms=t("12:15")
    )
    assert (later.kwh, later.complete, later.covered_ms) == (Fraction("50.25"), False, 245 * MINUTE)


def test_a_shift_end_between_reads_far_apart_is_flagged() -> None:
    # Reads at 07:30 and 08:30 with a 1 min poll: E(08:00) = 900 + 60 x 30/60 = 930,
    # an estimate over an hour without reads.
    reads = [
        MeterRead(t("07:30"), 900.0),
        MeterRead(t("08:30"), 960.0),
        MeterRead(t("09:00"), 990.0),
    ]
    got = energy_summary(reads, t("08:00"), t("09:00"), poll_interval_ms=MINUTE)
    assert (got.kwh, got.boundary_uncertain) == (Fraction(60), True)


def test_refusals() -> None:
    with pytest.raises(ValueError, match="not a number"):
        energy_summary([MeterRead(0, float("nan"))], 0, 1, poll_interval_ms=1000)
    with pytest.raises(ValueError, match="in time order"):
        energy_summary([MeterRead(5, 1.0), MeterRead(5, 2.0)], 0, 10, poll_interval_ms=1000)
    overlapping = [StateInterval(0, 600, "running"), StateInterval(500, 1000, "idle")]
    with pytest.raises(ValueError, match="overlap"):
        energy_summary(
            [MeterRead(0, 1.0), MeterRead(1000, 2.0)], 0, 1000, overlapping, poll_interval_ms=1000
        )
