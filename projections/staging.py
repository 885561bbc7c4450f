"""Batched upserts: a batch's changed rows go in by binary COPY into a staging table, then merge in one
statement. Shared by the stores whose batches change many rows (board, SLA)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from psycopg import AsyncCursor


def typed(ddl: str, names: Sequence[str]) -> list[tuple[str, str]]:
    """Each named column with its type, as the table's ``CREATE TABLE`` declares it."""
    declared = dict(re.findall(r"^\s*(\w+) (\w+)", ddl, flags=re.MULTILINE))
    return [(name, declared[name]) for name in names]


class StagedUpsert:
    """Rows go in by binary COPY into a session-local staging table, then one INSERT .. SELECT merges them: far
    cheaper than a statement per row. Each row is staged at most once per batch, so ON CONFLICT never meets
    the same row twice; ORDER BY keeps the lock order fixed; a row only replaces an older version of itself."""

    def __init__(self, table: str, columns: Sequence[tuple[str, str]], key: str) -> None:
        names = [name for name, _ in columns]
        listed = ", ".join(names)
        self.types = [kind for _, kind in columns]
        self.staging = f"CREATE TEMP TABLE IF NOT EXISTS {table}_in (LIKE {table}) ON COMMIT DELETE ROWS"
        self.copy = f"COPY {table}_in ({listed}) FROM STDIN (FORMAT BINARY)"
        self.merge = (
            f"INSERT INTO {table} ({listed}) SELECT {listed} FROM {table}_in ORDER BY {key} "  # noqa: S608
            f"ON CONFLICT ({key}) DO UPDATE SET "
            + ", ".join(f"{c} = EXCLUDED.{c}" for c in names if c not in key.split(", "))
            + f" WHERE {table}.version < EXCLUDED.version"
        )
        # Emptied at commit anyway; emptied now too, so that a second write in the same transaction starts clean.
        self.clear = f"TRUNCATE {table}_in"

    async def write(self, cur: AsyncCursor[Any], rows: Sequence[Sequence[Any]]) -> None:
        await cur.execute(self.staging)
        async with cur.copy(self.copy) as copy:
            # Binary rows cost half what text rows do, on both sides (timestamps travel as integers).
            copy.set_types(self.types)
            for row in rows:
                await copy.write_row(row)
        await cur.execute(self.merge)
        await cur.execute(self.clear)
