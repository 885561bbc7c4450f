"""Calendar periods for the velocity figures: a day, week, month or quarter between local midnights, or an
explicit ``[start, end)``, each with the period before it. Pure: no I/O, no clock."""

from __future__ import annotations

import datetime as dt
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from projections.instants import aware_utc

PeriodKind = Literal["day", "week", "month", "quarter"]
PERIOD_KINDS: tuple[PeriodKind, ...] = ("day", "week", "month", "quarter")


class Period(msgspec.Struct, frozen=True, kw_only=True):
    """``[start, end)`` in UTC, and the period before it, ``[previous_start, start)``."""

    start: dt.datetime
    end: dt.datetime
    previous_start: dt.datetime


def zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name``; ``ValueError`` if there is none."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r}") from exc


def local_midnight(day: dt.date, zone: ZoneInfo) -> dt.datetime:
    """The UTC instant at which ``day`` begins in ``zone``.

    Where midnight does not exist (a DST jump at 00:00) this is the first instant of the day, the end of the
    gap, because zoneinfo reads a missing wall time with the offset in force before it.
    """
    return dt.datetime.combine(day, dt.time(0), tzinfo=zone).astimezone(dt.UTC)


def _first_day(kind: PeriodKind, day: dt.date) -> dt.date:
    if kind == "day":
        return day
    if kind == "week":
        return day - dt.timedelta(days=day.weekday())
    if kind == "month":
        return day.replace(day=1)
    return dt.date(day.year, 3 * ((day.month - 1) // 3) + 1, 1)


def _shift(kind: PeriodKind, first: dt.date, n: int) -> dt.date:
    if kind == "day":
        return first + dt.timedelta(days=n)
    if kind == "week":
        return first + dt.timedelta(weeks=n)
    months = first.year * 12 + first.month - 1 + n * (1 if kind == "month" else 3)
    return dt.date(months // 12, months % 12 + 1, 1)


def period(kind: PeriodKind, day: dt.date, time_zone: str) -> Period:
    """The calendar day, week (Monday first, ISO), month or quarter containing the local date ``day`` in the
    IANA ``time_zone``, from local midnight to local midnight: a week across a DST change lasts 167 or 169
    hours, a day 23 or 25. The previous period is the previous calendar period (a month before March is
    February, whatever its length)."""
    if kind not in PERIOD_KINDS:
        raise ValueError(f"period must be one of {PERIOD_KINDS}")
    tz = zone(time_zone)
    first = _first_day(kind, day)
    return Period(
        start=local_midnight(first, tz),
        end=local_midnight(_shift(kind, first, 1), tz),
        previous_start=local_midnight(_shift(kind, first, -1), tz),
    )


def explicit_period(start: dt.datetime, end: dt.datetime) -> Period:
    """``[start, end)`` as given (aware datetimes); the previous period is the one of equal length before it."""
    start, end = aware_utc(start, "period bounds"), aware_utc(end, "period bounds")
    if not start < end:
        raise ValueError("the period must end after it starts")
    return Period(start=start, end=end, previous_start=start - (end - start))


def local_range(start: dt.date, end: dt.date, time_zone: str) -> Period:
    """Local dates ``[start, end)`` in ``time_zone``: from local midnight of ``start`` to that of ``end``."""
    tz = zone(time_zone)
    return explicit_period(local_midnight(start, tz), local_midnight(end, tz))
