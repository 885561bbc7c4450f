"""Working-time arithmetic for SLA clocks that count only a team's working hours.

A :class:`Calendar` says when a team works: weekdays and opening hours as local wall-clock times in its
time zone, minus holidays: a country's (and region's) public holidays from the ``holidays`` package, and the
team's own days. Day windows are built from those local times, but elapsed time is real (UTC)
time, so a daylight-saving change moves the opening instant in UTC and never stretches or shrinks an hour.
"""

from __future__ import annotations

import datetime as dt
import functools
import zoneinfo
from collections.abc import Container, Iterator

import holidays as public_holidays
import msgspec

_MAX_IDLE_DAYS = 366 * 5
_DAY = dt.timedelta(days=1)
_ZERO = dt.timedelta(0)


class Calendar(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A team's working time: a time zone, working weekdays and hours (local wall-clock), and holidays.

    ``workdays`` are ISO weekdays (1 = Monday .. 7 = Sunday); ``holidays`` are local dates with no working time,
    on top of the public holidays of ``country`` (ISO 3166 alpha-2, e.g. ``PL``) and its ``subdivision`` (e.g.
    ``BY`` of ``DE``) when named.
    """

    timezone: str = "UTC"
    workdays: list[int] = msgspec.field(default_factory=lambda: [1, 2, 3, 4, 5])
    opens: dt.time = dt.time(9, 0)
    closes: dt.time = dt.time(17, 0)
    holidays: list[dt.date] = []
    country: str | None = None
    subdivision: str | None = None

    def __post_init__(self) -> None:
        try:
            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError) as exc:
            raise ValueError(f"timezone: unknown IANA time zone {self.timezone!r}") from exc
        if not self.workdays:
            raise ValueError("workdays: at least one ISO weekday is needed")
        if any(not 1 <= day <= 7 for day in self.workdays):
            raise ValueError(f"workdays: ISO weekdays run from 1 (Monday) to 7 (Sunday), got {self.workdays}")
        # An offset on a wall-clock time would contradict the calendar's zone across a DST change.
        if self.opens.tzinfo is not None or self.closes.tzinfo is not None:
            raise ValueError("opens/closes: give local wall-clock times without an offset")
        if self.closes <= self.opens:
            raise ValueError(f"closes: must be after opens ({self.closes} <= {self.opens})")
        if self.subdivision is not None and self.country is None:
            raise ValueError(f"subdivision: {self.subdivision!r} needs the country it belongs to")
        if self.country is not None:
            try:
                _public_holidays(self.country, self.subdivision)
            except NotImplementedError as exc:
                field = "country" if self.subdivision is None else "subdivision"
                raise ValueError(f"{field}: no public holiday calendar ({exc})") from exc

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.timezone)

    def days_off(self) -> Container[dt.date]:
        """Every local date without working time beyond the weekly days off: own holidays and public ones."""
        own = frozenset(self.holidays)
        if self.country is None:
            return own
        return _DaysOff(own, _public_holidays(self.country, self.subdivision))


@functools.cache
def _public_holidays(country: str, subdivision: str | None) -> public_holidays.HolidayBase:
    # One calendar per country and region for the process: it computes each year once, when first asked.
    return public_holidays.country_holidays(country, subdiv=subdivision)


class _DaysOff:
    """A team's own holidays and its country's public ones."""

    __slots__ = ("own", "public")

    def __init__(self, own: frozenset[dt.date], public: public_holidays.HolidayBase) -> None:
        self.own, self.public = own, public

    def __contains__(self, day: object) -> bool:
        return day in self.own or day in self.public


def _utc(at: dt.datetime, name: str) -> dt.datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"{name}: must be an aware datetime (with a time zone)")
    return at.astimezone(dt.UTC)


def _window(
    calendar: Calendar, zone: zoneinfo.ZoneInfo, day: dt.date, workdays: frozenset[int], holidays: Container[dt.date]
) -> tuple[dt.datetime, dt.datetime] | None:
    """A local date's working hours as UTC instants, or None when the date has none."""
    if day.isoweekday() not in workdays or day in holidays:
        return None
    begin = dt.datetime.combine(day, calendar.opens, tzinfo=zone).astimezone(dt.UTC)
    end = dt.datetime.combine(day, calendar.closes, tzinfo=zone).astimezone(dt.UTC)
    # Wall times inside a spring-forward gap resolve with the earlier offset, which can put closes before opens.
    return (begin, end) if end > begin else None


def _windows(
    calendar: Calendar, start: dt.datetime, until: dt.datetime | None = None
) -> Iterator[tuple[dt.datetime, dt.datetime]]:
    """Working windows after ``start`` in order, the first clipped to begin at ``start``. With ``until`` it
    stops after that instant's local date; without, it raises ValueError after a long stretch with no working
    time, so a calendar that never opens cannot loop for ever."""
    zone = calendar.zone
    workdays, holidays = frozenset(calendar.workdays), calendar.days_off()
    day = start.astimezone(zone).date()
    last = until.astimezone(zone).date() if until is not None else dt.date.max
    # Clipping to the previous window's end keeps windows disjoint even if odd DST rules made days overlap.
    cursor = start
    idle_since: dt.date | None = None
    while day <= last:
        window = _window(calendar, zone, day, workdays, holidays)
        if window is not None and window[1] > cursor:
            yield max(window[0], cursor), window[1]
            cursor, idle_since = window[1], None
        elif idle_since is None:
            idle_since = day
        elif until is None and (day - idle_since).days >= _MAX_IDLE_DAYS:
            raise ValueError(f"calendar: no working time in {_MAX_IDLE_DAYS} days from {idle_since}")
        if day == dt.date.max:
            break
        day += _DAY
    if until is None:
        raise ValueError("duration: runs past the last representable date")


def is_business_time(at: dt.datetime, calendar: Calendar) -> bool:
    """Whether ``at`` (aware) falls on a working day, not a holiday, between opening and closing time."""
    at = _utc(at, "at")
    zone = calendar.zone
    window = _window(calendar, zone, at.astimezone(zone).date(), frozenset(calendar.workdays), calendar.days_off())
    return window is not None and window[0] <= at < window[1]


def add_business_time(start: dt.datetime, duration: dt.timedelta, calendar: Calendar) -> dt.datetime:
    """The UTC instant at which ``duration`` of working time has elapsed, counting from ``start``.

    Outside working time counting begins at the next opening, so a zero duration gives ``start`` itself only
    when it is inside working time. A result that uses up a day exactly is that day's closing instant.
    """
    start = _utc(start, "start")
    if duration < _ZERO:
        raise ValueError(f"duration: must not be negative, got {duration}")
    left = duration
    for begin, end in _windows(calendar, start):
        if left <= end - begin:
            return begin + left
        left -= end - begin
    raise AssertionError("unreachable: _windows without a limit either yields or raises")


def business_duration(start: dt.datetime, end: dt.datetime, calendar: Calendar) -> dt.timedelta:
    """Working time between two aware instants; zero when ``end`` is not after ``start``."""
    start, end = _utc(start, "start"), _utc(end, "end")
    total = _ZERO
    if end <= start:
        return total
    for begin, close in _windows(calendar, start, until=end):
        if begin >= end:
            break
        total += min(close, end) - begin
    return total
