"""The lead records' search index: a trigram GIN index where pg_trgm is installed or may be created (a trusted
extension: a role with CREATE on the database may), a prefix b-tree where it may not; ``q`` finds the same either
way."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from events.envelope import StoredEvent
from events.types import LeadCaptured
from projections.lead_records import LeadTable, apply
from projections.lead_records_store import (
    DEFAULT_SORT,
    SORTS,
    LeadFilters,
    LeadRecordsProjection,
    list_records,
    values_of,
)
from projections.listing import parse_sort
from projections.scoring import NO_RULES
from tests.builders import T0, envelope

pytestmark = pytest.mark.integration


@pytest.fixture
def fresh_database(pg_url: str) -> Iterator[tuple[str, str]]:
    """A database of its own (no extension installed yet) and a role that may not create in it."""
    name, role = f"leads_{uuid.uuid4().hex[:10]}", f"weak_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
        conn.execute(f"CREATE ROLE {role} LOGIN")
    try:
        yield psycopg.conninfo.make_conninfo(pg_url, dbname=name), role
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {name} WITH (FORCE)")
            conn.execute(f"DROP ROLE {role}")


async def _index_and_search(url: str) -> tuple[str, list[str]]:
    projection = LeadRecordsProjection(NO_RULES)
    table = LeadTable(key=b"k")
    for n, (name, company) in enumerate((("Marta Kowalska", "Kowalski i Synowie"), ("Chen Wei", "Dragon Trade"))):
        data = LeadCaptured(full_name=name, company=company, email=f"p{n}@example.com")
        env = envelope(data, "lead", f"l{n}", T0 + dt.timedelta(hours=n))
        apply(table, StoredEvent(sequence=n + 1, subject=f"t.evt.lead.0.l{n}", envelope=env), NO_RULES)
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute("SET search_path = s")
        for statement in projection.ddl():
            await conn.execute(statement)
        async with conn.cursor() as cur:
            await cur.executemany(projection.sql.upsert, [values_of(r) for r in table.leads.values()])
        found = await conn.execute("SELECT indexdef FROM pg_indexes WHERE indexname LIKE '%search'")
        row = await found.fetchone()
        assert row is not None
        sort = parse_sort(None, SORTS, DEFAULT_SORT)
        page = await list_records(conn, projection.build, LeadFilters(q="owalsk"), sort, None, 10)
    return str(row[0]), [r.lead_id for r in page.rows]


async def test_a_role_that_may_create_gets_a_trigram_index(fresh_database: tuple[str, str]) -> None:
    url, _ = fresh_database
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA s")
    index, found = await _index_and_search(url)
    assert "gin (search public.gin_trgm_ops)" in index and found == ["l0"]


async def test_a_role_that_may_not_gets_a_prefix_index_and_the_same_answers(fresh_database: tuple[str, str]) -> None:
    url, role = fresh_database
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA s AUTHORIZATION {role}")
    index, found = await _index_and_search(psycopg.conninfo.make_conninfo(url, user=role))
    assert "btree (search text_pattern_ops)" in index and found == ["l0"]
