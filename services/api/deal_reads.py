"""Deals and pipelines as a sales team finds them: the deal list with filters, search and pages, and the pipelines
read back with their stages."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import msgspec
from litestar import Router, get
from litestar.params import FromQuery, QueryParameter

from events.aggregates import Rejected
from projections import board_store, deal_list
from projections.board import PipelineRow, Status
from projections.board_store import PIPELINE_COLUMNS, BoardSql, pipeline_from_record
from projections.versions import serving_build_name
from services.api.alerts import open_alerts_by_deal
from services.api.common import AggregateIdParam, AnyRequest, requires, runtime
from services.api.identity import owner_filter

READ = [requires("read")]


@get("/deals", tags=["deals"], guards=READ)
async def list_deals(
    request: AnyRequest,
    pipeline_id: FromQuery[str | None] = None,
    stage: FromQuery[str | None] = None,
    owner: FromQuery[str | None] = None,
    status: FromQuery[Status | None] = None,
    close_from: Annotated[dt.date | None, QueryParameter(description="expected close on or after (a date)")] = None,
    close_to: Annotated[dt.date | None, QueryParameter(description="expected close on or before (a date)")] = None,
    rotting: Annotated[bool | None, QueryParameter(description="only deals that rot (true) or do not (false)")] = None,
    q: Annotated[str | None, QueryParameter(description="text in the deal's name, any case")] = None,
    sort: Annotated[
        str | None, QueryParameter(description="opened_at, stage_entered_at, last_activity_at or name; - descending")
    ] = None,
    cursor: FromQuery[str | None] = None,
    limit: Annotated[int | None, QueryParameter(description="1 to 200, default 50")] = None,
) -> deal_list.DealPage:
    """Deals with filters and name search, newest first by default, one keyset page at a time (``next_cursor``
    fetches the next one with the same filters and sort). ``rotting``: open, and no activity for longer than
    the stage's rotting days, now. Each deal carries its open SLA alerts."""
    filters = deal_list.DealFilters(
        pipeline_id=pipeline_id,
        stage=stage,
        owner=owner_filter(request, owner),
        status=status,
        close_from=close_from,
        close_to=close_to,
        rotting=rotting,
        q=q,
    )
    async with runtime(request).read_connection() as conn:
        build = await serving_build_name(conn, "board", board_store.BUILD)
        page = await deal_list.deal_page(conn, filters, sort, cursor, limit, build=build)
        by_deal = await open_alerts_by_deal(conn, [d.deal_id for d in page.deals])
    if not by_deal:
        return page
    deals = [msgspec.structs.replace(d, alerts=by_deal[d.deal_id]) if d.deal_id in by_deal else d for d in page.deals]
    return msgspec.structs.replace(page, deals=deals)


class StageView(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    order: int
    probability: float
    rotting_days: int | None


class PipelineView(msgspec.Struct, frozen=True, kw_only=True):
    """A pipeline as defined now; ``defined_at``: the business time of that definition."""

    pipeline_id: str
    name: str
    defined_at: dt.datetime | None
    stages: list[StageView]


def _view(row: PipelineRow) -> PipelineView:
    stages = [
        StageView(id=s.id, name=s.name, order=n, probability=s.probability, rotting_days=s.rotting_days)
        for n, s in enumerate(row.stages, start=1)
    ]
    return PipelineView(pipeline_id=row.pipeline_id, name=row.name, defined_at=row.defined_at, stages=stages)


async def _pipelines(request: AnyRequest, pipeline_id: str | None) -> list[PipelineView]:
    async with runtime(request).read_connection() as conn:
        tables = BoardSql(await serving_build_name(conn, "board", board_store.BUILD))
        where, params = ("WHERE pipeline_id = %s", (pipeline_id,)) if pipeline_id else ("", ())
        cur = await conn.execute(
            f"SELECT {PIPELINE_COLUMNS} FROM {tables.pipelines} {where} ORDER BY pipeline_id",  # noqa: S608
            params,
        )
        return [_view(pipeline_from_record(r)) for r in await cur.fetchall()]


@get("/pipelines", tags=["pipelines"], guards=READ)
async def list_pipelines(request: AnyRequest) -> list[PipelineView]:
    """Every pipeline with its stages in order (win probability, rotting days), as currently defined."""
    return await _pipelines(request, None)


@get("/pipelines/{pipeline_id:str}", tags=["pipelines"], guards=READ)
async def get_pipeline(request: AnyRequest, pipeline_id: AggregateIdParam) -> PipelineView:
    """One pipeline's stages in order; 404 if it is not defined."""
    found = await _pipelines(request, pipeline_id)
    if not found:
        raise Rejected("pipeline_id", "no such pipeline", 404)
    return found[0]


# GET /v1/deals and GET /v1/pipelines/{id} share their paths with POST /v1/deals and PUT /v1/pipelines/{id}: they
# are registered in the commands router (Litestar needs one router per path); GET /v1/pipelines is here.
router = Router(path="/v1", route_handlers=[list_pipelines])
