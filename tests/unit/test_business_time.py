"""Working-time arithmetic: opening hours, weekends, holidays, daylight-saving changes, and the properties that
tie ``add_business_time`` and ``business_duration`` together."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from zoneinfo import ZoneInfo

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from projections.business_time import Calendar, add_business_time, business_duration, is_business_time

WAW = ZoneInfo("Europe/Warsaw")
NYC = ZoneInfo("America/New_York")
H = dt.timedelta(hours=1)
ZERO = dt.timedelta(0)
TINY = dt.timedelta(microseconds=1)
UTC_CAL = Calendar()
WARSAW = Calendar(timezone="Europe/Warsaw", holidays=[dt.date(2026, 12, 24), dt.date(2026, 12, 25)])
NEW_YORK = Calendar(timezone="America/New_York")
POLAND = Calendar(timezone="Europe/Warsaw", country="PL", holidays=[dt.date(2026, 11, 12)])
ALL_WEEK = Calendar(workdays=[1, 2, 3, 4, 5, 6, 7], opens=dt.time(0, 0), closes=dt.time(23, 59))


def waw(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, tzinfo=WAW)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, second, tzinfo=dt.UTC)


def test_the_fixture_dates_fall_on_the_weekdays_the_tests_assume() -> None:
    assert dt.date(2026, 11, 23).isoweekday() == 1
    assert dt.date(2026, 11, 27).isoweekday() == 5
    assert dt.date(2026, 11, 28).isoweekday() == 6
    assert dt.date(2026, 12, 24).isoweekday() == 4
    assert dt.date(2026, 3, 29).isoweekday() == dt.date(2026, 10, 25).isoweekday() == 7  # EU changes
    assert dt.date(2026, 3, 8).isoweekday() == 7  # US change


# --- adding working time ---------------------------------------------------------------------------------------


def test_inside_hours_the_clock_runs_like_a_wall_clock() -> None:
    assert add_business_time(utc(2026, 11, 23, 10), 2 * H, UTC_CAL) == utc(2026, 11, 23, 12)


def test_crossing_closing_time_carries_the_rest_to_the_next_opening() -> None:
    assert add_business_time(utc(2026, 11, 23, 16), 2 * H, UTC_CAL) == utc(2026, 11, 24, 10)


def test_friday_afternoon_carries_over_the_weekend() -> None:
    assert add_business_time(utc(2026, 11, 27, 16, 30), H, UTC_CAL) == utc(2026, 11, 30, 9, 30)


@pytest.mark.parametrize(
    ("start", "expected"),
    [
        pytest.param(utc(2026, 11, 28, 11), utc(2026, 11, 30, 10), id="saturday"),
        pytest.param(utc(2026, 11, 29, 23, 59), utc(2026, 11, 30, 10), id="sunday-night"),
        pytest.param(utc(2026, 11, 23, 7), utc(2026, 11, 23, 10), id="before-opening"),
        pytest.param(utc(2026, 11, 23, 17), utc(2026, 11, 24, 10), id="at-closing"),
        pytest.param(utc(2026, 11, 23, 20), utc(2026, 11, 24, 10), id="evening"),
    ],
)
def test_outside_hours_counting_starts_at_the_next_opening(start: dt.datetime, expected: dt.datetime) -> None:
    assert add_business_time(start, H, UTC_CAL) == expected


@pytest.mark.parametrize(
    ("start", "expected"),
    [
        pytest.param(utc(2026, 11, 23, 11, 15), utc(2026, 11, 23, 11, 15), id="inside"),
        pytest.param(utc(2026, 11, 23, 9), utc(2026, 11, 23, 9), id="at-opening"),
        pytest.param(utc(2026, 11, 23, 7), utc(2026, 11, 23, 9), id="before-opening"),
        pytest.param(utc(2026, 11, 23, 17), utc(2026, 11, 24, 9), id="at-closing"),
        pytest.param(utc(2026, 11, 28, 12), utc(2026, 11, 30, 9), id="weekend"),
    ],
)
def test_zero_duration_is_start_inside_hours_else_the_next_opening(start: dt.datetime, expected: dt.datetime) -> None:
    assert add_business_time(start, ZERO, UTC_CAL) == expected


def test_a_result_at_closing_time_stays_at_closing_time() -> None:
    assert add_business_time(utc(2026, 11, 23, 16), H, UTC_CAL) == utc(2026, 11, 23, 17)
    assert add_business_time(utc(2026, 11, 23, 9), 8 * H, UTC_CAL) == utc(2026, 11, 23, 17)
    assert add_business_time(utc(2026, 11, 23, 9), 8 * H + TINY, UTC_CAL) == utc(2026, 11, 24, 9) + TINY


def test_the_result_is_in_utc_whatever_the_zone_of_start() -> None:
    result = add_business_time(waw(2026, 11, 23, 10), 2 * H, WARSAW)
    assert result.tzinfo is dt.UTC
    assert result == waw(2026, 11, 23, 12) == utc(2026, 11, 23, 11)


def test_a_start_in_another_zone_is_read_as_the_same_instant() -> None:
    # 03:00 in New York is 09:00 in Warsaw: already open there.
    start = dt.datetime(2026, 11, 23, 3, tzinfo=NYC)
    assert add_business_time(start, H, WARSAW) == waw(2026, 11, 23, 10)


def test_thirty_business_days_are_six_working_weeks() -> None:
    result = add_business_time(waw(2026, 11, 2, 9), 30 * 8 * H, WARSAW)
    assert result == waw(2026, 12, 11, 17)


def test_years_of_working_time_are_not_mistaken_for_a_calendar_that_never_opens() -> None:
    start = utc(2026, 1, 5, 9)
    duration = 10 * 260 * 8 * H  # about ten working years
    result = add_business_time(start, duration, UTC_CAL)
    assert result.year in (2035, 2036)
    assert business_duration(start, result, UTC_CAL) == duration


# --- holidays ------------------------------------------------------------------------------------------------


def test_holidays_are_skipped() -> None:
    # Wednesday 23 Dec 16:00 + 2h: one hour that day, Christmas Eve and Day off, the weekend, then Monday.
    assert add_business_time(waw(2026, 12, 23, 16), 2 * H, WARSAW) == waw(2026, 12, 28, 10)
    assert add_business_time(waw(2026, 12, 24, 10), ZERO, WARSAW) == waw(2026, 12, 28, 9)
    assert business_duration(waw(2026, 12, 23, 9), waw(2026, 12, 28, 17), WARSAW) == 16 * H


def test_a_country_s_public_holidays_are_skipped_with_the_team_s_own_days() -> None:
    # 11 November is Poland's Independence Day; 12 November is the team's own day off.
    assert dt.date(2026, 11, 11).isoweekday() == 3
    evening = waw(2026, 11, 10, 16, 30)
    assert add_business_time(evening, H, Calendar(timezone="Europe/Warsaw")) == waw(2026, 11, 11, 9, 30)
    assert add_business_time(evening, H, POLAND) == waw(2026, 11, 13, 9, 30)
    assert not is_business_time(waw(2026, 11, 11, 12), POLAND) and not is_business_time(waw(2026, 11, 12, 12), POLAND)
    assert business_duration(evening, waw(2026, 11, 13, 10), POLAND) == H / 2 + H


def test_china_s_national_day_week_is_off() -> None:
    shanghai = ZoneInfo("Asia/Shanghai")
    start = dt.datetime(2026, 9, 30, 17, 30, tzinfo=shanghai)
    plain = Calendar(timezone="Asia/Shanghai", closes=dt.time(18))
    assert add_business_time(start, H, plain) == dt.datetime(2026, 10, 1, 9, 30, tzinfo=shanghai)
    china = Calendar(timezone="Asia/Shanghai", closes=dt.time(18), country="CN")
    assert add_business_time(start, H, china) == dt.datetime(2026, 10, 8, 9, 30, tzinfo=shanghai)


def test_a_region_adds_its_own_public_holidays() -> None:
    epiphany = waw(2026, 1, 6, 12)
    germany = Calendar(timezone="Europe/Berlin", country="DE")
    assert is_business_time(epiphany, germany)
    assert not is_business_time(epiphany, Calendar(timezone="Europe/Berlin", country="DE", subdivision="BY"))


def test_a_calendar_that_never_opens_is_refused_rather_than_looped_over() -> None:
    first_monday = dt.date(2026, 1, 5)
    mondays = [first_monday + dt.timedelta(weeks=n) for n in range(7 * 53)]
    never = Calendar(workdays=[1], holidays=mondays)
    with pytest.raises(ValueError, match="no working time"):
        add_business_time(utc(2026, 1, 1), H, never)
    # Measuring a bounded span needs no guard: there is simply no working time in it.
    assert business_duration(utc(2026, 1, 1), utc(2031, 1, 1), never) == ZERO


# --- daylight saving -----------------------------------------------------------------------------------------


def test_spring_forward_moves_the_opening_an_hour_earlier_in_utc() -> None:
    # Warsaw moves to CEST on Sunday 29 March 2026: Monday 09:30 local is 07:30Z, not 08:30Z.
    result = add_business_time(waw(2026, 3, 27, 16, 30), H, WARSAW)
    assert result == utc(2026, 3, 30, 7, 30) == waw(2026, 3, 30, 9, 30)


def test_fall_back_moves_the_opening_an_hour_later_in_utc() -> None:
    # Warsaw returns to CET on Sunday 25 October 2026: Monday 09:30 local is 08:30Z.
    result = add_business_time(waw(2026, 10, 23, 16, 30), H, WARSAW)
    assert result == utc(2026, 10, 26, 8, 30) == waw(2026, 10, 26, 9, 30)


def test_a_us_zone_changes_on_its_own_date() -> None:
    # New York moves to EDT on Sunday 8 March 2026, three weeks before Warsaw.
    result = add_business_time(dt.datetime(2026, 3, 6, 16, 30, tzinfo=NYC), H, NEW_YORK)
    assert result == utc(2026, 3, 9, 13, 30) == dt.datetime(2026, 3, 9, 9, 30, tzinfo=NYC)
    assert add_business_time(dt.datetime(2026, 3, 9, 16, 30, tzinfo=WAW), ZERO, NEW_YORK) == utc(2026, 3, 9, 15, 30)


def test_a_working_day_with_a_clock_change_has_its_real_length() -> None:
    round_the_clock = Calendar(
        timezone="Europe/Warsaw", workdays=[1, 2, 3, 4, 5, 6, 7], opens=dt.time(0, 0), closes=dt.time(23, 59)
    )
    assert business_duration(waw(2026, 3, 29), waw(2026, 3, 30), round_the_clock) == 22 * H + 59 * H / 60
    assert business_duration(waw(2026, 10, 25), waw(2026, 10, 26), round_the_clock) == 24 * H + 59 * H / 60
    assert business_duration(waw(2026, 10, 26), waw(2026, 10, 27), round_the_clock) == 23 * H + 59 * H / 60


# --- round the clock -----------------------------------------------------------------------------------------


def test_an_all_week_calendar_works_weekends_and_loses_only_the_last_minute() -> None:
    saturday = utc(2026, 11, 28, 10)
    assert is_business_time(saturday, ALL_WEEK)
    assert add_business_time(saturday, 5 * H, ALL_WEEK) == saturday + 5 * H
    assert add_business_time(utc(2026, 11, 28, 23), H, ALL_WEEK) == utc(2026, 11, 29, 0, 1)
    assert not is_business_time(utc(2026, 11, 28, 23, 59), ALL_WEEK)
    assert add_business_time(utc(2026, 11, 28, 23, 59, 30), ZERO, ALL_WEEK) == utc(2026, 11, 29)
    assert business_duration(utc(2026, 11, 23), utc(2026, 11, 30), ALL_WEEK) == 7 * (24 * H - H / 60)


# --- is_business_time ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        pytest.param(waw(2026, 11, 23, 9), True, id="opening-is-inside"),
        pytest.param(waw(2026, 11, 23, 16, 59), True, id="last-minute"),
        pytest.param(waw(2026, 11, 23, 17), False, id="closing-is-outside"),
        pytest.param(waw(2026, 11, 23, 8, 59), False, id="before-opening"),
        pytest.param(waw(2026, 11, 28, 12), False, id="saturday"),
        pytest.param(waw(2026, 12, 24, 12), False, id="holiday"),
        pytest.param(utc(2026, 11, 23, 8), True, id="utc-input-read-in-warsaw"),
        pytest.param(utc(2026, 11, 23, 16, 30), False, id="utc-input-after-warsaw-closing"),
    ],
)
def test_is_business_time(at: dt.datetime, expected: bool) -> None:
    assert is_business_time(at, WARSAW) is expected


# --- business_duration ---------------------------------------------------------------------------------------


def test_duration_counts_only_working_time_between_instants() -> None:
    assert business_duration(waw(2026, 11, 27, 16), waw(2026, 11, 30, 10), WARSAW) == 2 * H
    assert business_duration(waw(2026, 11, 23, 10), waw(2026, 11, 23, 12, 30), WARSAW) == 2.5 * H
    assert business_duration(waw(2026, 11, 28, 8), waw(2026, 11, 29, 20), WARSAW) == ZERO


def test_duration_is_zero_when_end_is_not_after_start() -> None:
    assert business_duration(waw(2026, 11, 30, 10), waw(2026, 11, 27, 16), WARSAW) == ZERO
    assert business_duration(waw(2026, 11, 30, 10), waw(2026, 11, 30, 10), WARSAW) == ZERO


# --- bad input -----------------------------------------------------------------------------------------------

NAIVE = dt.datetime(2026, 11, 23, 10)


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda: is_business_time(NAIVE, WARSAW), id="is_business_time"),
        pytest.param(lambda: add_business_time(NAIVE, H, WARSAW), id="add_business_time"),
        pytest.param(lambda: business_duration(NAIVE, waw(2026, 11, 24), WARSAW), id="duration-start"),
        pytest.param(lambda: business_duration(waw(2026, 11, 22), NAIVE, WARSAW), id="duration-end"),
    ],
)
def test_naive_datetimes_are_refused(call: Callable[[], object]) -> None:
    with pytest.raises(ValueError, match="aware"):
        call()


def test_a_negative_duration_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        add_business_time(waw(2026, 11, 23, 10), -TINY, WARSAW)


@pytest.mark.parametrize(
    ("make", "field"),
    [
        pytest.param(lambda: Calendar(timezone="Nowhere/City"), "timezone", id="unknown-zone"),
        pytest.param(lambda: Calendar(timezone=""), "timezone", id="empty-zone"),
        pytest.param(lambda: Calendar(timezone="../etc/passwd"), "timezone", id="path-as-zone"),
        pytest.param(lambda: Calendar(opens=dt.time(17), closes=dt.time(9)), "closes", id="closes-before-opens"),
        pytest.param(lambda: Calendar(opens=dt.time(9), closes=dt.time(9)), "closes", id="closes-at-opens"),
        pytest.param(lambda: Calendar(workdays=[1, 8]), "workdays", id="weekday-8"),
        pytest.param(lambda: Calendar(workdays=[0]), "workdays", id="weekday-0"),
        pytest.param(lambda: Calendar(workdays=[]), "workdays", id="no-workdays"),
        pytest.param(lambda: Calendar(opens=dt.time(9, tzinfo=dt.UTC)), "opens", id="aware-opens"),
        pytest.param(lambda: Calendar(country="XX"), "country", id="unknown-country"),
        pytest.param(lambda: Calendar(country="pl/../x"), "country", id="path-as-country"),
        pytest.param(lambda: Calendar(country="DE", subdivision="ZZ"), "subdivision", id="unknown-subdivision"),
        pytest.param(lambda: Calendar(subdivision="BY"), "subdivision", id="subdivision-without-country"),
    ],
)
def test_bad_calendars_are_refused_naming_the_field(make: Callable[[], Calendar], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        make()


def test_a_calendar_decodes_from_config_and_validates_there_too() -> None:
    decoded = msgspec.json.decode(
        b'{"timezone": "Europe/Warsaw", "opens": "08:30:00", "holidays": ["2026-12-24"]}', type=Calendar
    )
    assert decoded == Calendar(timezone="Europe/Warsaw", opens=dt.time(8, 30), holidays=[dt.date(2026, 12, 24)])
    assert decoded.zone == WAW
    with pytest.raises(msgspec.ValidationError, match="timezone"):
        msgspec.convert({"timezone": "Mars/Olympus"}, Calendar)
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        msgspec.convert({"time_zone": "Europe/Warsaw"}, Calendar)


# --- properties ----------------------------------------------------------------------------------------------

calendars = st.sampled_from([WARSAW, NEW_YORK, ALL_WEEK, POLAND])
instants = st.datetimes(
    min_value=dt.datetime(2025, 1, 1),
    max_value=dt.datetime(2027, 12, 31),
    timezones=st.sampled_from([dt.UTC, WAW, NYC]),
)
durations = st.timedeltas(min_value=ZERO, max_value=200 * H)


@settings(max_examples=300)
@given(calendars, instants, durations)
def test_adding_then_measuring_gives_the_duration_back(calendar: Calendar, start: dt.datetime, d: dt.timedelta) -> None:
    result = add_business_time(start, d, calendar)
    assert result.tzinfo is dt.UTC
    assert result >= start
    assert business_duration(start, result, calendar) == d


@given(calendars, instants, durations, durations)
def test_adding_is_monotonic_in_the_duration(
    calendar: Calendar, start: dt.datetime, d1: dt.timedelta, d2: dt.timedelta
) -> None:
    d1, d2 = min(d1, d2), max(d1, d2)
    first, second = add_business_time(start, d1, calendar), add_business_time(start, d2, calendar)
    assert first <= second
    assert (first == second) == (d1 == d2)


@given(calendars, instants, durations)
def test_the_result_is_at_or_just_after_working_time(calendar: Calendar, start: dt.datetime, d: dt.timedelta) -> None:
    result = add_business_time(start, d, calendar)
    # A zero duration lands on a working instant; otherwise the last microsecond counted was working time.
    assert is_business_time(result if d == ZERO else result - TINY, calendar)


@given(
    calendars,
    instants,
    st.timedeltas(min_value=ZERO, max_value=400 * H),
    st.timedeltas(min_value=ZERO, max_value=400 * H),
)
def test_durations_add_up_over_consecutive_spans(
    calendar: Calendar, start: dt.datetime, gap1: dt.timedelta, gap2: dt.timedelta
) -> None:
    # Real-time arithmetic: adding to a zoned datetime moves its wall clock, which can step back over a DST change.
    start = start.astimezone(dt.UTC)
    middle, end = start + gap1, start + gap1 + gap2
    whole = business_duration(start, end, calendar)
    assert whole == business_duration(start, middle, calendar) + business_duration(middle, end, calendar)
    assert ZERO <= whole <= end - start
