"""The board's tables and its projection: load the touched rows, fold the batch in memory, upsert the changes."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec
from psycopg import AsyncConnection

from events.envelope import AggregateType, StoredEvent
from projections.board import BoardState, DealRow, PipelineRow, Stage, apply

BOARD_DDL: tuple[str, ...] = (
    """
    CREATE TABLE IF NOT EXISTS board_pipelines (
        pipeline_id text PRIMARY KEY,
        name text NOT NULL,
        stages jsonb NOT NULL,
        version bigint NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS board_deals (
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
        open_task_ids text[] NOT NULL,
        open_task_due timestamptz[] NOT NULL,
        version bigint NOT NULL
    )
    """,
    # One column's page is a range scan of this index in keyset order; the INCLUDE lets the per-column
    # count and sums be answered from the index alone.
    """
    CREATE INDEX IF NOT EXISTS board_deals_column
        ON board_deals (status, pipeline_id, stage, stage_entered_at, deal_id) INCLUDE (currency, amount)
    """,
    """
    CREATE INDEX IF NOT EXISTS board_deals_owner_column
        ON board_deals (status, owner, pipeline_id, stage, stage_entered_at, deal_id) INCLUDE (currency, amount)
    """,
)

DEAL_COLUMNS = (
    "deal_id, pipeline_id, stage, name, amount, currency, owner, status, stage_entered_at, last_activity_at, "
    "next_task_due_at, opened_at, closed_at, lost_reason, open_task_ids, open_task_due, version"
)
PIPELINE_COLUMNS = "pipeline_id, name, stages::text, version"

_UPSERT_DEAL = f"""
INSERT INTO board_deals ({DEAL_COLUMNS})
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (deal_id) DO UPDATE SET
    pipeline_id = EXCLUDED.pipeline_id, stage = EXCLUDED.stage, name = EXCLUDED.name, amount = EXCLUDED.amount,
    currency = EXCLUDED.currency, owner = EXCLUDED.owner, status = EXCLUDED.status,
    stage_entered_at = EXCLUDED.stage_entered_at, last_activity_at = EXCLUDED.last_activity_at,
    next_task_due_at = EXCLUDED.next_task_due_at, opened_at = EXCLUDED.opened_at, closed_at = EXCLUDED.closed_at,
    lost_reason = EXCLUDED.lost_reason, open_task_ids = EXCLUDED.open_task_ids,
    open_task_due = EXCLUDED.open_task_due, version = EXCLUDED.version
WHERE board_deals.version < EXCLUDED.version
"""  # noqa: S608 - column names are constants

_UPSERT_PIPELINE = """
INSERT INTO board_pipelines (pipeline_id, name, stages, version) VALUES (%s, %s, %s::jsonb, %s)
ON CONFLICT (pipeline_id) DO UPDATE SET name = EXCLUDED.name, stages = EXCLUDED.stages, version = EXCLUDED.version
WHERE board_pipelines.version < EXCLUDED.version
"""

_stages_decoder = msgspec.json.Decoder(tuple[Stage, ...])


def _utc(value: dt.datetime) -> dt.datetime:
    return value.astimezone(dt.UTC)


def _utc_or_none(value: dt.datetime | None) -> dt.datetime | None:
    return None if value is None else value.astimezone(dt.UTC)


def deal_from_record(r: Sequence[Any]) -> DealRow:
    """A ``DEAL_COLUMNS`` record as a row (times in UTC, whatever the session's time zone)."""
    return DealRow(
        deal_id=r[0], pipeline_id=r[1], stage=r[2], name=r[3], amount=r[4], currency=r[5], owner=r[6], status=r[7],
        stage_entered_at=_utc(r[8]), last_activity_at=_utc(r[9]), next_task_due_at=_utc_or_none(r[10]),
        opened_at=_utc(r[11]), closed_at=_utc_or_none(r[12]), lost_reason=r[13],
        open_tasks=tuple(zip(r[14], (_utc(d) for d in r[15]), strict=True)), version=r[16],
    )


def _deal_params(d: DealRow) -> tuple[Any, ...]:
    return (
        d.deal_id, d.pipeline_id, d.stage, d.name, d.amount, d.currency, d.owner, d.status, d.stage_entered_at,
        d.last_activity_at, d.next_task_due_at, d.opened_at, d.closed_at, d.lost_reason,
        [t for t, _ in d.open_tasks], [due for _, due in d.open_tasks], d.version,
    )


def pipeline_from_record(r: Sequence[Any]) -> PipelineRow:
    return PipelineRow(pipeline_id=r[0], name=r[1], stages=_stages_decoder.decode(r[2]), version=r[3])


async def load_state(conn: AsyncConnection[Any], deal_ids: Iterable[str], pipeline_ids: Iterable[str]) -> BoardState:
    """The stored rows of these deals and pipelines."""
    state = BoardState()
    deal_list, pipeline_list = list(deal_ids), list(pipeline_ids)
    async with conn.cursor() as cur:
        if deal_list:
            await cur.execute(f"SELECT {DEAL_COLUMNS} FROM board_deals WHERE deal_id = ANY(%s)", (deal_list,))  # noqa: S608
            for record in await cur.fetchall():
                state.deals[record[0]] = deal_from_record(record)
        if pipeline_list:
            await cur.execute(
                f"SELECT {PIPELINE_COLUMNS} FROM board_pipelines WHERE pipeline_id = ANY(%s)",  # noqa: S608
                (pipeline_list,),
            )
            for record in await cur.fetchall():
                state.pipelines[record[0]] = pipeline_from_record(record)
    return state


class BoardProjection:
    """The sales board: one row per deal, one per pipeline."""

    name = "board"
    version = 1
    # The fold never reads a pipeline to fold a deal (stages are joined at query time), so pipelines are
    # split by partition like deals: each definition is written by exactly one shard.
    partitioned: tuple[AggregateType, ...] = ("deal", "pipeline")
    broadcast: tuple[AggregateType, ...] = ()

    def ddl(self) -> Sequence[str]:
        return BOARD_DDL

    async def apply_batch(self, conn: AsyncConnection[Any], events: Sequence[StoredEvent]) -> None:
        deal_ids = {e.envelope.aggregate_id for e in events if e.envelope.aggregate_type == "deal"}
        pipeline_ids = {e.envelope.aggregate_id for e in events if e.envelope.aggregate_type == "pipeline"}
        state = await load_state(conn, deal_ids, pipeline_ids)
        before = state.copy()
        for event in events:
            apply(state, event)
        # Sorted: a fixed lock order, so two writers of shared rows can never deadlock.
        deals = [state.deals[k] for k in sorted(state.deals) if state.deals[k] is not before.deals.get(k)]
        pipelines = [state.pipelines[k] for k in sorted(state.pipelines)
                     if state.pipelines[k] is not before.pipelines.get(k)]
        async with conn.cursor() as cur:
            if deals:
                await cur.executemany(_UPSERT_DEAL, [_deal_params(d) for d in deals])
            if pipelines:
                await cur.executemany(
                    _UPSERT_PIPELINE,
                    [(p.pipeline_id, p.name, msgspec.json.encode(p.stages).decode(), p.version) for p in pipelines],
                )


async def read_state(conn: AsyncConnection[Any]) -> BoardState:
    """Every stored row: for tests, rebuild comparisons and the bench."""
    state = BoardState()
    async with conn.cursor() as cur:
        await cur.execute(f"SELECT {DEAL_COLUMNS} FROM board_deals")  # noqa: S608
        for record in await cur.fetchall():
            state.deals[record[0]] = deal_from_record(record)
        await cur.execute(f"SELECT {PIPELINE_COLUMNS} FROM board_pipelines")  # noqa: S608
        for record in await cur.fetchall():
            state.pipelines[record[0]] = pipeline_from_record(record)
    return state
