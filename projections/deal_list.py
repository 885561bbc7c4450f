"""The deal list: the board's deal rows filtered, searched, sorted and paged by keyset.

Rows come from the serving board build (``<build>_deals``); ``rotting`` is computed as the board computes it, from
the stage's rotting days in the pipeline's current definition, at the moment of the request. ``q`` searches the
deal's name, case-insensitively, as a substring. A deal's name is a business label, but it is often a person's
("Kowalska kitchen"): it is sealed in the log like any free text and read here from the read model, whose clear
copy the board scrubs when the lead the deal was opened from is erased.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import msgspec
from psycopg import AsyncConnection

from events.aggregates import Rejected
from projections.board import AlertBadge, PipelineRow, Status, is_rotting
from projections.board_store import BUILD, PIPELINE_COLUMNS, BoardSql, deal_from_record, deal_select
from projections.board_store import pipeline_from_record as _pipeline
from projections.listing import (
    SortField,
    Where,
    bounded_limit,
    decode_cursor,
    keyset,
    like_pattern,
    page_of,
    parse_sort,
)
from projections.money import in_minor_units

SORTS = (
    SortField("opened_at", "opened_at", "time"),
    SortField("stage_entered_at", "stage_entered_at", "time"),
    SortField("last_activity_at", "last_activity_at", "time"),
    SortField("name", "name", "text"),
)
DEFAULT_SORT = "-opened_at"
Q_MAX = 100


class DealFilters(msgspec.Struct, frozen=True, kw_only=True):
    """What a deal list asks for; every filter optional."""

    pipeline_id: str | None = None
    stage: str | None = None
    owner: str | None = None
    status: Status | None = None
    close_from: dt.date | None = None
    close_to: dt.date | None = None
    rotting: bool | None = None
    q: str | None = None


class DealItem(msgspec.Struct, frozen=True, kw_only=True):
    """One deal in a list. Times are business time; ``amount`` in its currency's minor units."""

    deal_id: str
    name: str
    pipeline_id: str
    stage: str
    status: Status
    owner: str | None
    amount: Decimal
    currency: str
    expected_close_date: dt.date | None
    next_step: str | None
    opened_at: dt.datetime
    stage_entered_at: dt.datetime
    last_activity_at: dt.datetime
    next_task_due_at: dt.datetime | None
    closed_at: dt.datetime | None
    lost_reason: str | None
    rotting: bool
    alerts: tuple[AlertBadge, ...] = ()


class DealPage(msgspec.Struct, frozen=True, kw_only=True):
    deals: list[DealItem]
    next_cursor: str | None


def _rotting_cutoffs(pipelines: dict[str, PipelineRow], as_of: dt.datetime) -> list[tuple[str, str, dt.datetime]]:
    """(pipeline, stage, the last activity before which an open deal there rots) for every stage that rots."""
    return [
        (p.pipeline_id, s.id, as_of - dt.timedelta(days=s.rotting_days))
        for p in pipelines.values()
        for s in p.stages
        if s.rotting_days is not None
    ]


def where_of(filters: DealFilters, cutoffs: list[tuple[str, str, dt.datetime]]) -> Where:
    """The SQL conditions of ``filters`` over the deals table (alias ``d``); 422 naming a bad filter."""
    where = Where()
    where.add_if(filters.pipeline_id, "d.pipeline_id = %s")
    where.add_if(filters.stage, "d.stage = %s")
    where.add_if(filters.owner, "d.owner = %s")
    where.add_if(filters.status, "d.status = %s")
    if filters.close_from and filters.close_to and filters.close_to < filters.close_from:
        raise Rejected("close_to", "must not be before close_from", 422)
    where.add_if(filters.close_from, "d.expected_close_date >= %s")
    where.add_if(filters.close_to, "d.expected_close_date <= %s")
    if filters.q is not None:
        q = filters.q.strip()
        if not 1 <= len(q) <= Q_MAX:
            raise Rejected("q", f"must hold 1 to {Q_MAX} characters", 422)
        where.add("d.name ILIKE %s", like_pattern(q))
    if filters.rotting is not None:
        rots = (
            "d.status = 'open' AND EXISTS (SELECT 1 FROM unnest(%s::text[], %s::text[], %s::timestamptz[]) "
            "AS r(p, s, c) WHERE r.p = d.pipeline_id AND r.s = d.stage AND d.last_activity_at < r.c)"
        )
        columns = [list(c) for c in zip(*cutoffs, strict=True)] if cutoffs else [[], [], []]
        where.add(rots if filters.rotting else f"NOT ({rots})", *columns)
    return where


async def deal_page(
    conn: AsyncConnection[Any],
    filters: DealFilters,
    sort: str | None = None,
    cursor: str | None = None,
    limit: int | None = None,
    as_of: dt.datetime | None = None,
    build: str = BUILD,
) -> DealPage:
    """One page of deals matching ``filters``, sorted by ``sort`` (``-opened_at`` by default: newest first),
    after ``cursor``; 422 naming the field on a bad sort, cursor, limit or filter."""
    as_of = dt.datetime.now(dt.UTC) if as_of is None else as_of
    order = parse_sort(sort, SORTS, DEFAULT_SORT)
    size = bounded_limit(limit)
    named = msgspec.structs.asdict(filters)
    after = decode_cursor(cursor, order, named) if cursor is not None else None
    tables = BoardSql(build)
    async with conn.cursor() as cur:
        await cur.execute(f"SELECT {PIPELINE_COLUMNS} FROM {tables.pipelines}")  # noqa: S608
        pipelines = {r[0]: _pipeline(r) for r in await cur.fetchall()}
        where = where_of(filters, _rotting_cutoffs(pipelines, as_of))
        order_by = keyset(where, order, after, "d.deal_id")
        # Never a prepared statement: a generic plan cannot see the search pattern or the filters' selectivity,
        # and walks a sort's whole index for a rare name.
        await cur.execute(
            f"SELECT {deal_select('d')} FROM {tables.deals} d WHERE {where.sql} {order_by} LIMIT %s",  # noqa: S608
            [*where.params, size + 1],
            prepare=False,
        )
        rows = [deal_from_record(r) for r in await cur.fetchall()]
    column = order.field.name
    page = page_of(rows, size, order, named, lambda row: (getattr(row, column), row.deal_id))
    rot = {(p, s): days for p, row in pipelines.items() for s, days in ((s.id, s.rotting_days) for s in row.stages)}
    items = [
        DealItem(
            deal_id=d.deal_id,
            name=d.name,
            pipeline_id=d.pipeline_id,
            stage=d.stage,
            status=d.status,
            owner=d.owner,
            amount=in_minor_units(d.amount, d.currency),
            currency=d.currency,
            expected_close_date=d.expected_close_date,
            next_step=d.next_step,
            opened_at=d.opened_at,
            stage_entered_at=d.stage_entered_at,
            last_activity_at=d.last_activity_at,
            next_task_due_at=d.next_task_due_at,
            closed_at=d.closed_at,
            lost_reason=d.lost_reason,
            rotting=is_rotting(d.status, d.last_activity_at, rot.get((d.pipeline_id, d.stage)), as_of),
        )
        for d in page.rows
    ]
    return DealPage(deals=items, next_cursor=page.next_cursor)
