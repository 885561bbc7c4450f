"""The list helpers every read model's list shares: bounded limits, sort specs, opaque keyset cursors."""

from __future__ import annotations

import datetime as dt

import pytest

from events.aggregates import Rejected
from projections.listing import (
    SortField,
    Where,
    bounded_limit,
    decode_cursor,
    encode_cursor,
    keyset,
    like_pattern,
    number_range,
    page_of,
    parse_sort,
    time_range,
)

FIELDS = (SortField("captured_at", "captured_at", "time"), SortField("score", "score", "number"))
AT = dt.datetime(2026, 11, 22, 9, 30, 0, 123456, tzinfo=dt.UTC)


def field_of(call: object) -> str:
    with pytest.raises(Rejected) as caught:
        assert callable(call)
        call()
    assert caught.value.status == 422
    return caught.value.field


def test_limits_are_bounded_and_name_the_field() -> None:
    assert bounded_limit(None) == 50 and bounded_limit(200) == 200
    assert field_of(lambda: bounded_limit(201)) == "limit"
    assert field_of(lambda: bounded_limit(0)) == "limit"


def test_a_sort_reads_its_direction_from_the_sign_and_unknown_sorts_name_the_field() -> None:
    assert parse_sort(None, FIELDS, "-captured_at").direction == "desc"
    sort = parse_sort("score", FIELDS, "-captured_at")
    assert (sort.field.name, sort.direction, sort.token) == ("score", "asc", "score")
    assert field_of(lambda: parse_sort("-name", FIELDS, "score")) == "sort"


def test_a_cursor_round_trips_its_value_and_is_refused_for_another_sort_filters_or_garbage() -> None:
    sort = parse_sort("-captured_at", FIELDS, "score")
    filters = {"owner": "ana", "q": None}
    cursor = encode_cursor(sort, filters, AT.isoformat(), "lead-9")
    assert decode_cursor(cursor, sort, {"owner": "ana"}) == (AT, "lead-9")
    assert field_of(lambda: decode_cursor(cursor, parse_sort("captured_at", FIELDS, "score"), filters)) == "cursor"
    assert field_of(lambda: decode_cursor(cursor, sort, {"owner": "bo"})) == "cursor"
    for junk in ("", "!!", "eyJ4IjoxfQ", cursor[:-3]):
        assert field_of(lambda junk=junk: decode_cursor(junk, sort, filters)) == "cursor"


def test_keyset_pages_after_the_cursor_row_in_the_sort_direction() -> None:
    where = Where()
    order = keyset(where, parse_sort("-score", FIELDS, "score"), (12.5, "l1"), "lead_id")
    assert where.sql == "(score, lead_id) < (%s, %s)" and where.params == [12.5, "l1"]
    assert order == "ORDER BY score DESC, lead_id DESC"
    assert keyset(Where(), parse_sort("score", FIELDS, "score"), None, "id") == "ORDER BY score ASC, id ASC"


def test_ranges_check_their_bounds() -> None:
    where = Where()
    time_range(where, "captured_at", AT, AT + dt.timedelta(days=1), "captured_from/captured_to")
    number_range(where, "score", 10, None, "score_min/score_max")
    assert where.sql == "captured_at >= %s AND captured_at < %s AND score >= %s"
    assert field_of(lambda: time_range(Where(), "c", AT, AT, "captured_from/captured_to")) == "captured_to"
    assert field_of(lambda: time_range(Where(), "c", AT.replace(tzinfo=None), None, "a/b")) == "a"
    assert field_of(lambda: number_range(Where(), "s", 5, 4, "score_min/score_max")) == "score_max"


def test_like_patterns_take_wildcards_literally_and_pages_carry_the_next_cursor() -> None:
    assert like_pattern("50%_a\\b") == "%50\\%\\_a\\\\b%"
    sort = parse_sort("score", FIELDS, "score")
    rows = [(1.0, "a"), (2.0, "b"), (3.0, "c")]
    last = page_of(rows, 3, sort, {}, lambda r: r)
    assert last.next_cursor is None and last.rows == rows
    first = page_of(rows, 2, sort, {}, lambda r: r)
    assert first.rows == rows[:2] and first.next_cursor is not None
    assert decode_cursor(first.next_cursor, sort, {}) == (2.0, "b")
