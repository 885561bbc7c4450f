"""The people of a deal, joined at query time from the people read model: one deal's (``GET /v1/deals/{id}``), and
the board's cards (decision maker, late stage without one)."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import msgspec
from psycopg import AsyncConnection
from psycopg.errors import UndefinedTable

from projections import board_store, people_store
from projections.board import Column, DealCard, PipelineBoard, PipelineRow
from projections.board_store import PIPELINE_COLUMNS, BoardSql, deal_from_record, deal_select, pipeline_from_record
from projections.people_queries import DealContact, deal_contacts, decision_maker, late_stages
from projections.people_rules import NO_PEOPLE_RULES, PeopleRules
from projections.versions import serving_build_name


class DealSummary(msgspec.Struct, frozen=True, kw_only=True):
    """A deal as the board holds it, in a list of an organisation's deals."""

    deal_id: str
    name: str
    pipeline_id: str
    stage: str
    status: str
    amount: Decimal
    currency: str
    owner: str | None


class DealPeople(msgspec.Struct, frozen=True, kw_only=True):
    """A deal's people: every contact and role, the decision maker, and whether it sits in a late stage without one."""

    contacts: list[DealContact]
    decision_maker: DealContact | None
    late_stage: bool
    late_stage_without_decision_maker: bool


async def _pipelines(conn: AsyncConnection[Any], build: str, ids: Sequence[str]) -> dict[str, PipelineRow]:
    cur = await conn.execute(
        f"SELECT {PIPELINE_COLUMNS} FROM {BoardSql(build).pipelines} WHERE pipeline_id = ANY(%s)",  # noqa: S608
        (list(ids),),
    )
    return {r[0]: pipeline_from_record(r) for r in await cur.fetchall()}


def _is_late(pipelines: dict[str, PipelineRow], pipeline_id: str, stage: str, rules: PeopleRules) -> bool:
    pipeline = pipelines.get(pipeline_id)
    configured = rules.late_stages.get(pipeline_id)
    return pipeline is not None and stage in late_stages([s.id for s in pipeline.stages], configured)


async def deal_people(
    conn: AsyncConnection[Any],
    deal_id: str,
    status: str,
    stage: str,
    stage_ids: Sequence[str],
    configured: Sequence[str] | None = None,
) -> DealPeople:
    """The people of one deal, in ``stage`` of a pipeline whose stages are ``stage_ids`` (in order) and whose late
    stages the rules file may name (``configured``)."""
    people_build = await serving_build_name(conn, "people", people_store.BUILD)
    contacts = (await deal_contacts(conn, people_build, [deal_id])).get(deal_id, [])
    late = status == "open" and stage in late_stages(stage_ids, configured)
    chosen = decision_maker(contacts)
    return DealPeople(
        contacts=contacts,
        decision_maker=chosen,
        late_stage=late,
        late_stage_without_decision_maker=late and chosen is None,
    )


async def deal_summaries(conn: AsyncConnection[Any], deal_ids: Sequence[str]) -> list[DealSummary]:
    """These deals as the board holds them (one the board does not hold yet is left out), in the order given."""
    if not deal_ids:
        return []
    build = await serving_build_name(conn, "board", board_store.BUILD)
    try:
        async with conn.transaction():
            cur = await conn.execute(
                f"SELECT {deal_select()} FROM {BoardSql(build).deals} WHERE deal_id = ANY(%s)",  # noqa: S608
                (list(deal_ids),),
            )
            rows = {r[0]: deal_from_record(r) for r in await cur.fetchall()}
    except UndefinedTable:
        return []
    fields = DealSummary.__struct_fields__
    return [DealSummary(**{f: getattr(rows[d], f) for f in fields}) for d in deal_ids if d in rows]


async def people_on_board(
    conn: AsyncConnection[Any], boards: list[PipelineBoard], build: str, rules: PeopleRules = NO_PEOPLE_RULES
) -> list[PipelineBoard]:
    """The board's cards with each deal's decision maker and the late-stage flag (``build``: the board's)."""
    deal_ids = [d.deal_id for b in boards for c in b.columns for d in c.deals]
    if not deal_ids:
        return boards
    people_build = await serving_build_name(conn, "people", people_store.BUILD)
    by_deal = await deal_contacts(conn, people_build, deal_ids)
    pipelines = await _pipelines(conn, build, [b.pipeline_id for b in boards])

    def card(pipeline_id: str, stage: str, d: DealCard) -> DealCard:
        chosen = decision_maker(by_deal.get(d.deal_id, []))
        late = d.status == "open" and _is_late(pipelines, pipeline_id, stage, rules)
        if chosen is None and not late:
            return d
        return msgspec.structs.replace(
            d,
            decision_maker=chosen.name if chosen else None,
            late_stage_without_decision_maker=late and chosen is None,
        )

    def column(pipeline_id: str, c: Column) -> Column:
        return msgspec.structs.replace(c, deals=[card(pipeline_id, c.stage, d) for d in c.deals])

    return [msgspec.structs.replace(b, columns=[column(b.pipeline_id, c) for c in b.columns]) for b in boards]
