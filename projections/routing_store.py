"""Routing decisions in PostgreSQL: one row per lead (who the rules chose, whether the log has an owner yet)
and the round-robin turns of each team. Run it as one shard: the turns are shared by every lead."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import msgspec
from psycopg import AsyncConnection

from events.envelope import AggregateType, StoredEvent
from events.types import Event, LeadAssigned, LeadCaptured
from projections.routing import RoutingRules, route
from projections.versions import build_name

VERSION = 1
"""The routing fold's version; the build's version is ``100 * VERSION + rules version``."""

RoutingState = Literal["pending", "assigned", "manual", "unrouted"]

FitScore = Callable[[LeadCaptured, str], float]
"""A lead's fit score at capture (from the scoring rules), for rules with ``min_score``."""


class LeadRoute(msgspec.Struct, frozen=True, kw_only=True):
    """``pending``: the rules chose ``decided_owner`` and the log has no owner yet (the worker appends the
    assignment); ``assigned``: the rules' choice is in the log; ``manual``: someone assigned it first;
    ``unrouted``: no rule and no fallback."""

    lead_id: str
    decided_owner: str | None
    rule: str | None
    team: str | None
    fit_score: float
    owner: str | None
    state: RoutingState
    version: int


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


class RoutingProjection:
    """Decides an owner for every captured lead; the routing worker appends the decisions still pending."""

    name = "routing"
    partitioned: tuple[AggregateType, ...] = ()
    broadcast: tuple[AggregateType, ...] = ("lead",)
    # The fit score at capture reads what the lead told us, sealed in the log: the engine opens captures.
    reads_personal: tuple[type[Event], ...] = (LeadCaptured,)

    def __init__(
        self, rules: RoutingRules, fit_score: FitScore | None = None, rules_version: int = 1, instance: str = ""
    ) -> None:
        self.rules = rules
        self.fit_score: FitScore = fit_score or (lambda _lead, _source: 0.0)
        self.version = 100 * VERSION + rules_version
        self.build = build_name(self.name, self.version, instance)
        self.sql = RoutingSql(self.build)

    def ddl(self) -> Sequence[str]:
        return self.sql.ddl

    async def apply_batch(self, conn: AsyncConnection[Any], events: Sequence[StoredEvent]) -> None:
        leads, turns = await load_state(conn, self.sql, sorted({e.envelope.aggregate_id for e in events}))
        before_turns = dict(turns)
        changed: dict[str, LeadRoute] = {}
        for event in events:
            env, seq = event.envelope, event.sequence
            row = leads.get(env.aggregate_id)
            if row is not None and seq <= row.version:
                continue
            data = env.data
            if isinstance(data, LeadCaptured) and row is None:
                fit = self.fit_score(data, env.source)
                decision = route(self.rules, env.source, data.country, fit, turns)
                if decision.team is not None:
                    turns[decision.team] = turns.get(decision.team, 0) + 1
                row = LeadRoute(
                    lead_id=env.aggregate_id,
                    decided_owner=decision.owner,
                    rule=decision.rule,
                    team=decision.team,
                    fit_score=fit,
                    owner=None,
                    state="pending" if decision.owner else "unrouted",
                    version=seq,
                )
            elif isinstance(data, LeadAssigned) and row is not None:
                by_rules = data.reason == "rule" and row.state == "pending"
                state: RoutingState = "assigned" if by_rules else "manual" if row.state == "pending" else row.state
                row = msgspec.structs.replace(row, owner=data.owner, state=state, version=seq)
            else:
                continue
            leads[row.lead_id] = changed[row.lead_id] = row
        async with conn.cursor() as cur:
            if changed:
                await cur.executemany(
                    self.sql.upsert_lead, [tuple(getattr(r, f) for f in _FIELDS) for _, r in sorted(changed.items())]
                )
            moved = sorted((team, n) for team, n in turns.items() if before_turns.get(team) != n)
            if moved:
                await cur.executemany(self.sql.upsert_turns, moved)


async def pending_routes(conn: AsyncConnection[Any], build: str, limit: int = 200) -> list[LeadRoute]:
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM {RoutingSql(build).leads} WHERE state = 'pending' ORDER BY version LIMIT %s",  # noqa: S608
        (limit,),
    )
    return [_lead(r) for r in await cur.fetchall()]


async def load_state(
    conn: AsyncConnection[Any], sql: RoutingSql, lead_ids: Sequence[str]
) -> tuple[dict[str, LeadRoute], dict[str, int]]:
    """The stored routes of these leads, and every team's round-robin turns."""
    async with conn.cursor() as cur:
        await cur.execute(f"SELECT {_COLUMNS} FROM {sql.leads} WHERE lead_id = ANY(%s)", (list(lead_ids),))  # noqa: S608
        leads = {r[0]: _lead(r) for r in await cur.fetchall()}
        await cur.execute(f"SELECT team, n FROM {sql.turns}")  # noqa: S608
        turns: dict[str, int] = {team: n for team, n in await cur.fetchall()}
    return leads, turns


async def read_state(conn: AsyncConnection[Any], build: str) -> dict[str, LeadRoute]:
    """Every stored route of one build."""
    cur = await conn.execute(f"SELECT {_COLUMNS} FROM {RoutingSql(build).leads}")  # noqa: S608
    return {r[0]: _lead(r) for r in await cur.fetchall()}
