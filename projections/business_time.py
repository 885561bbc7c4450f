"""Working time: SLA clocks that count only a team's working hours, in its time zone, minus its holidays.

Day windows are local wall-clock times in the calendar's zone; elapsed time is real (UTC) time, so a
daylight-saving change moves the opening hour in UTC and never stretches or shrinks a working hour.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Iterator

import msgspec

_MAX_DAYS = 366 * 5


class Calendar(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A team's working time: a time zone, working weekdays (ISO, 1 = Monday) and hours, and holidays."""

    timezone: str = "UTC"
    workdays: tuple[int, ...] = (1, 2, 3, 4, 5)
    opens: dt.time = dt.time(9, 0)
    closes: dt.time = dt.time(17, 0)
    holidays: tuple[dt.date, ...] = ()

    def __post_init__(self) -> None:
        try:
            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"timezone: unknown time zone {self.timezone!r}") from exc
        if not self.workdays or any(not 1 <= d <= 7 for d in self.workdays):
            raise ValueError("workdays: give ISO weekdays 1 (Monday) to 7 (Sunday), at least one")
        if self.opens.tzinfo is not None or self.closes.tzinfo is not None:
            raise ValueError("opens, closes: local wall-clock times, without an offset")
        if not self.opens < self.closes:
            raise ValueError("closes: must be after opens")

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.timezone)

    def window(self, day: dt.date) -> tuple[dt.datetime, dt.datetime] | None:
        """The working hours of a local date, as UTC instants; None on a day off."""
        if day.isoweekday() not in self.workdays or day in self.holidays:
            return None
        zone = self.zone
        start = dt.datetime.combine(day, self.opens, tzinfo=zone).astimezone(dt.UTC)
        end = dt.datetime.combine(day, self.closes, tzinfo=zone).astimezone(dt.UTC)
        return start, end


def _aware(at: dt.datetime, name: str) -> dt.datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"{name}: needs a time zone")
    return at.astimezone(dt.UTC)


def _windows(calendar: Calendar, start: dt.datetime) -> Iterator[tuple[dt.datetime, dt.datetime]]:
    """Working windows from the local day of ``start`` on, clipped to begin no earlier than ``start``."""
    day = start.astimezone(calendar.zone).date()
    for _ in range(_MAX_DAYS):
        window = calendar.window(day)
        if window is not None and window[1] > start:
            yield max(window[0], start), window[1]
        day += dt.timedelta(days=1)
    raise ValueError(f"the calendar has no working time within {_MAX_DAYS} days")


def is_business_time(at: dt.datetime, calendar: Calendar) -> bool:
    at = _aware(at, "at")
    window = calendar.window(at.astimezone(calendar.zone).date())
    return window is not None and window[0] <= at < window[1]


def add_business_time(start: dt.datetime, duration: dt.timedelta, calendar: Calendar) -> dt.datetime:
    """The instant at which ``duration`` of working time has passed since ``start`` (counting from the next
    opening when ``start`` is outside working hours). A result at a closing time stays at that closing
    time. Returned in UTC."""
    start = _aware(start, "start")
    if duration < dt.timedelta(0):
        raise ValueError("duration: must not be negative")
    left = duration
    for begin, end in _windows(calendar, start):
        if left <= end - begin:
            return begin + left
        left -= end - begin
    raise AssertionError("unreachable: _windows raises when it runs out")


def business_duration(start: dt.datetime, end: dt.datetime, calendar: Calendar) -> dt.timedelta:
    """Working time between two instants (zero when ``end`` is not after ``start``)."""
    start, end = _aware(start, "start"), _aware(end, "end")
    total = dt.timedelta(0)
    if end <= start:
        return total
    for begin, close in _windows(calendar, start):
        if begin >= end:
            break
        total += min(close, end) - begin
    return total
