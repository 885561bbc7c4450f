"""Every deal of the board's read model, streamed in id order for a CSV export (a server-side cursor)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from psycopg import AsyncConnection, sql

from projections.board import DealRow, Status
from projections.board_store import BUILD, BoardSql, deal_from_record, deal_select

BATCH = 1_000


async def all_deals(
    conn: AsyncConnection[Any],
    status: Status | None = None,
    pipeline_id: str | None = None,
    build: str = BUILD,
) -> AsyncIterator[DealRow]:
    """The deals (of one status, one pipeline, or all), ``BATCH`` rows fetched at a time, in one transaction."""
    filters: list[sql.Composable] = [sql.SQL("TRUE")]
    if status is not None:
        filters.append(sql.SQL("status = {}").format(status))
    if pipeline_id is not None:
        filters.append(sql.SQL("pipeline_id = {}").format(pipeline_id))
    query = sql.SQL("SELECT {} FROM {} WHERE {} ORDER BY deal_id").format(
        sql.SQL(deal_select()), sql.Identifier(BoardSql(build).deals), sql.SQL(" AND ").join(filters)
    )
    async with conn.transaction(), conn.cursor(name="board_export") as cur:
        cur.itersize = BATCH
        await cur.execute(query)
        async for record in cur:
            yield deal_from_record(record)
