"""The site calendar: shift instances in local time, midnight, holidays, DST."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from agent.compute.shifts import WEEKDAYS, Calendar, CalendarError, local_to_ms

SHANGHAI = ZoneInfo("Asia/Shanghai")
BERLIN = ZoneInfo("Europe/Berlin")
MINUTE = 60_000
HOUR = 60 * MINUTE

TWO_SHIFT: dict[str, Any] = {
    "timezone": "Asia/Shanghai",
    "workdays": ["mon", "tue", "wed", "thu", "fri", "sat"],
    "holidays": ["2026-10-01", "2026-10-02"],
    "shifts": [
        {
            "name": "day",
            "start": "08:00",
            "end": "16:00",
            "breaks": [["10:00", "10:15"], ["12:00", "12:30"], ["14:30", "14:45"]],
        },
        {"name": "night", "start": "22:00", "end": "06:00", "breaks": [["02:00", "02:30"]]},
    ],
}


def at(year: int, month: int, day: int, hh: int, mm: int = 0, tz: ZoneInfo = SHANGHAI) -> int:
    """Epoch ms of a local wall time that exists once."""
    return int(datetime(year, month, day, hh, mm, tzinfo=tz).timestamp() * 1000)


def test_t5_day_shift_is_480_minutes_with_420_planned() -> None:
    cal = Calendar.from_config(TWO_SHIFT)
    day = cal.shift_at(at(2026, 3, 2, 9))  # a Monday
    assert day is not None
    assert (day.key, day.start_ms, day.end_ms) == (
        "2026-03-02/day",
        at(2026, 3, 2, 8),
        at(2026, 3, 2, 16),
    )
    assert day.end_ms - day.start_ms == 480 * MINUTE
    assert day.planned_ms == 420 * MINUTE
    # Shanghai is UTC+8 all year: 08:00 local is midnight UTC.
    assert datetime.fromtimestamp(day.start_ms / 1000, UTC).hour == 0
    assert [(p.start_ms, p.end_ms) for p in day.planned] == [
        (at(2026, 3, 2, 8), at(2026, 3, 2, 10)),
        (at(2026, 3, 2, 10, 15), at(2026, 3, 2, 12)),
        (at(2026, 3, 2, 12, 30), at(2026, 3, 2, 14, 30)),
        (at(2026, 3, 2, 14, 45), at(2026, 3, 2, 16)),
    ]


def test_start_is_inside_the_shift_and_end_is_not() -> None:
    cal = Calendar.from_config(TWO_SHIFT)
    assert cal.shift_at(at(2026, 3, 2, 8)) is not None
    assert cal.shift_at(at(2026, 3, 2, 16)) is None
    assert cal.shift_at(at(2026, 3, 2, 16) - 1) is not None
    assert cal.shift_at(at(2026, 3, 2, 7, 59)) is None


def test_night_shift_crosses_midnight_and_belongs_to_its_start_date() -> None:
    cal = Calendar.from_config(TWO_SHIFT)
    night = cal.shift_at(at(2026, 3, 3, 3))
    assert night is not None
    assert night.key == "2026-03-02/night"
    assert (night.start_ms, night.end_ms) == (at(2026, 3, 2, 22), at(2026, 3, 3, 6))
    assert [(b.start_ms, b.end_ms) for b in night.breaks] == [
        (at(2026, 3, 3, 2), at(2026, 3, 3, 2, 30))
    ]
    assert night.planned_ms == 450 * MINUTE
    # The break is inside the shift: the shift still holds that instant.
    during_break = cal.shift_at(at(2026, 3, 3, 2, 15))
    assert during_break is not None
    assert during_break.key == "2026-03-02/night"
    assert cal.shift_at(at(2026, 3, 3, 6)) is None


def test_holiday_and_rest_day_have_no_shift_starting_on_them() -> None:
    cal = Calendar.from_config(TWO_SHIFT)
    assert cal.shift_at(at(2026, 10, 1, 9)) is None  # National Day
    assert cal.shift_at(at(2026, 10, 1, 23)) is None
    # The night of 30 September (a workday) runs into the holiday morning.
    eve = cal.shift_at(at(2026, 10, 1, 5))
    assert eve is not None
    assert eve.key == "2026-09-30/night"
    assert cal.shift_at(at(2026, 3, 8, 9)) is None  # a Sunday
    saturday_night = cal.shift_at(at(2026, 3, 8, 1))
    assert saturday_night is not None
    assert saturday_night.key == "2026-03-07/night"
    assert not cal.is_workday(date(2026, 10, 2))
    assert cal.instance(date(2026, 10, 2), "day") is None


def test_shifts_between_lists_every_overlapping_instance_in_order() -> None:
    cal = Calendar.from_config(TWO_SHIFT)
    found = cal.shifts_between(at(2026, 3, 6, 12), at(2026, 3, 9, 9))  # Fri noon .. Mon 09:00
    assert [s.key for s in found] == [
        "2026-03-06/day",
        "2026-03-06/night",
        "2026-03-07/day",
        "2026-03-07/night",
        "2026-03-09/day",
    ]
    assert cal.shifts_between(at(2026, 3, 2, 16), at(2026, 3, 2, 22)) == []
    assert cal.shifts_between(at(2026, 3, 2, 9), at(2026, 3, 2, 9)) == []


BERLIN_NIGHTS: dict[str, Any] = {
    "timezone": "Europe/Berlin",
    "workdays": list(WEEKDAYS),
    "shifts": [
        {"name": "night", "start": "22:00", "end": "06:00", "breaks": [["02:00", "02:30"]]},
    ],
}


@pytest.mark.parametrize(
    ("day", "hours", "planned_min"),
    [
        # Clocks go forward at 02:00 on 29 March 2026: 7 h, and the 02:00-02:30 break
        # falls in the skipped hour, so it has no length that night.
        (date(2026, 3, 28), 7, 420),
        (date(2026, 3, 27), 8, 450),
        # Clocks go back at 03:00 on 25 October 2026: 9 h, the break at the first 02:00.
        (date(2026, 10, 24), 9, 510),
        (date(2026, 10, 25), 8, 450),
    ],
)
def test_dst_night_shift_has_its_real_length(day: date, hours: int, planned_min: int) -> None:
    cal = Calendar.from_config(BERLIN_NIGHTS)
    night = cal.instance(day, "night")
    assert night is not None
    assert night.end_ms - night.start_ms == hours * HOUR
    assert night.planned_ms == planned_min * MINUTE
    assert night.start_ms == at(day.year, day.month, day.day, 22, tz=BERLIN)


def test_fall_back_break_is_taken_at_the_first_0200() -> None:
    cal = Calendar.from_config(BERLIN_NIGHTS)
    night = cal.instance(date(2026, 10, 24), "night")
    assert night is not None
    assert [(b.start_ms, b.ms) for b in night.breaks] == [
        (int(datetime(2026, 10, 25, 0, 0, tzinfo=UTC).timestamp() * 1000), 30 * MINUTE)
    ]
    # shift_at in the repeated hour (the second 02:15, CET) still finds the same night.
    second = int(datetime(2026, 10, 25, 1, 15, tzinfo=UTC).timestamp() * 1000)
    found = cal.shift_at(second)
    assert found is not None
    assert found.key == "2026-10-24/night"


def test_a_skipped_local_time_is_the_instant_the_clock_jumps() -> None:
    jump = int(datetime(2026, 3, 29, 1, 0, tzinfo=UTC).timestamp() * 1000)
    assert local_to_ms(datetime(2026, 3, 29, 2, 0), BERLIN) == jump
    assert local_to_ms(datetime(2026, 3, 29, 2, 45), BERLIN) == jump
    assert local_to_ms(datetime(2026, 3, 29, 3, 0), BERLIN) == jump
    assert local_to_ms(datetime(2026, 3, 29, 3, 1), BERLIN) == jump + MINUTE


def _one(**shift: Any) -> dict[str, Any]:
    return {"timezone": "Asia/Shanghai", "shifts": [{"name": "s", **shift}]}


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            {
                "timezone": "Asia/Shanghai",
                "shifts": [
                    {"name": "early", "start": "06:00", "end": "14:00"},
                    {"name": "late", "start": "13:00", "end": "22:00"},
                ],
            },
            "shifts early and late overlap",
        ),
        (
            {
                "timezone": "Asia/Shanghai",
                "shifts": [
                    {"name": "night", "start": "22:00", "end": "06:00"},
                    {"name": "early", "start": "05:00", "end": "13:00"},
                ],
            },
            "shifts night and early overlap",
        ),
        (
            _one(start="13:00", end="21:00", breaks=[["12:00", "12:30"]]),
            "break 12:00-12:30 is not inside 13:00-21:00",
        ),
        (
            _one(start="22:00", end="06:00", breaks=[["05:45", "06:15"]]),
            "break 05:45-06:15 is not inside 22:00-06:00",
        ),
        (
            _one(start="08:00", end="16:00", breaks=[["10:00", "10:30"], ["10:15", "10:45"]]),
            "its breaks overlap",
        ),
        (_one(start="25:00", end="06:00"), "'25:00' is not a time HH:MM"),
        (_one(start="8:00", end="16:00"), "'8:00' is not a time HH:MM"),
        (_one(start=800, end="16:00"), "800 is not a time HH:MM"),
        (_one(start="08:00", end="08:00"), "start and end are both 08:00"),
        ({"timezone": "Mars/Olympus", "shifts": []}, "'Mars/Olympus' is not a known time zone"),
        ({**_one(start="08:00", end="16:00"), "workdays": ["mon", "fry"]}, "['fry']"),
        ({**_one(start="08:00", end="16:00"), "holidays": ["2026-13-01"]}, "'2026-13-01'"),
        ({"timezone": "Asia/Shanghai", "shifts": []}, "at least one shift"),
        (
            {
                "timezone": "Asia/Shanghai",
                "shifts": [
                    {"name": "a", "start": "06:00", "end": "08:00"},
                    {"name": "a", "start": "09:00", "end": "10:00"},
                ],
            },
            "names must be unique",
        ),
    ],
)
def test_calendar_refuses_what_cannot_work(config: dict[str, Any], message: str) -> None:
    with pytest.raises(CalendarError) as caught:
        Calendar.from_config(config)
    assert message in str(caught.value)


def test_adjacent_shifts_are_not_an_overlap() -> None:
    cal = Calendar.from_config(
        {
            "timezone": "Asia/Shanghai",
            "workdays": list(WEEKDAYS),
            "shifts": [
                {"name": "a", "start": "06:00", "end": "14:00"},
                {"name": "b", "start": "14:00", "end": "22:00"},
                {"name": "c", "start": "22:00", "end": "06:00"},
            ],
        }
    )
    found = cal.shifts_between(at(2026, 3, 2, 0), at(2026, 3, 3, 0))
    assert [s.key for s in found] == [
        "2026-03-01/c",
        "2026-03-02/a",
        "2026-03-02/b",
        "2026-03-02/c",
    ]
    assert all(a.end_ms == b.start_ms for a, b in itertools.pairwise(found))
    with pytest.raises(CalendarError, match="no shift named 'x'"):
        cal.instance(date(2026, 3, 2), "x")


def test_shift_times_may_name_seconds() -> None:
    calendar = Calendar.from_config(
        {
            "timezone": "Asia/Shanghai",
            "workdays": list(WEEKDAYS),
            "shifts": [{"name": "short", "start": "08:00:30", "end": "08:01:15"}],
        }
    )
    found = calendar.instance(date(2026, 3, 2), "short")
    assert found is not None
    assert found.end_ms - found.start_ms == 45_000
    with pytest.raises(CalendarError, match="is not a time"):
        Calendar.from_config({"shifts": [{"name": "x", "start": "08:00:60", "end": "09:00"}]})
