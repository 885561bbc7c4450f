"""Lead scores over HTTP: one lead's score with its explanation, the leads a rep should call first, and how a
new rules version would score them differently."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

import msgspec
from litestar import Router, get
from litestar.params import QueryParameter
from psycopg import AsyncConnection

from events.aggregates import Rejected
from projections.scores import ScoreDiff, diff
from projections.scores_store import VERSION, RankedLead, ScoresSql, load_state, ranked, read_state, rules_of
from projections.scoring import Contribution, score
from projections.versions import BuildVersion, build_name, builds, serving_build_name
from services.api.common import AggregateIdParam, AnyRequest, requires, runtime
from services.api.identity import owner_filter, reaches
from services.errors import InputError

DEFAULT_BUILD = build_name("scores", BuildVersion(VERSION, 1).number)
READ = [requires("read")]


class LeadScoreView(msgspec.Struct, frozen=True, kw_only=True):
    """The score at ``as_of``: fit points for what the lead told us, engagement points that fade with the
    rules' half-life, and each rule's contribution."""

    lead_id: str
    as_of: dt.datetime
    score: float
    fit: float
    engagement: float
    threshold: float
    qualified: bool
    status: str
    owner: str | None
    rules_version: int
    build: str
    erased: bool
    contributions: list[Contribution]


class RankedPage(msgspec.Struct, frozen=True):
    """``order``: always ``score``, telling this answer from the lead list's (``GET /v1/leads`` answers either)."""

    leads: list[RankedLead]
    next_cursor: str | None
    order: Literal["score"]


async def scores_build(conn: AsyncConnection[Any]) -> str:
    return await serving_build_name(conn, "scores", DEFAULT_BUILD)


def _when(as_of: dt.datetime | None) -> dt.datetime:
    if as_of is None:
        return dt.datetime.now(dt.UTC)
    if as_of.tzinfo is None:
        raise InputError.one("as_of", "must carry a time zone offset")
    return as_of.astimezone(dt.UTC)


@get("/leads/{lead_id:str}/score", tags=["leads"], guards=[*READ, reaches("lead")])
async def lead_score(
    request: AnyRequest,
    lead_id: AggregateIdParam,
    as_of: Annotated[dt.datetime | None, QueryParameter(description="default now")] = None,
) -> LeadScoreView:
    """One lead's score and why: every rule that contributed, with its points."""
    when = _when(as_of)
    async with runtime(request).read_connection() as conn:
        build = await scores_build(conn)
        rows = await load_state(conn, ScoresSql(build), [lead_id])
        rules = await rules_of(conn, build)
    if lead_id not in rows:
        raise Rejected("lead_id", "no such lead in the scores read model", 404)
    row = rows[lead_id]
    s = score(rules, row.profile, row.touches, when)
    return LeadScoreView(
        lead_id=lead_id,
        as_of=when,
        score=s.total,
        fit=s.fit,
        engagement=s.engagement,
        threshold=rules.threshold,
        qualified=row.status == "qualified",
        status=row.status,
        owner=row.owner,
        rules_version=rules.version,
        build=build,
        erased=row.erased,
        contributions=s.contributions,
    )


LEGACY_STATUSES = ("open", "qualified", "disqualified", "all")


async def ranked_page(
    request: AnyRequest, owner: str | None, status: str, cursor: str | None, limit: int
) -> RankedPage:
    """The leads a rep should call first (``GET /v1/leads?order=score``): highest score now first (engagement
    fades, so the order is computed at read time), by ``owner`` and ``status`` (open by default, or all)."""
    if status not in LEGACY_STATUSES:
        raise InputError.one("status", f"must be one of {', '.join(LEGACY_STATUSES)} with order=score")
    offset = 0
    if cursor is not None:
        if not cursor.isdigit() or len(cursor) > 9:
            raise InputError.one("cursor", "invalid leads cursor")
        offset = int(cursor)
    async with runtime(request).read_connection() as conn:
        page, more = await ranked(
            conn,
            await scores_build(conn),
            dt.datetime.now(dt.UTC),
            owner_filter(request, owner),  # a restricted user: the owner they name, else their own
            None if status == "all" else status,
            offset,
            limit,
        )
    return RankedPage(page, str(offset + limit) if more else None, "score")


@get("/scores/diff", tags=["leads"], guards=READ)
async def scores_diff(
    request: AnyRequest,
    build: Annotated[str | None, QueryParameter(description="default: the newest build that is not serving")] = None,
) -> ScoreDiff:
    """How another build of the scores (a new rules version) scores the leads compared with the serving one:
    how many change, who would newly qualify or stop qualifying, and the largest changes. Switch with
    ``dealstream projections switch scores BUILD`` once satisfied."""
    async with runtime(request).read_connection() as conn:
        serving = await scores_build(conn)
        if build is None:
            others = [b for name, b, is_serving, _ in await builds(conn) if name == "scores" and not is_serving]
            if not others:
                raise Rejected("build", "no other scores build to compare with: start a worker with the new rules", 404)
            build = others[-1]
        elif not build.startswith("scores_v"):
            raise InputError.one("build", "not a scores build (scores_v<version>[_<label>])")
        return diff(await read_state(conn, serving), await read_state(conn, build))


router = Router(path="/v1", route_handlers=[lead_score, scores_diff])
