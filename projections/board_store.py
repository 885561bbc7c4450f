"""The board's tables and its projection: load the touched rows, fold the batch in memory, upsert the changes."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec
from psycopg import AsyncConnection, AsyncCursor
from psycopg.types.json import Jsonb

from events.envelope import AggregateType, StoredEvent
from events.types import DealOpened, DealUpdated, Event, LeadErased
from projections.batch import BatchProjection, changed
from projections.board import ERASED_NAME, BoardState, DealRow, PipelineRow, Stage, apply
from projections.instants import utc, utc_or_none
from projections.staging import StagedUpsert, typed
from projections.versions import build_name

VERSION = 2
"""The board's logic version: bump it when a change to the fold alters rows, and the new build rebuilds."""
BUILD = build_name("board", VERSION)
"""The build readers use before any worker has registered one."""

_DDL: tuple[str, ...] = (
    """
    CREATE TABLE IF NOT EXISTS {t}pipelines (
        pipeline_id text PRIMARY KEY,
        name text NOT NULL,
        stages jsonb NOT NULL,
        version bigint NOT NULL,
        defined_at timestamptz
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS {t}deals (
        deal_id text PRIMARY KEY,
        pipeline_id text NOT NULL,
        stage text NOT NULL,
        name text NOT NULL,
        amount numeric NOT NULL,
        currency text NOT NULL,
        owner text,
        status text NOT NULL CHECK (status IN ('open', 'won', 'lost')),
        stage_entered_at timestamptz NOT NULL,
        last_activity_at timestamptz NOT NULL,
        next_task_due_at timestamptz,
        opened_at timestamptz NOT NULL,
        closed_at timestamptz,
        lost_reason text,
        open_tasks jsonb NOT NULL,
        version bigint NOT NULL,
        expected_close_date date,
        next_step text
    )
    """,
    # One column's page is a range scan of this index in keyset order; the INCLUDE lets the per-column
    # count and sums be answered from the index alone.
    """
    CREATE INDEX IF NOT EXISTS {t}deals_column
        ON {t}deals (status, pipeline_id, stage, stage_entered_at, deal_id) INCLUDE (currency, amount)
    """,
    """
    CREATE INDEX IF NOT EXISTS {t}deals_owner_column
        ON {t}deals (status, owner, pipeline_id, stage, stage_entered_at, deal_id) INCLUDE (currency, amount)
    """,
    # Which lead each deal was opened from: its name is about that person, and goes when the lead is erased.
    """
    CREATE TABLE IF NOT EXISTS {t}deal_leads (
        deal_id text PRIMARY KEY,
        lead_id text NOT NULL,
        opened_sequence bigint NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS {t}deal_leads_lead ON {t}deal_leads (lead_id)",
    # The deal list's sorts (GET /v1/deals): each a keyset walk of one of these.
    "CREATE INDEX IF NOT EXISTS {t}deals_opened ON {t}deals (opened_at, deal_id)",
    "CREATE INDEX IF NOT EXISTS {t}deals_activity ON {t}deals (last_activity_at, deal_id)",
    "CREATE INDEX IF NOT EXISTS {t}deals_entered ON {t}deals (stage_entered_at, deal_id)",
    "CREATE INDEX IF NOT EXISTS {t}deals_name ON {t}deals (name, deal_id)",
    # The deal list's name search (ILIKE '%q%'): a trigram index where pg_trgm is, or may be made, available;
    # without it the search walks a sort's index instead, still correct.
    """
    DO $$
    DECLARE found text;
    BEGIN
        SELECT n.nspname INTO found FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
            WHERE e.extname = 'pg_trgm';
        IF found IS NULL THEN
            BEGIN
                CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public;
                found := 'public';
            EXCEPTION WHEN OTHERS THEN
                found := NULL;
            END;
        END IF;
        IF found IS NOT NULL THEN
            EXECUTE format('CREATE INDEX IF NOT EXISTS {t}deals_search ON {t}deals USING gin (name %I.gin_trgm_ops)',
                found);
        END IF;
    END $$
    """,
)

_DEAL_FIELDS = (
    "deal_id",
    "pipeline_id",
    "stage",
    "name",
    "amount",
    "currency",
    "owner",
    "status",
    "stage_entered_at",
    "last_activity_at",
    "next_task_due_at",
    "opened_at",
    "closed_at",
    "lost_reason",
    "open_tasks",
    "version",
    "expected_close_date",
    "next_step",
)
DEAL_COLUMNS = ", ".join(_DEAL_FIELDS)


def deal_select(alias: str = "") -> str:
    """The select list that :func:`deal_from_record` reads (jsonb as text: msgspec decodes it faster)."""
    prefix = f"{alias}." if alias else ""
    return ", ".join(f"{prefix}{c}::text" if c == "open_tasks" else f"{prefix}{c}" for c in _DEAL_FIELDS)


_DEAL_SELECT = deal_select()
# Statement templates over one build's tables: ``{t}`` is its table prefix (see :class:`BoardSql`).
T = "{t}"
PIPELINE_COLUMNS = "pipeline_id, name, stages::text, version, defined_at"

_UPSERT_PIPELINE = """
INSERT INTO {t}pipelines (pipeline_id, name, stages, version, defined_at) VALUES (%s, %s, %s::jsonb, %s, %s)
ON CONFLICT (pipeline_id) DO UPDATE SET name = EXCLUDED.name, stages = EXCLUDED.stages, version = EXCLUDED.version,
    defined_at = EXCLUDED.defined_at
WHERE {t}pipelines.version < EXCLUDED.version
"""


class BoardSql:
    """The board's statements over one build's tables: ``<build>_deals`` and ``<build>_pipelines``."""

    def __init__(self, build: str) -> None:
        t = f"{build}_"
        self.deals = f"{t}deals"
        self.pipelines = f"{t}pipelines"
        self.ddl = tuple(statement.format(t=t) for statement in _DDL)
        self.staged_deals = StagedUpsert(self.deals, typed(_DDL[1], _DEAL_FIELDS), "deal_id")
        self.upsert_pipeline = _UPSERT_PIPELINE.format(t=t)
        self.link_lead = (
            f"INSERT INTO {t}deal_leads (deal_id, lead_id, opened_sequence) VALUES (%s, %s, %s) "  # noqa: S608
            "ON CONFLICT (deal_id) DO UPDATE SET lead_id = EXCLUDED.lead_id, opened_sequence = EXCLUDED.opened_sequence"
        )
        # Deals opened from the lead before its erasure (a later one's name is sealed with the deal's own key).
        self.scrub_lead = (
            f"UPDATE {t}deals d SET name = %(erased)s, "  # noqa: S608
            "next_step = CASE WHEN d.next_step IS NULL THEN NULL ELSE %(erased)s END "
            f"FROM {t}deal_leads l WHERE l.deal_id = d.deal_id AND l.lead_id = %(lead)s "
            "AND l.opened_sequence < %(sequence)s "
            "AND (d.name <> %(erased)s OR d.next_step IS DISTINCT FROM NULL AND d.next_step <> %(erased)s)"
        )


_stages_decoder = msgspec.json.Decoder(tuple[Stage, ...])
_tasks_decoder = msgspec.json.Decoder(tuple[tuple[str, dt.datetime], ...])
_encode = msgspec.json.encode


def deal_from_record(r: Sequence[Any]) -> DealRow:
    """A :func:`deal_select` record as a row (times in UTC, whatever the session's time zone)."""
    return DealRow(
        deal_id=r[0],
        pipeline_id=r[1],
        stage=r[2],
        name=r[3],
        amount=r[4],
        currency=r[5],
        owner=r[6],
        status=r[7],
        stage_entered_at=utc(r[8]),
        last_activity_at=utc(r[9]),
        next_task_due_at=utc_or_none(r[10]),
        opened_at=utc(r[11]),
        closed_at=utc_or_none(r[12]),
        lost_reason=r[13],
        open_tasks=_tasks_decoder.decode(r[14]),
        version=r[15],
        expected_close_date=r[16],
        next_step=r[17],
    )


def _already_json(encoded: bytes) -> bytes:
    return encoded


def _deal_record(d: DealRow) -> tuple[Any, ...]:
    return (
        d.deal_id,
        d.pipeline_id,
        d.stage,
        d.name,
        d.amount,
        d.currency,
        d.owner,
        d.status,
        d.stage_entered_at,
        d.last_activity_at,
        d.next_task_due_at,
        d.opened_at,
        d.closed_at,
        d.lost_reason,
        Jsonb(_encode(d.open_tasks), dumps=_already_json),
        d.version,
        d.expected_close_date,
        d.next_step,
    )


def pipeline_from_record(r: Sequence[Any]) -> PipelineRow:
    return PipelineRow(
        pipeline_id=r[0], name=r[1], stages=_stages_decoder.decode(r[2]), version=r[3], defined_at=utc_or_none(r[4])
    )


async def load_state(
    conn: AsyncConnection[Any], sql: BoardSql, deal_ids: Iterable[str], pipeline_ids: Iterable[str]
) -> BoardState:
    """The stored rows of these deals and pipelines."""
    state = BoardState()
    deal_list, pipeline_list = list(deal_ids), list(pipeline_ids)
    async with conn.cursor() as cur:
        if deal_list:
            await cur.execute(f"SELECT {_DEAL_SELECT} FROM {sql.deals} WHERE deal_id = ANY(%s)", (deal_list,))  # noqa: S608
            for record in await cur.fetchall():
                state.deals[record[0]] = deal_from_record(record)
        if pipeline_list:
            await cur.execute(
                f"SELECT {PIPELINE_COLUMNS} FROM {sql.pipelines} WHERE pipeline_id = ANY(%s)",  # noqa: S608
                (pipeline_list,),
            )
            for record in await cur.fetchall():
                state.pipelines[record[0]] = pipeline_from_record(record)
    return state


class BoardProjection(BatchProjection[BoardState]):
    """The sales board: one row per deal, one per pipeline. ``instance`` labels a separate build of the same
    version (its own tables and checkpoints), e.g. a rebuild to compare with the live one."""

    name = "board"
    version = VERSION
    # The fold never reads a pipeline to fold a deal (stages are joined at query time), so pipelines are
    # split by partition like deals: each definition is written by exactly one shard.
    partitioned: tuple[AggregateType, ...] = ("deal", "pipeline")
    # Every shard hears of every lead's erasure, to scrub the names of its deals opened from that lead.
    broadcast: tuple[AggregateType, ...] = ("lead",)
    # The deal's name and next step, sealed in the log.
    reads_personal: tuple[type[Event], ...] = (DealOpened, DealUpdated)

    def __init__(self, instance: str = "") -> None:
        self.build = build_name(self.name, self.version, instance)
        self.sql = BoardSql(self.build)

    def ddl(self) -> Sequence[str]:
        return self.sql.ddl

    async def load_touched(self, conn: AsyncConnection[Any], events: Sequence[StoredEvent]) -> BoardState:
        deal_ids = {e.envelope.aggregate_id for e in events if e.envelope.aggregate_type == "deal"}
        pipeline_ids = {e.envelope.aggregate_id for e in events if e.envelope.aggregate_type == "pipeline"}
        return await load_state(conn, self.sql, deal_ids, pipeline_ids)

    def fold(self, state: BoardState, event: StoredEvent) -> None:
        apply(state, event)

    async def write_changes(
        self, cur: AsyncCursor[Any], before: BoardState, after: BoardState, events: Sequence[StoredEvent]
    ) -> None:
        deals = changed(after.deals, before.deals)
        pipelines = changed(after.pipelines, before.pipelines)
        links = [
            (e.envelope.aggregate_id, e.envelope.data.lead_id, e.sequence)
            for e in events
            if isinstance(e.envelope.data, DealOpened) and e.envelope.data.lead_id is not None
        ]
        erasures = [(e.envelope.aggregate_id, e.sequence) for e in events if isinstance(e.envelope.data, LeadErased)]
        if deals:
            await self.sql.staged_deals.write(cur, [_deal_record(deal) for deal in deals])
        if pipelines:
            await cur.executemany(
                self.sql.upsert_pipeline,
                [
                    (p.pipeline_id, p.name, msgspec.json.encode(p.stages).decode(), p.version, p.defined_at)
                    for p in pipelines
                ],
            )
        if links:
            await cur.executemany(self.sql.link_lead, links)
        # After the batch's rows are written, so a deal folded in the same batch is scrubbed too.
        for lead_id, sequence in erasures:
            await cur.execute(self.sql.scrub_lead, {"erased": ERASED_NAME, "lead": lead_id, "sequence": sequence})


async def read_state(conn: AsyncConnection[Any], build: str = BUILD) -> BoardState:
    """Every stored row of one build: for tests, rebuild comparisons and the bench."""
    sql = BoardSql(build)
    state = BoardState()
    async with conn.cursor() as cur:
        await cur.execute(f"SELECT {_DEAL_SELECT} FROM {sql.deals}")  # noqa: S608
        for record in await cur.fetchall():
            state.deals[record[0]] = deal_from_record(record)
        await cur.execute(f"SELECT {PIPELINE_COLUMNS} FROM {sql.pipelines}")  # noqa: S608
        for record in await cur.fetchall():
            state.pipelines[record[0]] = pipeline_from_record(record)
    return state
