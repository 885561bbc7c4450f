"""Lead scores in PostgreSQL: the projection, its rules (kept with the build, so readers score with the very
rules that built it), and the queries behind ``GET /v1/leads/{id}/score`` and ``GET /v1/leads?order=score``."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import msgspec
from psycopg import AsyncConnection, AsyncCursor

from events.envelope import AggregateType, StoredEvent
from events.types import Event, LeadCaptured, LeadCorrected, LeadDetailsFetched, TouchpointLogged
from projections.batch import BatchProjection, changed
from projections.scores import LeadScore, apply
from projections.scoring import NO_RULES, ScoringRules, score
from projections.versions import BuildVersion, build_name

VERSION = 1
"""The scores fold's logic version; a build is this and the rules version (:class:`BuildVersion`: ``scores_v101``)."""

_encode = msgspec.json.encode
_row_decoder = msgspec.json.Decoder(LeadScore)
_rules_decoder = msgspec.json.Decoder(ScoringRules)


class ScoresSql:
    def __init__(self, build: str) -> None:
        self.leads, self.rules = f"{build}_leads", f"{build}_rules"
        self.ddl = (
            f"CREATE TABLE IF NOT EXISTS {self.leads} (lead_id text PRIMARY KEY, owner text, status text NOT NULL, "
            "score double precision NOT NULL, crossed_sequence bigint, row jsonb NOT NULL, version bigint NOT NULL)",
            f"CREATE INDEX IF NOT EXISTS {self.leads}_pending ON {self.leads} (crossed_sequence) "
            "WHERE status = 'open' AND crossed_sequence IS NOT NULL",
            f"CREATE INDEX IF NOT EXISTS {self.leads}_owner ON {self.leads} (owner, status)",
            f"CREATE TABLE IF NOT EXISTS {self.rules} (id boolean PRIMARY KEY DEFAULT true, rules jsonb NOT NULL)",
        )
        self.upsert = (
            f"INSERT INTO {self.leads} (lead_id, owner, status, score, crossed_sequence, row, version) "  # noqa: S608
            "VALUES (%s, %s, %s, %s, %s, %s::jsonb, %s) ON CONFLICT (lead_id) DO UPDATE SET owner = EXCLUDED.owner, "
            "status = EXCLUDED.status, score = EXCLUDED.score, crossed_sequence = EXCLUDED.crossed_sequence, "
            f"row = EXCLUDED.row, version = EXCLUDED.version WHERE {self.leads}.version < EXCLUDED.version"
        )
        self.select = f"SELECT row::text FROM {self.leads}"  # noqa: S608


class ScoresProjection(BatchProjection[dict[str, LeadScore]]):
    """Scores every lead under one version of the scoring rules. A new rules version builds beside the
    serving one and does not take over by itself: compare the two (``dealstream scores diff``), then switch
    (``dealstream projections switch scores BUILD``)."""

    name = "scores"
    partitioned: tuple[AggregateType, ...] = ("lead",)
    broadcast: tuple[AggregateType, ...] = ()
    auto_switch = False
    # Fit rules read what the lead told us, engagement rules a touch's outcome, both sealed in the log: the
    # engine opens them (and the fold scrubs them on the lead's erasure).
    reads_personal: tuple[type[Event], ...] = (LeadCaptured, LeadDetailsFetched, TouchpointLogged, LeadCorrected)

    def __init__(self, rules: ScoringRules, instance: str = "") -> None:
        self.rules = rules
        self.version = BuildVersion(VERSION, rules.version).number
        self.build = build_name(self.name, self.version, instance)
        self.sql = ScoresSql(self.build)

    def ddl(self) -> Sequence[str]:
        rules = _encode(self.rules).decode().replace("'", "''")
        return (
            *self.sql.ddl,
            # The build's rules, stored with its rows (DDL runs without parameters: the JSON is quoted here).
            f"INSERT INTO {self.sql.rules} (rules) VALUES ('{rules}') "  # noqa: S608
            "ON CONFLICT (id) DO UPDATE SET rules = EXCLUDED.rules",
        )

    async def load_touched(self, conn: AsyncConnection[Any], events: Sequence[StoredEvent]) -> dict[str, LeadScore]:
        return await load_state(conn, self.sql, sorted({e.envelope.aggregate_id for e in events}))

    def fold(self, state: dict[str, LeadScore], event: StoredEvent) -> None:
        apply(state, event, self.rules)

    async def write_changes(
        self,
        cur: AsyncCursor[Any],
        before: dict[str, LeadScore],
        after: dict[str, LeadScore],
        events: Sequence[StoredEvent],
    ) -> None:
        rows = changed(after, before)
        if rows:
            await cur.executemany(
                self.sql.upsert,
                [
                    (r.lead_id, r.owner, r.status, r.score, r.crossed_sequence, _encode(r).decode(), r.version)
                    for r in rows
                ],
            )


async def load_state(conn: AsyncConnection[Any], sql: ScoresSql, lead_ids: Sequence[str]) -> dict[str, LeadScore]:
    """The stored scores of these leads."""
    cur = await conn.execute(f"{sql.select} WHERE lead_id = ANY(%s)", (list(lead_ids),))
    rows = [_row_decoder.decode(r[0]) for r in await cur.fetchall()]
    return {r.lead_id: r for r in rows}


async def read_state(conn: AsyncConnection[Any], build: str) -> dict[str, LeadScore]:
    """Every stored score of one build."""
    cur = await conn.execute(ScoresSql(build).select)
    rows = [_row_decoder.decode(r[0]) for r in await cur.fetchall()]
    return {r.lead_id: r for r in rows}


async def rules_of(conn: AsyncConnection[Any], build: str) -> ScoringRules:
    cur = await conn.execute(f"SELECT rules::text FROM {ScoresSql(build).rules}")  # noqa: S608
    row = await cur.fetchone()
    return _rules_decoder.decode(row[0]) if row else NO_RULES


async def pending_qualifications(conn: AsyncConnection[Any], build: str, limit: int = 200) -> list[LeadScore]:
    cur = await conn.execute(
        f"{ScoresSql(build).select} WHERE status = 'open' AND crossed_sequence IS NOT NULL "
        "ORDER BY crossed_sequence LIMIT %s",
        (limit,),
    )
    return [_row_decoder.decode(r[0]) for r in await cur.fetchall()]


class RankedLead(msgspec.Struct, frozen=True, kw_only=True):
    lead_id: str
    owner: str | None
    status: str
    score: float
    fit: float
    engagement: float
    qualified: bool


async def ranked(
    conn: AsyncConnection[Any],
    build: str,
    as_of: dt.datetime,
    owner: str | None = None,
    status: str | None = "open",
    offset: int = 0,
    limit: int = 50,
    cap: int = 10_000,
) -> tuple[list[RankedLead], bool]:
    """Leads by their score at ``as_of``, highest first (ties by id); engagement fades, so the order is
    computed at read time over at most ``cap`` matching leads. Returns the page and whether more follow."""
    rules = await rules_of(conn, build)
    where, params = ["true"], []
    if owner is not None:
        where.append("owner = %s")
        params.append(owner)
    if status is not None:
        where.append("status = %s")
        params.append(status)
    cur = await conn.execute(
        f"{ScoresSql(build).select} WHERE {' AND '.join(where)} ORDER BY score DESC LIMIT %s", (*params, cap)
    )
    out = []
    for (text,) in await cur.fetchall():
        row = _row_decoder.decode(text)
        s = score(rules, row.profile, row.touches, as_of)
        out.append(
            RankedLead(
                lead_id=row.lead_id,
                owner=row.owner,
                status=row.status,
                score=s.total,
                fit=s.fit,
                engagement=s.engagement,
                qualified=row.status == "qualified",
            )
        )
    out.sort(key=lambda r: (-r.score, r.lead_id))
    return out[offset : offset + limit], len(out) > offset + limit
