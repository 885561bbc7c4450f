"""Read models over HTTP: the board (and its live feed), velocity metrics, projection lag."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncGenerator, Iterator
from typing import Annotated, Any, Literal

import msgspec
from litestar import Response, Router, get
from litestar.params import FromQuery, QueryParameter
from litestar.response import ServerSentEvent
from litestar.response.sse import ServerSentEventMessage

from events.aggregates import Rejected
from projections import (
    board_changes,
    board_queries,
    board_store,
    velocity_periods,
    velocity_queries,
    velocity_report,
    velocity_store,
)
from projections.board import AlertBadge, Column, DealCard, PipelineBoard, Status
from projections.money import money_text
from projections.versions import serving_build_name
from services import replay
from services.api.alerts import open_alerts_by_deal
from services.api.common import AggregateIdParam, AnyRequest, requires, runtime
from services.api.deal_people import people_on_board
from services.api.identity import owner_filter, sees_everyone
from services.errors import InputError
from workers.registry import WORKERS, worker_lag

READ = [requires("read")]

AsOf = Annotated[dt.datetime | None, QueryParameter(description="a past moment (with offset); default now")]


def _as_of(value: dt.datetime | None, field: str = "as_of") -> dt.datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise InputError.one(field, "must carry a time zone offset, e.g. 2025-12-31T23:59:59+01:00")
    return value.astimezone(dt.UTC)


async def _board(
    request: AnyRequest,
    pipeline_id: str | None,
    owner: str | None,
    status: Status,
    cursor: str | None,
    limit: int,
    as_of: dt.datetime | None,
) -> list[PipelineBoard]:
    when = _as_of(as_of)
    if when is not None and when < dt.datetime.now(dt.UTC):
        return await _board_then(request, pipeline_id, owner, status, cursor, limit, when)
    async with runtime(request).read_connection() as conn:
        try:
            build = await serving_build_name(conn, "board", board_store.BUILD)
            boards = await board_queries.board(conn, pipeline_id, owner, cursor, limit, _as_of(as_of), status, build)
        except ValueError as exc:
            raise InputError.one("cursor" if cursor else "limit", str(exc)) from exc
        by_deal = await open_alerts_by_deal(conn, [d.deal_id for b in boards for c in b.columns for d in c.deals])
        boards = await people_on_board(conn, boards, build, runtime(request).settings.people)
    return _with_alerts(boards, by_deal) if by_deal else boards


async def _board_then(
    request: AnyRequest,
    pipeline_id: str | None,
    owner: str | None,
    status: Status,
    cursor: str | None,
    limit: int,
    when: dt.datetime,
) -> list[PipelineBoard]:
    # The read model holds only the deals as they are now: a past board is folded from the facts dated by then,
    # as the metrics cut theirs. Alerts open now are not shown on it.
    rt = runtime(request)
    events = await replay.board_events(rt.store.js, rt.store.naming, rt.ledger.vault)
    try:
        return replay.board_then(events, when, pipeline_id, owner, status, cursor, limit)
    except ValueError as exc:
        raise InputError.one("cursor" if cursor else "limit", str(exc)) from exc


def _with_alerts(boards: list[PipelineBoard], by_deal: dict[str, tuple[AlertBadge, ...]]) -> list[PipelineBoard]:
    def card(d: DealCard) -> DealCard:
        return msgspec.structs.replace(d, alerts=by_deal[d.deal_id]) if d.deal_id in by_deal else d

    def column(c: Column) -> Column:
        return msgspec.structs.replace(c, deals=[card(d) for d in c.deals])

    return [msgspec.structs.replace(b, columns=[column(c) for c in b.columns]) for b in boards]


@get("/board", tags=["board"], guards=READ)
async def board(
    request: AnyRequest,
    pipeline_id: FromQuery[str | None] = None,
    owner: FromQuery[str | None] = None,
    status: FromQuery[Status] = "open",
    cursor: FromQuery[str | None] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
    as_of: AsOf = None,
) -> list[PipelineBoard]:
    """Every pipeline's columns (stages in order) with count, total and weighted amount per currency, and a
    page of deals per column (longest in stage first; ``next_cursor`` fetches that column's next page).
    Weighted amount = amount x the stage's win probability. ``rotting``: no activity for longer than the
    stage's rotting days at ``as_of``. A past ``as_of`` answers the board as it stood then: only facts dated by
    then count (folded from the log, like ``/board/as-of``), as in the metrics."""
    return await _board(request, pipeline_id, owner_filter(request, owner), status, cursor, limit, as_of)


@get("/board/as-of", tags=["board"], guards=READ)
async def board_as_of(
    request: AnyRequest,
    at: Annotated[dt.datetime, QueryParameter(description="the past moment (business time, with offset)")],
    since: Annotated[
        dt.date | None, QueryParameter(description="slipped deals: expected to close on or after this date")
    ] = None,
    pipeline_id: FromQuery[str | None] = None,
    owner: FromQuery[str | None] = None,
    status: FromQuery[Status] = "open",
    limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
) -> replay.BoardAsOf:
    """The board as it stood at ``at``, replayed from the log (not from the read model), and the deals that
    slipped: open at ``at`` although expected to close by then (from ``since``: e.g. a quarter's first day),
    with where they stand now. Reads every deal and pipeline event: an auditor's query, not a dashboard's."""
    when = _as_of(at, "at")
    assert when is not None
    rt = runtime(request)
    events = await replay.board_events(rt.store.js, rt.store.naming, rt.ledger.vault)
    return replay.board_as_of(events, when, since, pipeline_id, owner_filter(request, owner), status, limit)


@get("/board/{pipeline_id:str}", tags=["board"], guards=READ)
async def pipeline_board(
    request: AnyRequest,
    pipeline_id: AggregateIdParam,
    owner: FromQuery[str | None] = None,
    status: FromQuery[Status] = "open",
    cursor: FromQuery[str | None] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
    as_of: AsOf = None,
) -> PipelineBoard:
    """One pipeline's board."""
    boards = await _board(request, pipeline_id, owner_filter(request, owner), status, cursor, limit, as_of)
    if not boards:
        raise Rejected("pipeline_id", "no such pipeline on the board", 404)
    return boards[0]


class BoardChange(msgspec.Struct, frozen=True):
    """A deal as the board now holds it; ``version`` is the stream sequence of the event that changed it."""

    deal_id: str
    pipeline_id: str
    stage: str
    status: str
    name: str
    amount: str
    currency: str
    owner: str | None
    version: int


@get("/board/changes", tags=["board"], guards=READ)
async def board_feed(
    request: AnyRequest,
    after: Annotated[int | None, QueryParameter(ge=0, description="stream sequence to start after")] = None,
) -> ServerSentEvent:
    """Server-Sent Events: one ``deal`` event per board change, as the board worker commits it. The event id is
    the change's stream sequence, so a reconnecting client (``Last-Event-ID``) misses nothing."""
    sees_everyone(request)
    rt = runtime(request)
    last_event_id = request.headers.get("last-event-id") or ""
    start = after if after is not None else int(last_event_id) if last_event_id.isdigit() else None

    async def stream() -> AsyncGenerator[ServerSentEventMessage, None]:
        cursor = start
        idle = 0.0
        while True:
            async with rt.read_connection() as conn:
                # Resolved on every poll: a switch to a new build of the board carries on from the same sequence.
                build = await serving_build_name(conn, "board", board_store.BUILD)
                if cursor is None:
                    cursor = await board_changes.latest_change(conn, build)
                    yield ServerSentEventMessage(comment=f"from sequence {cursor}")
                rows = await board_changes.changes_after(conn, cursor, 500, build)
            for row in rows:
                cursor = row.version
                change = BoardChange(
                    row.deal_id,
                    row.pipeline_id,
                    row.stage,
                    row.status,
                    row.name,
                    money_text(row.amount, row.currency),
                    row.currency,
                    row.owner,
                    row.version,
                )
                yield ServerSentEventMessage(
                    data=msgspec.json.encode(change).decode(), event="deal", id=str(row.version)
                )
            if rows:
                idle = 0.0
                continue
            await asyncio.sleep(0.5)
            idle += 0.5
            if idle >= 15:
                idle = 0.0
                yield ServerSentEventMessage(comment="keep-alive")

    return ServerSentEvent(stream())


PeriodKind = Literal["day", "week", "month", "quarter"]
DateParam = Annotated[dt.date | None, QueryParameter(description="a local date inside the period; default today")]
TzParam = Annotated[str, QueryParameter(description="IANA time zone of the period")]
FromParam = Annotated[dt.datetime | None, QueryParameter(name="from", description="explicit range start")]
ToParam = Annotated[dt.datetime | None, QueryParameter(name="to", description="explicit range end")]


def chosen_period(
    period: PeriodKind | None, date: dt.date | None, tz: str, start: dt.datetime | None, end: dt.datetime | None
) -> velocity_periods.Period:
    """The calendar period in ``tz`` containing ``date`` (default today there), or the explicit ``from``/``to``."""
    if start is not None or end is not None:
        if start is None or end is None:
            raise InputError.one("from" if start is None else "to", "give both from and to, or neither")
        return velocity_periods.explicit_period(start, end)
    day = date or dt.datetime.now(velocity_periods.zone(tz)).date()
    return velocity_periods.period(period or "month", day, tz)


@contextlib.contextmanager
def period_errors() -> Iterator[None]:
    """A bad period or time zone is a 422 naming ``period`` or ``tz``, not a 500."""
    try:
        yield
    except ValueError as exc:
        raise InputError.one("tz" if "time zone" in str(exc) else "period", str(exc)) from exc
    except OverflowError as exc:
        # A period, or the one of equal length before it, that reaches past year 1 or 9999.
        raise InputError.one("period", "the period or the one before it reaches past the years 1 to 9999") from exc


@get("/metrics/velocity", tags=["metrics"], guards=READ)
async def velocity_metrics(
    request: AnyRequest,
    period: FromQuery[PeriodKind | None] = "month",
    date: DateParam = None,
    tz: TzParam = "UTC",
    start: FromParam = None,
    end: ToParam = None,
    group_by: FromQuery[Literal["overall", "owner", "source", "campaign", "pipeline"]] = "overall",
    as_of: AsOf = None,
) -> velocity_report.VelocityReport:
    """Win rate, sales cycle, stage conversion (any-stage and all-stage), time in stage, sales velocity, lead
    velocity rate, lead-to-qualified conversion and volume by source, lost deals by reason: for a calendar
    period in ``tz`` (or an explicit ``from``/``to`` range), overall or by owner, source or pipeline, counting
    only what was known at ``as_of``. Every formula is stated in docs/read-models.md and on ``GroupMetrics``."""
    with period_errors():
        chosen = chosen_period(period, date, tz, start, end)
        async with runtime(request).read_connection() as conn:
            build = await serving_build_name(conn, "velocity", velocity_store.BUILD)
            return await velocity_queries.metrics(
                conn,
                chosen.start,
                chosen.end,
                group_by,
                _as_of(as_of),
                previous_start=chosen.previous_start,
                build=build,
            )


@get("/metrics/weighted-pipeline", tags=["metrics"], guards=READ)
async def weighted_pipeline(request: AnyRequest, as_of: AsOf = None) -> list[velocity_report.WeightedMonth]:
    """Open deals by expected close month and currency: amount, and weighted = sum of amount x stage probability."""
    async with runtime(request).read_connection() as conn:
        build = await serving_build_name(conn, "velocity", velocity_store.BUILD)
        return await velocity_queries.weighted_pipeline(conn, _as_of(as_of), build)


class ProjectionLag(msgspec.Struct, frozen=True):
    worker: str
    build: str
    serving: bool
    partition_key: str
    stream_last_sequence: int
    checkpoint: int
    oldest_unapplied_age_seconds: float | None
    caught_up: bool


@get("/projections", tags=["ops"], guards=READ)
async def projections_lag(request: AnyRequest) -> Response[Any]:
    """Per projection, build and shard: whether readers use that build, the log's last sequence, the
    checkpoint, and the age of the oldest event not yet applied (record time, not business time)."""
    rt = runtime(request)
    url = rt.database_url()
    out: list[ProjectionLag] = []
    for name in sorted(WORKERS):
        for lag in await worker_lag(name, rt.settings.nats, url):
            out.append(
                ProjectionLag(
                    name,
                    lag.projection,
                    lag.serving,
                    lag.partition_key,
                    lag.stream_last_sequence,
                    lag.checkpoint,
                    lag.oldest_unapplied_age_seconds,
                    lag.caught_up,
                )
            )
    return Response(out)


router = Router(
    path="/v1",
    route_handlers=[
        board,
        board_feed,
        board_as_of,
        pipeline_board,
        velocity_metrics,
        weighted_pipeline,
        projections_lag,
    ],
)
