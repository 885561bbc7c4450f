"""Lead records in PostgreSQL: the projection and the queries behind ``GET /v1/leads`` and ``GET /v1/leads/{id}``.

Text search (``q``) runs on one lower-cased ``search`` column (name, e-mail, company, phone and its digits) with
``LIKE '%q%'``. Its index is a trigram GIN index when the ``pg_trgm`` extension is installed or may be installed
(it is a trusted extension since PostgreSQL 13: a database owner may create it without being a superuser; the DDL
tries ``CREATE EXTENSION pg_trgm SCHEMA public`` and uses it wherever it lives); without it, a ``text_pattern_ops``
b-tree serves prefix searches and contains-searches scan the rows the other filters leave.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from typing import Any

import msgspec
from psycopg import AsyncConnection, AsyncCursor

from events.envelope import AggregateType, StoredEvent
from events.types import Event, LeadCaptured, LeadCorrected, LeadDetailsFetched, TouchpointLogged
from projections.batch import BatchProjection, changed
from projections.lead_records import LeadRecord, LeadTable, apply, event_contact_keys
from projections.listing import Page, Sort, SortField, Where, keyset, like_pattern, number_range, page_of, time_range
from projections.scoring import ScoringRules
from projections.versions import BuildVersion, build_name

VERSION = 1
"""The lead records fold's logic version; a build is this and the scoring rules' version (its scores are the
scores fold's), so ``lead_records_v101`` is logic 1 under rules 1."""

SORTS = (
    SortField("captured_at", "captured_at", "time"),
    SortField("score", "score", "number"),
    SortField("last_activity", "last_activity_at", "time"),
)
DEFAULT_SORT = "-captured_at"

_encode = msgspec.json.encode
_row_decoder = msgspec.json.Decoder(LeadRecord)
_COLUMNS = (
    "lead_id",
    "captured_at",
    "owner",
    "status",
    "source",
    "channel",
    "score",
    "last_activity_at",
    "duplicate_of",
    "merged_into",
    "search",
    "row",
    "version",
)
_PHONE_LIKE = re.compile(r"[0-9+()./ -]+")
KEY_TABLE = "lead_records_contact_key"
"""The one table of the projection outside its builds: the hash key, never changed once made."""


class LeadRecordsSql:
    def __init__(self, build: str) -> None:
        t = self.leads = f"{build}_leads"
        self.contacts, self.key = f"{build}_contacts", KEY_TABLE
        self.columns = _COLUMNS
        self.ddl = (
            f"CREATE TABLE IF NOT EXISTS {t} (lead_id text PRIMARY KEY, captured_at timestamptz NOT NULL, owner text, "
            "status text NOT NULL, source text NOT NULL, channel text NOT NULL, score double precision NOT NULL, "
            "last_activity_at timestamptz NOT NULL, duplicate_of text, merged_into text, search text NOT NULL, "
            "row jsonb NOT NULL, version bigint NOT NULL)",
            # One index per sort, the id breaking ties (keyset pages), and one per common filter with its sort.
            f"CREATE INDEX IF NOT EXISTS {t}_captured ON {t} (captured_at, lead_id)",
            f"CREATE INDEX IF NOT EXISTS {t}_score ON {t} (score, lead_id)",
            f"CREATE INDEX IF NOT EXISTS {t}_activity ON {t} (last_activity_at, lead_id)",
            f"CREATE INDEX IF NOT EXISTS {t}_owner ON {t} (owner, captured_at, lead_id)",
            f"CREATE INDEX IF NOT EXISTS {t}_owner_score ON {t} (owner, score, lead_id)",
            f"CREATE INDEX IF NOT EXISTS {t}_status ON {t} (status, captured_at, lead_id)",
            f"CREATE INDEX IF NOT EXISTS {t}_duplicate ON {t} (duplicate_of) WHERE duplicate_of IS NOT NULL",
            f"CREATE INDEX IF NOT EXISTS {t}_merged ON {t} (merged_into) WHERE merged_into IS NOT NULL",
            _search_index(t),
            f"CREATE TABLE IF NOT EXISTS {self.contacts} (key text PRIMARY KEY, lead_id text NOT NULL)",
            f"CREATE INDEX IF NOT EXISTS {self.contacts}_lead ON {self.contacts} (lead_id)",
            # The key of the contact hashes, made once at random (gen_random_uuid: a strong source) and shared by
            # every build of the projection in this database, so that a rebuild folds the very rows it verifies.
            f"CREATE TABLE IF NOT EXISTS {self.key} (id boolean PRIMARY KEY DEFAULT true, key text NOT NULL)",
            f"INSERT INTO {self.key} (key) VALUES (gen_random_uuid()::text || gen_random_uuid()::text) "  # noqa: S608
            "ON CONFLICT (id) DO NOTHING",
        )
        self.upsert = (
            f"INSERT INTO {t} ({', '.join(_COLUMNS)}) VALUES ({', '.join(['%s'] * len(_COLUMNS))}) "  # noqa: S608
            "ON CONFLICT (lead_id) DO UPDATE SET "
            + ", ".join(f"{c} = EXCLUDED.{c}" for c in _COLUMNS[1:])
            + f" WHERE {t}.version < EXCLUDED.version"
        )
        self.select = f"SELECT row::text FROM {t}"  # noqa: S608


_SEARCH_INDEX = """
DO $$
DECLARE trgm text;
BEGIN
    SELECT n.nspname INTO trgm FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
        WHERE e.extname = 'pg_trgm';
    IF trgm IS NULL THEN
        BEGIN
            CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public;
            trgm := 'public';
        EXCEPTION WHEN OTHERS THEN
            trgm := NULL;
        END;
    END IF;
    IF trgm IS NOT NULL THEN
        EXECUTE format('CREATE INDEX IF NOT EXISTS {table}_search ON {table} USING gin (search %I.gin_trgm_ops)', trgm);
    ELSE
        CREATE INDEX IF NOT EXISTS {table}_search ON {table} (search text_pattern_ops);
    END IF;
END $$"""
"""A trigram index on ``search`` where pg_trgm is (or may be made) available, else a prefix b-tree."""


def _search_index(table: str) -> str:
    # The table's name is the build's (checked by build_name), never input.
    return _SEARCH_INDEX.replace("{table}", table)


def values_of(r: LeadRecord) -> tuple[Any, ...]:
    """A record's row, in the order of :attr:`LeadRecordsSql.columns`."""
    return (
        r.lead_id,
        r.captured_at,
        r.scored.owner,
        r.status,
        r.scored.profile.source,
        r.channel,
        r.scored.score,
        r.last_activity_at,
        r.duplicate_of,
        r.merged_into,
        r.search_text,
        _encode(r).decode(),
        r.version,
    )


class LeadRecordsProjection(BatchProjection[LeadTable]):
    """Every lead's record: profile, source, owner, status, score, activity, duplicates."""

    name = "lead_records"
    partitioned: tuple[AggregateType, ...] = ("lead",)
    broadcast: tuple[AggregateType, ...] = ()
    # The profile is what the lead told us, sealed in the log: the engine opens it (the fold scrubs it on erasure).
    reads_personal: tuple[type[Event], ...] = (LeadCaptured, LeadDetailsFetched, TouchpointLogged, LeadCorrected)

    def __init__(self, rules: ScoringRules, instance: str = "") -> None:
        self.rules = rules
        self.version = BuildVersion(VERSION, rules.version).number
        self.build = build_name(self.name, self.version, instance)
        self.sql = LeadRecordsSql(self.build)

    def ddl(self) -> Sequence[str]:
        return self.sql.ddl

    async def load_touched(self, conn: AsyncConnection[Any], events: Sequence[StoredEvent]) -> LeadTable:
        cur = await conn.execute(f"SELECT key FROM {self.sql.key}")  # noqa: S608
        row = await cur.fetchone()
        key = str(row[0]).encode() if row else b""
        ids = sorted({e.envelope.aggregate_id for e in events})
        keys = sorted({k for e in events for k in event_contact_keys(e, key)})
        cur = await conn.execute(f"{self.sql.select} WHERE lead_id = ANY(%s)", (ids,))
        leads = {r.lead_id: r for r in (_row_decoder.decode(x[0]) for x in await cur.fetchall())}
        cur = await conn.execute(
            f"SELECT key, lead_id FROM {self.sql.contacts} WHERE key = ANY(%s) OR lead_id = ANY(%s)",  # noqa: S608
            (keys, ids),
        )
        return LeadTable(leads, {str(k): str(v) for k, v in await cur.fetchall()}, key)

    def fold(self, state: LeadTable, event: StoredEvent) -> None:
        apply(state, event, self.rules)

    async def write_changes(
        self, cur: AsyncCursor[Any], before: LeadTable, after: LeadTable, events: Sequence[StoredEvent]
    ) -> None:
        rows = changed(after.leads, before.leads)
        if rows:
            await cur.executemany(self.sql.upsert, [values_of(r) for r in rows])
        gone = sorted(k for k in before.contacts if k not in after.contacts)
        if gone:
            await cur.execute(f"DELETE FROM {self.sql.contacts} WHERE key = ANY(%s)", (gone,))  # noqa: S608
        claimed = sorted((k, v) for k, v in after.contacts.items() if before.contacts.get(k) != v)
        if claimed:
            await cur.executemany(
                f"INSERT INTO {self.sql.contacts} (key, lead_id) VALUES (%s, %s) "  # noqa: S608
                "ON CONFLICT (key) DO UPDATE SET lead_id = EXCLUDED.lead_id",
                claimed,
            )


async def load_records(conn: AsyncConnection[Any], build: str, lead_ids: Sequence[str]) -> dict[str, LeadRecord]:
    cur = await conn.execute(f"{LeadRecordsSql(build).select} WHERE lead_id = ANY(%s)", (list(lead_ids),))
    rows = [_row_decoder.decode(r[0]) for r in await cur.fetchall()]
    return {r.lead_id: r for r in rows}


async def read_state(conn: AsyncConnection[Any], build: str) -> dict[str, LeadRecord]:
    """Every record of one build."""
    cur = await conn.execute(LeadRecordsSql(build).select)
    rows = [_row_decoder.decode(r[0]) for r in await cur.fetchall()]
    return {r.lead_id: r for r in rows}


async def merged_from(conn: AsyncConnection[Any], build: str, lead_id: str) -> list[str]:
    """The leads merged into ``lead_id``, in id order."""
    cur = await conn.execute(
        f"SELECT lead_id FROM {LeadRecordsSql(build).leads} WHERE merged_into = %s ORDER BY lead_id",  # noqa: S608
        (lead_id,),
    )
    return [str(r[0]) for r in await cur.fetchall()]


class LeadFilters(msgspec.Struct, frozen=True, kw_only=True):
    """What a lead list is narrowed by (None: not narrowed). ``status`` None lists every lead but merged ones."""

    owner: str | None = None
    status: str | None = None
    source: str | None = None
    captured_from: dt.datetime | None = None
    captured_to: dt.datetime | None = None
    score_min: float | None = None
    score_max: float | None = None
    q: str | None = None
    duplicate_of: str | None = None


def search_pattern(q: str) -> str:
    """The LIKE pattern of a search: the phone's digits for a phone-like query, else the lower-cased text."""
    text = q.strip()
    digits = re.sub(r"\D", "", text)
    if _PHONE_LIKE.fullmatch(text) and len(digits) >= 3:
        return like_pattern(digits)
    return like_pattern(text.lower())


def _where(f: LeadFilters) -> Where:
    where = Where()
    where.add_if(f.owner, "owner = %s")
    if f.status is None:
        where.add("status <> 'merged'")
    else:
        where.add("status = %s", f.status)
    where.add_if(f.source, "source = %s")
    where.add_if(f.duplicate_of, "duplicate_of = %s")
    time_range(where, "captured_at", f.captured_from, f.captured_to, "captured_from/captured_to")
    number_range(where, "score", f.score_min, f.score_max, "score_min/score_max")
    if f.q is not None:
        where.add("search LIKE %s", search_pattern(f.q))
    return where


async def list_records(
    conn: AsyncConnection[Any],
    build: str,
    filters: LeadFilters,
    sort: Sort,
    after: tuple[Any, str] | None,
    limit: int,
) -> Page:
    """One page of records matching ``filters`` in ``sort`` order, after the keyset ``after``;
    ``Page.rows`` are :class:`LeadRecord`."""
    where = _where(filters)
    order = keyset(where, sort, after, "lead_id")
    sql = LeadRecordsSql(build)
    cur = await conn.execute(
        f"SELECT row::text, {sort.field.column} FROM {sql.leads} WHERE {where.sql} {order} LIMIT %s",  # noqa: S608
        (*where.params, limit + 1),
    )
    fetched = [(_row_decoder.decode(text), value) for text, value in await cur.fetchall()]
    page = page_of(fetched, limit, sort, msgspec.structs.asdict(filters), lambda r: (r[1], r[0].lead_id))
    return Page([r for r, _ in page.rows], page.next_cursor)
