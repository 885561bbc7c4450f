"""Read side of the board: columns with counts and sums, and one keyset page of deals per column."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from psycopg import AsyncConnection, sql

from projections.board import BoardQuery, ColumnStats, DealRow, PipelineBoard, PipelineRow, Status, layout
from projections.board_store import (
    BUILD,
    PIPELINE_COLUMNS,
    BoardSql,
    deal_from_record,
    deal_select,
    pipeline_from_record,
)


async def board(
    conn: AsyncConnection[Any],
    pipeline_id: str | None = None,
    owner: str | None = None,
    cursor: str | None = None,
    limit: int = 50,
    as_of: dt.datetime | None = None,
    status: Status = "open",
    build: str = BUILD,
) -> list[PipelineBoard]:
    """The board, per pipeline: stages in order, each with count, total and weighted amount per currency, and
    its first ``limit`` deals (longest in stage first) with a ``next_cursor`` when there are more.

    ``status`` picks open (the default), won or lost deals. Passing a column's ``next_cursor`` returns only
    that column, with its next page. ``as_of`` (business time; default now) drives age and the rotting flag.
    Raises ``ValueError`` on a bad cursor or limit. ``build``: whose tables to read (see
    :mod:`projections.versions`).
    """
    query = BoardQuery.make(pipeline_id, owner, status, cursor, limit)
    as_of = dt.datetime.now(dt.UTC) if as_of is None else as_of
    filters = [sql.SQL("status = {}").format(query.status)]
    if query.pipeline_id is not None:
        filters.append(sql.SQL("pipeline_id = {}").format(query.pipeline_id))
    if query.owner is not None:
        filters.append(sql.SQL("owner = {}").format(query.owner))
    if query.stage is not None:
        filters.append(sql.SQL("stage = {}").format(query.stage))
    where = sql.SQL(" AND ").join(filters)
    tables = BoardSql(build)
    deals = sql.Identifier(tables.deals)

    async with conn.cursor() as cur:
        if query.pipeline_id is None:
            await cur.execute(f"SELECT {PIPELINE_COLUMNS} FROM {tables.pipelines}")  # noqa: S608
        else:
            await cur.execute(
                f"SELECT {PIPELINE_COLUMNS} FROM {tables.pipelines} WHERE pipeline_id = %s",  # noqa: S608
                (query.pipeline_id,),
            )
        pipelines: dict[str, PipelineRow] = {}
        for record in await cur.fetchall():
            pipelines[record[0]] = pipeline_from_record(record)

        await cur.execute(
            sql.SQL(
                "SELECT pipeline_id, stage, currency, count(*), sum(amount) FROM {} WHERE {} "
                "GROUP BY pipeline_id, stage, currency"
            ).format(deals, where)
        )
        counts: dict[tuple[str, str], int] = {}
        totals: dict[tuple[str, str], dict[str, Decimal]] = {}
        for p, s, currency, n, total in await cur.fetchall():
            counts[(p, s)] = counts.get((p, s), 0) + n
            totals.setdefault((p, s), {})[currency] = total
        stats = {key: ColumnStats(n, totals[key]) for key, n in counts.items()}

        pages: dict[tuple[str, str], list[DealRow]] = {}
        if stats:
            # One index range scan per column, in keyset order, limit + 1 rows to know whether more follow.
            keys = sorted(stats)
            after = (
                sql.SQL("AND (d.stage_entered_at, d.deal_id) > ({}, {})").format(*query.after)
                if query.after is not None
                else sql.SQL("")
            )
            page_sql = sql.SQL(
                "SELECT {cols} FROM unnest({p}::text[], {s}::text[]) AS c(pipeline_id, stage) "
                "CROSS JOIN LATERAL (SELECT * FROM {deals} d WHERE d.pipeline_id = c.pipeline_id "
                "AND d.stage = c.stage AND d.status = {status} {owner} {after} "
                "ORDER BY d.stage_entered_at, d.deal_id LIMIT {n}) AS d "
                "ORDER BY d.pipeline_id, d.stage, d.stage_entered_at, d.deal_id"
            ).format(
                cols=sql.SQL(deal_select("d")),
                deals=deals,
                p=[k[0] for k in keys],
                s=[k[1] for k in keys],
                status=query.status,
                owner=sql.SQL("AND d.owner = {}").format(query.owner) if query.owner is not None else sql.SQL(""),
                after=after,
                n=query.limit + 1,
            )
            await cur.execute(page_sql)
            for record in await cur.fetchall():
                deal = deal_from_record(record)
                pages.setdefault((deal.pipeline_id, deal.stage), []).append(deal)
    return layout(query, pipelines, stats, pages, as_of)
