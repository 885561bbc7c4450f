"""The board's change feed: deals whose row changed after a stream sequence, in sequence order."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection

from projections.board import DealRow
from projections.board_store import BUILD, BoardSql, deal_from_record, deal_select


async def latest_change(conn: AsyncConnection[Any], build: str = BUILD) -> int:
    """The highest stream sequence applied to any deal row (0 on an empty board)."""
    cur = await conn.execute(f"SELECT coalesce(max(version), 0) FROM {BoardSql(build).deals}")  # noqa: S608
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def changes_after(conn: AsyncConnection[Any], after: int, limit: int, build: str = BUILD) -> list[DealRow]:
    """Deal rows last changed by an event with sequence above ``after``, oldest change first.

    A deal changed twice since ``after`` appears once, as it is now: a feed of states, not of events.
    """
    cur = await conn.execute(
        f"SELECT {deal_select()} FROM {BoardSql(build).deals} WHERE version > %s ORDER BY version LIMIT %s",  # noqa: S608
        (after, limit),
    )
    return [deal_from_record(r) for r in await cur.fetchall()]
