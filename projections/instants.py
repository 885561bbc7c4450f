"""Instants in UTC: a stored ``timestamptz`` read back whatever the session's time zone, a caller's bound checked."""

from __future__ import annotations

import datetime as dt


def utc(value: dt.datetime) -> dt.datetime:
    """The same instant in UTC."""
    return value.astimezone(dt.UTC)


def utc_or_none(value: dt.datetime | None) -> dt.datetime | None:
    """:func:`utc` of a nullable column."""
    return None if value is None else value.astimezone(dt.UTC)


def aware_utc(value: dt.datetime, name: str) -> dt.datetime:
    """``value`` in UTC; ``ValueError`` naming ``name`` if it is naive (a naive time is no instant)."""
    if value.tzinfo is None:
        raise ValueError(f"{name} must carry a time zone")
    return value.astimezone(dt.UTC)
