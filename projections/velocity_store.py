"""The velocity facts in PostgreSQL: the projection that writes them and the selects that read them back.

``apply_batch`` loads the facts of the touched deals, leads and pipelines, folds the batch in memory with
:func:`projections.velocity.apply` and writes only what changed, with one ``executemany`` per table. Every
write is idempotent on its own too: a deal or lead row only moves to a higher ``version``, a visit's
``left_at`` is only set once, and amount, owner and pipeline rows are keyed by the sequence of their event.

The queries (:mod:`projections.velocity_queries`) select the facts that can matter to a period (business time
<= ``as_of``), and the formulas in :mod:`projections.velocity_report` compute the figures from them, so SQL and
the reference cannot disagree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import msgspec
from psycopg import AsyncConnection, AsyncCursor

from events.envelope import AggregateType, StoredEvent
from projections.batch import BatchProjection
from projections.instants import utc, utc_or_none
from projections.velocity import (
    AmountFact,
    DealFacts,
    LeadFacts,
    OwnerFact,
    PipelineVersion,
    ReopenFact,
    StageDef,
    StageVisit,
    VelocityState,
    apply,
)
from projections.versions import build_name

VERSION = 1
"""The velocity logic version: bump it when a change to the fold alters rows, and the new build rebuilds."""
BUILD = build_name("velocity", VERSION)
"""The build readers use before any worker has registered one."""
# Statement templates over one build's tables: ``{t}`` stands for its table prefix ``<build>_``.
P = "{t}"

Params = Sequence[Any] | Mapping[str, Any]

VELOCITY_DDL: tuple[str, ...] = (
    f"""
    CREATE TABLE IF NOT EXISTS {P}deals (
        deal_id text PRIMARY KEY,
        pipeline_id text NOT NULL,
        owner text,
        lead_source text,
        opened_at timestamptz NOT NULL,
        expected_close_date date,
        outcome text CHECK (outcome IN ('won', 'lost')),
        closed_at timestamptz,
        won_amount numeric,
        won_currency text,
        lost_reason text,
        last_at timestamptz NOT NULL,
        version bigint NOT NULL
    )
    """,
    f"CREATE INDEX IF NOT EXISTS {P}deals_opened ON {P}deals (opened_at)",
    f"CREATE INDEX IF NOT EXISTS {P}deals_closed ON {P}deals (closed_at)",
    f"""
    CREATE TABLE IF NOT EXISTS {P}stage_visits (
        deal_id text NOT NULL,
        n integer NOT NULL,
        stage text NOT NULL,
        entered_at timestamptz NOT NULL,
        left_at timestamptz,
        PRIMARY KEY (deal_id, n)
    )
    """,
    f"""
    CREATE TABLE IF NOT EXISTS {P}deal_amounts (
        deal_id text NOT NULL,
        sequence bigint NOT NULL,
        at timestamptz NOT NULL,
        amount numeric NOT NULL,
        currency text NOT NULL,
        PRIMARY KEY (deal_id, sequence)
    )
    """,
    f"""
    CREATE TABLE IF NOT EXISTS {P}leads (
        lead_id text PRIMARY KEY,
        source text NOT NULL,
        captured_at timestamptz NOT NULL,
        qualified_at timestamptz,
        disqualified_at timestamptz,
        disqualified_reason text,
        last_at timestamptz NOT NULL,
        version bigint NOT NULL
    )
    """,
    f"CREATE INDEX IF NOT EXISTS {P}leads_captured ON {P}leads (captured_at)",
    f"CREATE INDEX IF NOT EXISTS {P}leads_qualified ON {P}leads (qualified_at)",
    # Added with the marketing campaign: no event before it named one, so the build's rows stay what a rebuild
    # of the log gives (NULL), and the build keeps its version.
    f"ALTER TABLE {P}leads ADD COLUMN IF NOT EXISTS campaign text",
    f"""
    CREATE TABLE IF NOT EXISTS {P}lead_owners (
        lead_id text NOT NULL,
        sequence bigint NOT NULL,
        at timestamptz NOT NULL,
        owner text NOT NULL,
        PRIMARY KEY (lead_id, sequence)
    )
    """,
    # Added with deal reopening: no event before it reopened a deal, so the build keeps its version.
    f"""
    CREATE TABLE IF NOT EXISTS {P}deal_reopens (
        deal_id text NOT NULL,
        sequence bigint NOT NULL,
        at timestamptz NOT NULL,
        lost_at timestamptz NOT NULL,
        lost_reason text NOT NULL,
        PRIMARY KEY (deal_id, sequence)
    )
    """,
    f"""
    CREATE TABLE IF NOT EXISTS {P}deal_owners (
        deal_id text NOT NULL,
        sequence bigint NOT NULL,
        at timestamptz NOT NULL,
        owner text NOT NULL,
        PRIMARY KEY (deal_id, sequence)
    )
    """,
    f"""
    CREATE TABLE IF NOT EXISTS {P}pipelines (
        pipeline_id text NOT NULL,
        sequence bigint NOT NULL,
        defined_at timestamptz NOT NULL,
        stages jsonb NOT NULL,
        PRIMARY KEY (pipeline_id, sequence)
    )
    """,
)

_DEAL_COLUMNS = (
    "deal_id, pipeline_id, owner, lead_source, opened_at, expected_close_date, outcome, closed_at, won_amount, "
    "won_currency, lost_reason, last_at, version"
)
_LEAD_COLUMNS = (
    "lead_id, source, captured_at, qualified_at, disqualified_at, disqualified_reason, last_at, version, campaign"
)

_UPSERT_DEAL = f"""
INSERT INTO {P}deals ({_DEAL_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (deal_id) DO UPDATE SET
    outcome = EXCLUDED.outcome, closed_at = EXCLUDED.closed_at, won_amount = EXCLUDED.won_amount,
    won_currency = EXCLUDED.won_currency, lost_reason = EXCLUDED.lost_reason, last_at = EXCLUDED.last_at,
    version = EXCLUDED.version
WHERE {P}deals.version < EXCLUDED.version
"""  # noqa: S608 - the prefix is a constant
_UPSERT_VISIT = f"""
INSERT INTO {P}stage_visits (deal_id, n, stage, entered_at, left_at) VALUES (%s, %s, %s, %s, %s)
ON CONFLICT (deal_id, n) DO UPDATE SET left_at = EXCLUDED.left_at
WHERE {P}stage_visits.left_at IS NULL
"""  # noqa: S608
_INSERT_AMOUNT = f"""
INSERT INTO {P}deal_amounts (deal_id, sequence, at, amount, currency) VALUES (%s, %s, %s, %s, %s)
ON CONFLICT DO NOTHING
"""  # noqa: S608
_INSERT_REOPEN = f"""
INSERT INTO {P}deal_reopens (deal_id, sequence, at, lost_at, lost_reason) VALUES (%s, %s, %s, %s, %s)
ON CONFLICT DO NOTHING
"""  # noqa: S608
_INSERT_DEAL_OWNER = f"""
INSERT INTO {P}deal_owners (deal_id, sequence, at, owner) VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING
"""  # noqa: S608
_UPSERT_LEAD = f"""
INSERT INTO {P}leads ({_LEAD_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (lead_id) DO UPDATE SET
    qualified_at = EXCLUDED.qualified_at, disqualified_at = EXCLUDED.disqualified_at,
    disqualified_reason = EXCLUDED.disqualified_reason, last_at = EXCLUDED.last_at, version = EXCLUDED.version
WHERE {P}leads.version < EXCLUDED.version
"""  # noqa: S608
_INSERT_OWNER = f"""
INSERT INTO {P}lead_owners (lead_id, sequence, at, owner) VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING
"""  # noqa: S608
_INSERT_PIPELINE = f"""
INSERT INTO {P}pipelines (pipeline_id, sequence, defined_at, stages) VALUES (%s, %s, %s, %s::jsonb)
ON CONFLICT DO NOTHING
"""  # noqa: S608


class VelocitySql:
    """The velocity statements over one build's tables, ``<build>_deals`` and the rest."""

    def __init__(self, build: str) -> None:
        t = self.tables = f"{build}_"
        self.ddl = tuple(statement.format(t=t) for statement in VELOCITY_DDL)
        self.upsert_deal = _UPSERT_DEAL.format(t=t)
        self.upsert_visit = _UPSERT_VISIT.format(t=t)
        self.insert_amount = _INSERT_AMOUNT.format(t=t)
        self.insert_reopen = _INSERT_REOPEN.format(t=t)
        self.insert_deal_owner = _INSERT_DEAL_OWNER.format(t=t)
        self.upsert_lead = _UPSERT_LEAD.format(t=t)
        self.insert_owner = _INSERT_OWNER.format(t=t)
        self.insert_pipeline = _INSERT_PIPELINE.format(t=t)


_stages_decoder = msgspec.json.Decoder(tuple[StageDef, ...])


# --- rows <-> facts ------------------------------------------------------------------------------------------


def _deal_params(d: DealFacts) -> tuple[Any, ...]:
    return (
        d.deal_id,
        d.pipeline_id,
        d.owner,
        d.lead_source,
        d.opened_at,
        d.expected_close_date,
        d.outcome,
        d.closed_at,
        d.won_amount,
        d.won_currency,
        d.lost_reason,
        d.last_at,
        d.version,
    )


def _lead_params(x: LeadFacts) -> tuple[Any, ...]:
    return (
        x.lead_id,
        x.source,
        x.captured_at,
        x.qualified_at,
        x.disqualified_at,
        x.disqualified_reason,
        x.last_at,
        x.version,
        x.campaign,
    )


class _Query:
    """The rows of the parents (deals or leads) matching ``where`` and of their children, over tables ``t``."""

    def __init__(self, cur: AsyncCursor[Any], t: str, where: str, params: Params, ids: list[str] | None) -> None:
        self.cur, self.t, self.where, self.params, self.ids = cur, t, where, params, ids

    async def parents(self, table: str, columns: str) -> list[tuple[Any, ...]]:
        """``columns`` of the matching rows of ``table`` (``"deals d"``: the table and its alias in ``where``)."""
        alias = table.split()[1]
        listed = ", ".join(f"{alias}.{c.strip()}" for c in columns.split(","))
        await self.cur.execute(f"SELECT {listed} FROM {self.t}{table} WHERE {self.where}", self.params)  # noqa: S608
        return await self.cur.fetchall()

    async def children(self, table: str, key: str, columns: str, order: str = "sequence") -> list[tuple[Any, ...]]:
        """``key`` and ``columns`` of the child rows, by parent then ``order``. By ``ids`` when the caller has
        them, which lets PostgreSQL probe the child's primary key instead of joining the whole table."""
        listed = ", ".join(f"c.{c.strip()}" for c in (key, *columns.split(",")))
        args: Params
        if self.ids is not None:
            source, args = f"{self.t}{table} c WHERE c.{key} IN (SELECT unnest(%s::text[]))", (self.ids,)
        else:
            parent = "deals d" if key == "deal_id" else "leads l"
            source, args = f"{self.t}{table} c JOIN {self.t}{parent} USING ({key}) WHERE {self.where}", self.params
        await self.cur.execute(f"SELECT {listed} FROM {source} ORDER BY c.{key}, c.{order}", args)  # noqa: S608
        return await self.cur.fetchall()


async def select_deals(
    conn: AsyncConnection[Any], t: str, where: str, params: Params, ids: list[str] | None = None
) -> dict[str, DealFacts]:
    """Deals matching ``where`` (over ``d``, a deal row; or exactly ``ids``) with their visits and amounts."""
    visits: dict[str, list[StageVisit]] = {}
    amounts: dict[str, list[AmountFact]] = {}
    reopens: dict[str, list[ReopenFact]] = {}
    moves: dict[str, list[OwnerFact]] = {}
    async with conn.cursor() as cur:
        q = _Query(cur, t, where, params, ids)
        for deal_id, stage, entered_at, left_at in await q.children(
            "stage_visits", "deal_id", "stage, entered_at, left_at", "n"
        ):
            visits.setdefault(deal_id, []).append(
                StageVisit(stage=stage, entered_at=utc(entered_at), left_at=utc_or_none(left_at))
            )
        for deal_id, seq, at, amount, currency in await q.children(
            "deal_amounts", "deal_id", "sequence, at, amount, currency"
        ):
            amounts.setdefault(deal_id, []).append(
                AmountFact(sequence=seq, at=utc(at), amount=amount, currency=currency)
            )
        for deal_id, seq, at, lost_at, reason in await q.children(
            "deal_reopens", "deal_id", "sequence, at, lost_at, lost_reason"
        ):
            reopens.setdefault(deal_id, []).append(
                ReopenFact(sequence=seq, at=utc(at), lost_at=utc(lost_at), lost_reason=reason)
            )
        for deal_id, seq, at, owner in await q.children("deal_owners", "deal_id", "sequence, at, owner"):
            moves.setdefault(deal_id, []).append(OwnerFact(sequence=seq, at=utc(at), owner=owner))
        out: dict[str, DealFacts] = {}
        for r in await q.parents("deals d", _DEAL_COLUMNS):
            out[r[0]] = DealFacts(
                deal_id=r[0],
                pipeline_id=r[1],
                owner=r[2],
                lead_source=r[3],
                opened_at=utc(r[4]),
                expected_close_date=r[5],
                outcome=r[6],
                closed_at=utc_or_none(r[7]),
                won_amount=r[8],
                won_currency=r[9],
                lost_reason=r[10],
                visits=tuple(visits.get(r[0], ())),
                amounts=tuple(amounts.get(r[0], ())),
                reopens=tuple(reopens.get(r[0], ())),
                reassignments=tuple(moves.get(r[0], ())),
                last_at=utc(r[11]),
                version=r[12],
            )
    return out


async def select_leads(
    conn: AsyncConnection[Any], t: str, where: str, params: Params, ids: list[str] | None = None
) -> dict[str, LeadFacts]:
    """Leads matching ``where`` (over ``l``, a lead row; or exactly ``ids``) with their owner assignments."""
    owners: dict[str, list[OwnerFact]] = {}
    async with conn.cursor() as cur:
        q = _Query(cur, t, where, params, ids)
        for lead_id, seq, at, owner in await q.children("lead_owners", "lead_id", "sequence, at, owner"):
            owners.setdefault(lead_id, []).append(OwnerFact(sequence=seq, at=utc(at), owner=owner))
        out: dict[str, LeadFacts] = {}
        for r in await q.parents("leads l", _LEAD_COLUMNS):
            out[r[0]] = LeadFacts(
                lead_id=r[0],
                source=r[1],
                captured_at=utc(r[2]),
                qualified_at=utc_or_none(r[3]),
                disqualified_at=utc_or_none(r[4]),
                disqualified_reason=r[5],
                owners=tuple(owners.get(r[0], ())),
                last_at=utc(r[6]),
                version=r[7],
                campaign=r[8],
            )
    return out


async def select_pipelines(
    conn: AsyncConnection[Any], t: str, where: str, params: Params
) -> dict[str, tuple[PipelineVersion, ...]]:
    out: dict[str, list[PipelineVersion]] = {}
    async with conn.cursor() as cur:
        await cur.execute(
            f"SELECT pipeline_id, sequence, defined_at, stages::text FROM {t}pipelines p "  # noqa: S608
            f"WHERE {where} ORDER BY pipeline_id, sequence",
            params,
        )
        for pipeline_id, seq, defined_at, stages in await cur.fetchall():
            out.setdefault(pipeline_id, []).append(
                PipelineVersion(
                    pipeline_id=pipeline_id,
                    sequence=seq,
                    defined_at=utc(defined_at),
                    stages=_stages_decoder.decode(stages),
                )
            )
    return {k: tuple(v) for k, v in out.items()}


async def load_state(
    conn: AsyncConnection[Any],
    sql: VelocitySql,
    deal_ids: Iterable[str],
    lead_ids: Iterable[str],
    pipeline_ids: Iterable[str],
) -> VelocityState:
    """The stored facts of these deals, leads and pipelines."""
    t = sql.tables
    deals, leads, pipelines = list(deal_ids), list(lead_ids), list(pipeline_ids)
    by_deal, by_lead = "d.deal_id IN (SELECT unnest(%s::text[]))", "l.lead_id IN (SELECT unnest(%s::text[]))"
    return VelocityState(
        deals=await select_deals(conn, t, by_deal, (deals,), deals) if deals else {},
        leads=await select_leads(conn, t, by_lead, (leads,), leads) if leads else {},
        pipelines=await select_pipelines(conn, t, "p.pipeline_id = ANY(%s)", (pipelines,)) if pipelines else {},
    )


async def read_state(conn: AsyncConnection[Any], build: str = BUILD) -> VelocityState:
    """Every stored fact of one build: for tests and rebuild comparisons."""
    t = VelocitySql(build).tables
    return VelocityState(
        deals=await select_deals(conn, t, "true", ()),
        leads=await select_leads(conn, t, "true", ()),
        pipelines=await select_pipelines(conn, t, "true", ()),
    )


# --- the projection --------------------------------------------------------------------------------------------


class VelocityProjection(BatchProjection[VelocityState]):
    """Velocity facts: per deal (opening, stage visits, amounts, close), per lead, per pipeline definition."""

    name = "velocity"
    version = VERSION
    # No fact of one aggregate is needed to fold another (pipelines are joined at query time), so every type
    # is split by partition and each row has exactly one writer.
    partitioned: tuple[AggregateType, ...] = ("deal", "lead", "pipeline")
    broadcast: tuple[AggregateType, ...] = ()

    def __init__(self, instance: str = "") -> None:
        self.build = build_name(self.name, self.version, instance)
        self.sql = VelocitySql(self.build)

    def ddl(self) -> Sequence[str]:
        return self.sql.ddl

    async def load_touched(self, conn: AsyncConnection[Any], events: Sequence[StoredEvent]) -> VelocityState:
        ids: dict[str, set[str]] = {"deal": set(), "lead": set(), "pipeline": set()}
        for e in events:
            ids[e.envelope.aggregate_type].add(e.envelope.aggregate_id)
        return await load_state(conn, self.sql, ids["deal"], ids["lead"], ids["pipeline"])

    def fold(self, state: VelocityState, event: StoredEvent) -> None:
        apply(state, event)

    async def write_changes(
        self, cur: AsyncCursor[Any], before: VelocityState, after: VelocityState, events: Sequence[StoredEvent]
    ) -> None:
        deals: list[tuple[Any, ...]] = []
        visits: list[tuple[Any, ...]] = []
        amounts: list[tuple[Any, ...]] = []
        reopens: list[tuple[Any, ...]] = []
        moved: list[tuple[Any, ...]] = []
        # Sorted: a fixed lock order, so two writers can never deadlock.
        for deal_id in sorted(after.deals):
            deal, old = after.deals[deal_id], before.deals.get(deal_id)
            if deal is old:
                continue
            deals.append(_deal_params(deal))
            old_visits = old.visits if old else ()
            visits += [
                (deal_id, n, v.stage, v.entered_at, v.left_at)
                for n, v in enumerate(deal.visits)
                if n >= len(old_visits) or old_visits[n] != v
            ]
            amounts += [
                (deal_id, a.sequence, a.at, a.amount, a.currency)
                for a in deal.amounts[len(old.amounts) if old else 0 :]
            ]
            reopens += [
                (deal_id, r.sequence, r.at, r.lost_at, r.lost_reason)
                for r in deal.reopens[len(old.reopens) if old else 0 :]
            ]
            moved += [
                (deal_id, o.sequence, o.at, o.owner) for o in deal.reassignments[len(old.reassignments) if old else 0 :]
            ]
        leads: list[tuple[Any, ...]] = []
        owners: list[tuple[Any, ...]] = []
        for lead_id in sorted(after.leads):
            lead, old_lead = after.leads[lead_id], before.leads.get(lead_id)
            if lead is old_lead:
                continue
            leads.append(_lead_params(lead))
            new_owners = lead.owners[len(old_lead.owners) if old_lead else 0 :]
            owners += [(lead_id, o.sequence, o.at, o.owner) for o in new_owners]
        pipelines = [
            (v.pipeline_id, v.sequence, v.defined_at, msgspec.json.encode(v.stages).decode())
            for pipeline_id in sorted(after.pipelines)
            for v in after.pipelines[pipeline_id][len(before.pipelines.get(pipeline_id, ())) :]
        ]
        sql = self.sql
        writes = (
            (sql.upsert_deal, deals),
            (sql.upsert_visit, visits),
            (sql.insert_amount, amounts),
            (sql.insert_reopen, reopens),
            (sql.insert_deal_owner, moved),
            (sql.upsert_lead, leads),
            (sql.insert_owner, owners),
            (sql.insert_pipeline, pipelines),
        )
        for statement, rows in writes:
            if rows:
                await cur.executemany(statement, rows)
