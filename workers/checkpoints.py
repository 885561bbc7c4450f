"""A projection's checkpoints in PostgreSQL: its tables made, its position read and moved with its writes."""

from __future__ import annotations

from typing import Any

import psycopg

from projections.contract import CHECKPOINT_DDL, Projection, Shard, checkpoint_name
from projections.versions import BUILDS_DDL, VERSIONS_DDL, BuildRules, claim

_DDL_LOCK = "dealstream.ddl"


async def read_checkpoint(conn: psycopg.AsyncConnection[Any], projection: str, partition_key: str) -> int:
    cur = await conn.execute(
        "SELECT last_sequence FROM projection_checkpoints WHERE projection = %s AND partition_key = %s",
        (projection, partition_key),
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def move_checkpoint(
    conn: psycopg.AsyncConnection[Any], projection: str, partition_key: str, expected: int, last: int
) -> bool:
    """Move a shard's checkpoint from ``expected`` to ``last`` (inside the batch's transaction); False if it was
    not at ``expected``."""
    cur = await conn.execute(
        "UPDATE projection_checkpoints SET last_sequence = %s, updated_at = now() "
        "WHERE projection = %s AND partition_key = %s AND last_sequence = %s",
        (last, projection, partition_key, expected),
    )
    return cur.rowcount == 1


async def ensure_schema(
    conn: psycopg.AsyncConnection[Any],
    projection: Projection,
    shard: Shard | None = None,
    rules: BuildRules | None = None,
) -> None:
    """Create the checkpoint table and the projection's tables; serialised, since concurrent
    ``CREATE ... IF NOT EXISTS`` of one table can still collide in PostgreSQL. With ``shard``, the shard claims
    its place in the build first (:func:`projections.versions.claim`): a refused one touches none of its tables."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext(current_schema() || %s))", (_DDL_LOCK,))
        await conn.execute(CHECKPOINT_DDL)
        await conn.execute(VERSIONS_DDL)
        await conn.execute(BUILDS_DDL)
        if shard is not None:
            await claim(conn, projection.name, checkpoint_name(projection), projection.version, shard.key, rules)
        for statement in projection.ddl():
            await conn.execute(statement)
