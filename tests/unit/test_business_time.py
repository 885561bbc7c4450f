"""Working-time arithmetic: hours, weekends, holidays and daylight-saving changes."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from projections.business_time import Calendar, add_business_time, business_duration, is_business_time

WAW = ZoneInfo("Europe/Warsaw")
NYC = ZoneInfo("America/New_York")
H = dt.timedelta(hours=1)
CAL = Calendar(timezone="Europe/Warsaw", holidays=(dt.date(2026, 12, 24), dt.date(2026, 12, 25)))


def waw(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=WAW)  # type: ignore[misc]


def test_inside_hours_the_clock_runs_as_a_wall_clock() -> None:
    assert add_business_time(waw(2026, 11, 23, 10), 2 * H, CAL) == waw(2026, 11, 23, 12)


def test_closing_time_carries_the_rest_to_the_next_opening() -> None:
    assert add_business_time(waw(2026, 11, 23, 16), 2 * H, CAL) == waw(2026, 11, 24, 10)
    assert add_business_time(waw(2026, 11, 27, 16, 30), H, CAL) == waw(2026, 11, 30, 9, 30)  # Friday -> Monday


def test_outside_hours_counting_starts_at_the_next_opening() -> None:
    assert add_business_time(waw(2026, 11, 28, 11), H, CAL) == waw(2026, 11, 30, 10)  # a Saturday
    assert add_business_time(waw(2026, 11, 23, 7), dt.timedelta(0), CAL) == waw(2026, 11, 23, 9)
    assert add_business_time(waw(2026, 11, 23, 11), dt.timedelta(0), CAL) == waw(2026, 11, 23, 11)


def test_a_result_at_closing_time_stays_there() -> None:
    assert add_business_time(waw(2026, 11, 23, 16), H, CAL) == waw(2026, 11, 23, 17)


def test_holidays_are_skipped() -> None:
    # Wednesday 23 Dec 16:00 + 2h: 1h that day, then 24th and 25th are holidays, the weekend, Monday 28th.
    assert add_business_time(waw(2026, 12, 23, 16), 2 * H, CAL) == waw(2026, 12, 28, 10)
    assert not is_business_time(waw(2026, 12, 24, 10), CAL)


def test_spring_forward_moves_the_opening_in_utc() -> None:
    # Warsaw switches to CEST on Sunday 29 March 2026: Monday 09:30 local is 07:30Z, not 08:30Z.
    result = add_business_time(waw(2026, 3, 27, 16, 30), H, CAL)
    assert result == dt.datetime(2026, 3, 30, 7, 30, tzinfo=dt.UTC) == waw(2026, 3, 30, 9, 30)


def test_fall_back_moves_it_the_other_way() -> None:
    result = add_business_time(waw(2026, 10, 23, 16, 30), H, CAL)
    assert result == dt.datetime(2026, 10, 26, 8, 30, tzinfo=dt.UTC)


def test_a_us_zone_changes_on_its_own_date() -> None:
    ny = Calendar(timezone="America/New_York")
    start = dt.datetime(2026, 3, 6, 16, 30, tzinfo=NYC)  # Friday before the 8 March change
    assert add_business_time(start, H, ny) == dt.datetime(2026, 3, 9, 13, 30, tzinfo=dt.UTC)


def test_an_all_week_calendar() -> None:
    always = Calendar(workdays=(1, 2, 3, 4, 5, 6, 7), opens=dt.time(0, 0), closes=dt.time(23, 59))
    start = dt.datetime(2026, 11, 28, 10, tzinfo=dt.UTC)
    assert add_business_time(start, 5 * H, always) == start + 5 * H


def test_durations_are_measured_between_instants() -> None:
    assert business_duration(waw(2026, 11, 27, 16), waw(2026, 11, 30, 10), CAL) == 2 * H
    assert business_duration(waw(2026, 11, 30, 10), waw(2026, 11, 27, 16), CAL) == dt.timedelta(0)


def test_bad_input_says_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="time zone"):
        add_business_time(dt.datetime(2026, 1, 1), H, CAL)
    with pytest.raises(ValueError, match="negative"):
        add_business_time(waw(2026, 1, 5, 10), -H, CAL)
    for bad in (
        {"timezone": "Nowhere/City"},
        {"workdays": ()},
        {"workdays": (8,)},
        {"opens": dt.time(17), "closes": dt.time(9)},
    ):
        with pytest.raises(ValueError):
            Calendar(**bad)  # type: ignore[arg-type]


starts = st.datetimes(min_value=dt.datetime(2025, 1, 1), max_value=dt.datetime(2027, 12, 31), timezones=st.just(dt.UTC))
durations = st.integers(min_value=0, max_value=200 * 60).map(lambda m: dt.timedelta(minutes=m))


@given(starts, durations, durations)
def test_adding_is_monotonic_lands_in_utc_and_measures_back(
    start: dt.datetime, d1: dt.timedelta, d2: dt.timedelta
) -> None:
    a, b = add_business_time(start, d1, CAL), add_business_time(start, d2, CAL)
    assert a >= start and a.tzinfo == dt.UTC
    assert (a <= b) == (d1 <= d2) or a == b
    assert business_duration(start, a, CAL) == d1
