"""CSV exports over HTTP, streamed from the read models."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from litestar import Router, get
from litestar.params import FromQuery, QueryParameter
from litestar.response import Stream

from projections import board_export, board_store
from projections.board import Status
from projections.versions import serving_build_name
from services.api.common import AnyRequest, requires, runtime
from services.exports import deals_csv

READ = [requires("read")]


@get("/exports/deals.csv", tags=["exports"], guards=READ)
async def export_deals(
    request: AnyRequest,
    status: FromQuery[Status | None] = None,
    pipeline_id: FromQuery[str | None] = None,
    bom: Annotated[bool, QueryParameter(description="start with a UTF-8 byte-order mark, for Excel")] = False,
) -> Stream:
    """Every deal of the board (or those of one ``status`` or ``pipeline_id``) as CSV, in id order, streamed."""

    # Asked before the answer starts: no read model is a 503, not a CSV cut short after its 200.
    async with runtime(request).read_connection() as conn:
        build = await serving_build_name(conn, "board", board_store.BUILD)
        await conn.execute(f"SELECT 1 FROM {board_store.BoardSql(build).deals} LIMIT 0")  # noqa: S608

    async def lines() -> AsyncIterator[bytes]:
        async with runtime(request).read_connection() as conn:
            async for line in deals_csv(board_export.all_deals(conn, status, pipeline_id, build), bom):
                yield line

    return Stream(
        lines(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="deals.csv"'},
    )


router = Router(path="/v1", route_handlers=[export_deals])
