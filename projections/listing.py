"""What every list of a read model shares: a bounded page size, a sort spec, keyset pagination behind an opaque
cursor, and the SQL of filters. Pure but for the SQL text it builds; no I/O.

A list sorts on one column and its row id (the tie-break), both NOT NULL, with an index on ``(column, id)``. The
cursor holds the last row's sort value and id, the sort it was made for and a digest of the filters, so a cursor
handed back with another sort or other filters is refused (422 naming ``cursor``) instead of answering a page of
another question. Bad input raises :class:`events.aggregates.Rejected` with 422 and the field's name.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import msgspec

from events.aggregates import Rejected

DEFAULT_LIMIT = 50
MAX_LIMIT = 200

Direction = Literal["asc", "desc"]
Kind = Literal["time", "number", "text"]
_KINDS: dict[str, type[Any]] = {"time": dt.datetime, "number": float, "text": str}


def bounded_limit(limit: int | None, default: int = DEFAULT_LIMIT, maximum: int = MAX_LIMIT) -> int:
    """The page size asked for, checked: 1 to ``maximum`` (``default`` when not given)."""
    if limit is None:
        return default
    if not 1 <= limit <= maximum:
        raise Rejected("limit", f"must be between 1 and {maximum}, got {limit}", 422)
    return limit


class SortField(msgspec.Struct, frozen=True):
    """A column a list can be sorted on: its name in the query, its SQL column and the type of its values."""

    name: str
    column: str
    kind: Kind


class Sort(msgspec.Struct, frozen=True):
    """One sort of a list: the field and its direction."""

    field: SortField
    direction: Direction

    @property
    def token(self) -> str:
        return ("-" if self.direction == "desc" else "") + self.field.name


def parse_sort(text: str | None, fields: Sequence[SortField], default: str) -> Sort:
    """``score`` (ascending) or ``-score`` (descending): the sign alone decides. ``None``: ``default``, a token of
    the same form."""
    token = default if text is None else text.strip()
    direction: Direction = "desc" if token.startswith("-") else "asc"
    name = token.removeprefix("-").removeprefix("+")
    for f in fields:
        if f.name == name:
            return Sort(f, direction)
    names = ", ".join(f.name for f in fields)
    raise Rejected("sort", f"unknown sort {text!r}: one of {names}, each optionally prefixed by - (descending)", 422)


class _Cursor(msgspec.Struct, frozen=True, array_like=True):
    sort: str
    filters: str
    value: Any
    id: str


def filters_digest(filters: Mapping[str, object]) -> str:
    """A short digest of the filters a page was asked with (the cursor carries it)."""
    text = msgspec.json.encode({k: v for k, v in filters.items() if v is not None}, order="sorted")
    return hashlib.sha256(text).hexdigest()[:16]


def encode_cursor(sort: Sort, filters: Mapping[str, object], value: object, row_id: str) -> str:
    """The opaque cursor after the row (``value``, ``row_id``) of a page sorted by ``sort`` under ``filters``."""
    raw = msgspec.json.encode(_Cursor(sort.token, filters_digest(filters), value, row_id))
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str, sort: Sort, filters: Mapping[str, object]) -> tuple[Any, str]:
    """The sort value and id a cursor points after; 422 naming ``cursor`` if it is unreadable or was made for
    another sort or other filters."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        cursor = msgspec.json.decode(raw, type=_Cursor)
        value = msgspec.convert(cursor.value, _KINDS[sort.field.kind], strict=False)
    except (binascii.Error, ValueError, msgspec.ValidationError, msgspec.DecodeError):
        raise Rejected("cursor", "not a cursor this list gave", 422) from None
    if cursor.sort != sort.token or cursor.filters != filters_digest(filters):
        raise Rejected("cursor", "made for another sort or other filters: start again without it", 422)
    return value, cursor.id


class Where(msgspec.Struct):
    """SQL conditions joined by AND, and their parameters in order."""

    clauses: list[str] = msgspec.field(default_factory=list)
    params: list[Any] = msgspec.field(default_factory=list)

    def add(self, clause: str, *params: Any) -> None:
        self.clauses.append(clause)
        self.params.extend(params)

    def add_if(self, value: object, clause: str) -> None:
        """``clause`` (with one ``%s``) when ``value`` is given."""
        if value is not None:
            self.add(clause, value)

    @property
    def sql(self) -> str:
        return " AND ".join(self.clauses) if self.clauses else "true"


def keyset(where: Where, sort: Sort, after: tuple[Any, str] | None, id_column: str) -> str:
    """Add the keyset condition for the page after ``after`` to ``where``; returns the ORDER BY clause."""
    col, op = sort.field.column, "<" if sort.direction == "desc" else ">"
    if after is not None:
        where.add(f"({col}, {id_column}) {op} (%s, %s)", *after)
    way = sort.direction.upper()
    return f"ORDER BY {col} {way}, {id_column} {way}"


def time_range(where: Where, column: str, start: dt.datetime | None, end: dt.datetime | None, names: str) -> None:
    """``start <= column < end``; each bound must carry a time zone (``names``: ``from_name/to_name``)."""
    first, second = names.split("/")
    for name, value in ((first, start), (second, end)):
        if value is not None and value.utcoffset() is None:
            raise Rejected(name, "must carry a time zone offset, e.g. 2026-11-22T00:00:00Z", 422)
    if start is not None and end is not None and end <= start:
        raise Rejected(second, f"must be after {first}", 422)
    where.add_if(start, f"{column} >= %s")
    where.add_if(end, f"{column} < %s")


def number_range(where: Where, column: str, low: float | None, high: float | None, names: str) -> None:
    """``low <= column <= high`` (``names``: ``min_name/max_name``)."""
    first, second = names.split("/")
    if low is not None and high is not None and high < low:
        raise Rejected(second, f"must be at least {first}", 422)
    where.add_if(low, f"{column} >= %s")
    where.add_if(high, f"{column} <= %s")


def like_pattern(text: str) -> str:
    """``%text%`` for LIKE/ILIKE with the pattern characters in ``text`` taken literally (escape ``\\``)."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class Page(msgspec.Struct, frozen=True):
    """Rows of one page and the cursor of the next (None: the last page)."""

    rows: list[Any]
    next_cursor: str | None


def page_of(
    rows: Sequence[Any],
    limit: int,
    sort: Sort,
    filters: Mapping[str, object],
    key: Callable[[Any], tuple[Any, str]],
) -> Page:
    """``rows`` fetched with ``LIMIT limit + 1``: the first ``limit`` and the cursor after the last of them if more
    follow. ``key(row)`` is the (sort value, id) of a row."""
    if len(rows) <= limit:
        return Page(list(rows), None)
    kept = list(rows[:limit])
    value, row_id = key(kept[-1])
    return Page(kept, encode_cursor(sort, filters, value, row_id))
