"""Routing decisions in PostgreSQL: one row per lead (who the rules chose, whether the log has an owner yet)
and the round-robin turns of each team. Run it as one shard: the turns are shared by every lead."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import AsyncConnection, AsyncCursor

from events.envelope import AggregateType, StoredEvent
from events.types import Event, LeadCaptured, LeadDetailsFetched
from projections.batch import BatchProjection, changed
from projections.routes import FitScore, LeadRoute, RoutingTable, apply
from projections.routing import RoutingRules
from projections.versions import BuildVersion, build_name

VERSION = 1
"""The routing fold's logic version; a build is this and the rules version (:class:`BuildVersion`)."""

_FIELDS = ("lead_id", "decided_owner", "rule", "team", "fit_score", "owner", "state", "version")
_COLUMNS = ", ".join(_FIELDS)


class RoutingSql:
    def __init__(self, build: str) -> None:
        t = f"{build}_"
        self.leads, self.turns = f"{t}leads", f"{t}turns"
        self.ddl = (
            f"CREATE TABLE IF NOT EXISTS {self.leads} (lead_id text PRIMARY KEY, decided_owner text, rule text, "
            "team text, fit_score double precision NOT NULL, owner text, state text NOT NULL, version bigint NOT NULL)",
            f"CREATE INDEX IF NOT EXISTS {self.leads}_pending ON {self.leads} (version) WHERE state = 'pending'",
            f"CREATE TABLE IF NOT EXISTS {self.turns} (team text PRIMARY KEY, n bigint NOT NULL)",
        )
        self.upsert_lead = (
            f"INSERT INTO {self.leads} ({_COLUMNS}) VALUES ({', '.join(['%s'] * len(_FIELDS))}) "  # noqa: S608
            "ON CONFLICT (lead_id) DO UPDATE SET "
            + ", ".join(f"{c} = EXCLUDED.{c}" for c in _FIELDS[1:])
            + f" WHERE {self.leads}.version < EXCLUDED.version"
        )
        self.upsert_turns = (
            f"INSERT INTO {self.turns} (team, n) VALUES (%s, %s) ON CONFLICT (team) DO UPDATE SET n = EXCLUDED.n"  # noqa: S608
        )


def _lead(r: Sequence[Any]) -> LeadRoute:
    return LeadRoute(**dict(zip(_FIELDS, r, strict=True)))


class RoutingProjection(BatchProjection[RoutingTable]):
    """Decides an owner for every captured lead; the routing worker appends the decisions still pending."""

    name = "routing"
    partitioned: tuple[AggregateType, ...] = ()
    broadcast: tuple[AggregateType, ...] = ("lead",)
    # The fit score at capture reads what the lead told us, sealed in the log: the engine opens captures.
    reads_personal: tuple[type[Event], ...] = (LeadCaptured, LeadDetailsFetched)

    def __init__(
        self, rules: RoutingRules, fit_score: FitScore | None = None, rules_version: int = 1, instance: str = ""
    ) -> None:
        self.rules = rules
        self.fit_score: FitScore = fit_score or (lambda _lead, _source: 0.0)
        self.version = BuildVersion(VERSION, rules_version).number
        self.build = build_name(self.name, self.version, instance)
        self.sql = RoutingSql(self.build)

    def ddl(self) -> Sequence[str]:
        return self.sql.ddl

    async def load_touched(self, conn: AsyncConnection[Any], events: Sequence[StoredEvent]) -> RoutingTable:
        return await load_state(conn, self.sql, sorted({e.envelope.aggregate_id for e in events}))

    def fold(self, state: RoutingTable, event: StoredEvent) -> None:
        apply(state, event, self.rules, self.fit_score)

    async def write_changes(
        self, cur: AsyncCursor[Any], before: RoutingTable, after: RoutingTable, events: Sequence[StoredEvent]
    ) -> None:
        leads = changed(after.leads, before.leads)
        if leads:
            await cur.executemany(self.sql.upsert_lead, [tuple(getattr(r, f) for f in _FIELDS) for r in leads])
        moved = sorted((team, n) for team, n in after.turns.items() if before.turns.get(team) != n)
        if moved:
            await cur.executemany(self.sql.upsert_turns, moved)


async def pending_routes(conn: AsyncConnection[Any], build: str, limit: int = 200) -> list[LeadRoute]:
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM {RoutingSql(build).leads} WHERE state = 'pending' ORDER BY version LIMIT %s",  # noqa: S608
        (limit,),
    )
    return [_lead(r) for r in await cur.fetchall()]


async def awaiting_details(conn: AsyncConnection[Any], build: str, limit: int = 200) -> list[str]:
    """Leads whose source announced them with ids only (Meta Lead Ads), oldest first: the Meta fetcher's work."""
    cur = await conn.execute(
        f"SELECT lead_id FROM {RoutingSql(build).leads} WHERE state = 'awaiting_details' ORDER BY version LIMIT %s",  # noqa: S608
        (limit,),
    )
    return [r[0] for r in await cur.fetchall()]


async def load_state(conn: AsyncConnection[Any], sql: RoutingSql, lead_ids: Sequence[str]) -> RoutingTable:
    """The stored routes of these leads, and every team's round-robin turns."""
    async with conn.cursor() as cur:
        await cur.execute(f"SELECT {_COLUMNS} FROM {sql.leads} WHERE lead_id = ANY(%s)", (list(lead_ids),))  # noqa: S608
        leads = {r[0]: _lead(r) for r in await cur.fetchall()}
        await cur.execute(f"SELECT team, n FROM {sql.turns}")  # noqa: S608
        turns: dict[str, int] = {team: n for team, n in await cur.fetchall()}
    return RoutingTable(leads, turns)


async def read_state(conn: AsyncConnection[Any], build: str) -> dict[str, LeadRoute]:
    """Every stored route of one build."""
    cur = await conn.execute(f"SELECT {_COLUMNS} FROM {RoutingSql(build).leads}")  # noqa: S608
    return {r[0]: _lead(r) for r in await cur.fetchall()}
