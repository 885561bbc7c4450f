"""Lead records over HTTP: one lead with its profile, source, owner, status, score, activity, tasks and alerts; the
lead list with filters, search and keyset pages; corrections (``PATCH``) and merges of duplicates."""

from __future__ import annotations

import datetime as dt
import math
from typing import Annotated, Any, Literal

import msgspec
from litestar import Response, Router, get, patch, post
from litestar.params import FromQuery, JSONBody, QueryParameter
from psycopg import AsyncConnection
from psycopg.errors import UndefinedTable

from events import commands as cmd
from events.aggregates import Rejected
from events.ids import check_id
from events.types import CORRECTABLE, LeadCorrected
from projections.lead_records import STATUSES, LeadRecord
from projections.lead_records_store import (
    DEFAULT_SORT,
    SORTS,
    VERSION,
    LeadFilters,
    list_records,
    load_records,
    merged_from,
)
from projections.listing import MAX_LIMIT, bounded_limit, decode_cursor, parse_sort
from projections.sla_store import SlaSql, alerts
from projections.versions import BuildVersion, build_name, serving_build_name
from services.api import schemas
from services.api.alerts import Alert, alert_of, sla_build
from services.api.commands import run_command
from services.api.common import AggregateIdParam, AnyRequest, accepted, requires, runtime
from services.api.identity import owner_filter, reaches
from services.api.scores import RankedPage, ranked_page
from services.errors import InputError

DEFAULT_BUILD = build_name("lead_records", BuildVersion(VERSION, 1).number)
READ = [requires("read")]
WRITE = [requires("leads:write")]


async def records_build(conn: AsyncConnection[Any]) -> str:
    return await serving_build_name(conn, "lead_records", DEFAULT_BUILD)


def _shown(value: str | None) -> str | None:
    """A profile value as a person reads it: an old capture's bare e-mail domain or a phone known only to exist
    (``(sealed)``) is no value to show."""
    return None if value is None or value.startswith("@") or value == "(sealed)" else value


class LeadSummary(msgspec.Struct, frozen=True, kw_only=True):
    """A lead in a list. ``score``: as of the lead's last event (``/v1/leads/{id}/score`` gives it as of now)."""

    lead_id: str
    name: str | None
    email: str | None
    phone: str | None
    company: str | None
    owner: str | None
    status: str
    source: str
    channel: str
    score: float
    captured_at: dt.datetime
    last_activity_at: dt.datetime
    open_tasks: int
    open_alerts: int
    duplicate_of: str | None


class LeadPage(msgspec.Struct, frozen=True):
    """``sort``: the order applied (``-captured_at`` unless asked otherwise)."""

    leads: list[LeadSummary]
    next_cursor: str | None
    sort: str


class LeadView(msgspec.Struct, frozen=True, kw_only=True):
    """One lead: profile (clear, from the read model; ``null`` once erased), source, owner, status, score (as of its
    last event), activity, open tasks and alerts, and its links to duplicates."""

    lead_id: str
    name: str | None
    first_name: str | None
    last_name: str | None
    full_name: str | None
    email: str | None
    phone: str | None
    company: str | None
    job_title: str | None
    country: str | None
    channel: str
    source: str
    utm_campaign: str | None
    owner: str | None
    status: str
    score: float
    captured_at: dt.datetime
    last_touch_at: dt.datetime | None
    last_activity_at: dt.datetime
    open_tasks: list[str]
    alerts: list[Alert]
    duplicate_of: str | None
    merged_into: str | None
    merged_from: list[str]
    corrected_fields: list[str]
    corrected_at: dt.datetime | None
    version: int


def _summary(r: LeadRecord, open_alerts: int) -> LeadSummary:
    p = r.scored.profile
    return LeadSummary(
        lead_id=r.lead_id,
        name=r.name,
        email=_shown(p.email),
        phone=_shown(p.phone),
        company=p.company,
        owner=r.scored.owner,
        status=r.status,
        source=p.source,
        channel=r.channel,
        score=r.scored.score,
        captured_at=r.captured_at,
        last_activity_at=r.last_activity_at,
        open_tasks=len(r.open_tasks),
        open_alerts=open_alerts,
        duplicate_of=r.duplicate_of,
    )


async def _open_alerts(conn: AsyncConnection[Any], lead_ids: list[str]) -> dict[str, int]:
    """Open alerts per lead (none while the SLA worker has not run)."""
    if not lead_ids:
        return {}
    table = SlaSql(await sla_build(conn)).timers
    try:
        async with conn.transaction():
            cur = await conn.execute(
                f"SELECT subject_id, count(*) FROM {table} WHERE subject_type = 'lead' AND subject_id = ANY(%s) "  # noqa: S608
                "AND state = 'raised' AND resolved_at IS NULL GROUP BY subject_id",
                (lead_ids,),
            )
            return {str(k): int(n) for k, n in await cur.fetchall()}
    except UndefinedTable:
        return {}


_LEGACY = ("owner", "status", "cursor", "limit", "order")


@get("/leads", tags=["leads"], guards=READ)
async def list_leads(
    request: AnyRequest,
    owner: FromQuery[str | None] = None,
    status: Annotated[
        str | None, QueryParameter(description=f"one of {', '.join(STATUSES)} (default: all but merged)")
    ] = None,
    source: Annotated[str | None, QueryParameter(description="marketing source, else channel")] = None,
    captured_from: Annotated[dt.datetime | None, QueryParameter(description="captured at or after")] = None,
    captured_to: Annotated[dt.datetime | None, QueryParameter(description="captured before (business time)")] = None,
    score_min: FromQuery[float | None] = None,
    score_max: FromQuery[float | None] = None,
    q: Annotated[
        str | None, QueryParameter(min_length=1, max_length=100, description="in name, e-mail, company or phone")
    ] = None,
    duplicate_of: Annotated[str | None, QueryParameter(description="the leads flagged duplicates of this one")] = None,
    sort: Annotated[
        str | None, QueryParameter(description="captured_at, score or last_activity; prefix - for descending")
    ] = None,
    cursor: FromQuery[str | None] = None,
    limit: Annotated[int | None, QueryParameter(ge=1, le=500, description=f"at most {MAX_LIMIT}")] = None,
    order: Annotated[
        Literal["score"] | None, QueryParameter(description="score: the leads to call first, scored as of now")
    ] = None,
) -> LeadPage | RankedPage:
    """Leads with their profile, newest first by default: filter by ``owner``, ``status``, ``source``, capture time
    (``captured_from`` inclusive, ``captured_to`` exclusive), score range, ``duplicate_of``, and search ``q`` in name,
    e-mail, company and phone. ``sort`` (``-captured_at`` by default); ``next_cursor`` fetches the next page.
    ``order=score`` is the call list: the leads by their score as of now (``owner``, ``status``, ``cursor``,
    ``limit`` only)."""
    owner = owner_filter(request, owner)
    if order == "score":
        given = [k for k in request.query_params if k not in _LEGACY]
        if given:
            raise InputError.one(given[0], "not taken with order=score (owner, status, cursor and limit are)")
        return await ranked_page(request, owner, status or "open", cursor, limit or 50)
    if status is not None and status not in STATUSES:
        raise InputError.one("status", f"must be one of {', '.join(STATUSES)}")
    for name, value in (("score_min", score_min), ("score_max", score_max)):
        if value is not None and not math.isfinite(value):
            raise InputError.one(name, "must be a finite number")
    if duplicate_of is not None:
        check_id(duplicate_of, "duplicate_of")
    filters = LeadFilters(
        owner=owner,
        status=status,
        source=source,
        captured_from=captured_from,
        captured_to=captured_to,
        score_min=score_min,
        score_max=score_max,
        q=q,
        duplicate_of=duplicate_of,
    )
    order_by = parse_sort(sort, SORTS, DEFAULT_SORT)
    size = bounded_limit(limit)
    after = None if cursor is None else decode_cursor(cursor, order_by, msgspec.structs.asdict(filters))
    async with runtime(request).read_connection() as conn:
        page = await list_records(conn, await records_build(conn), filters, order_by, after, size)
        counts = await _open_alerts(conn, [r.lead_id for r in page.rows])
    summaries = [_summary(r, counts.get(r.lead_id, 0)) for r in page.rows]
    return LeadPage(summaries, page.next_cursor, order_by.token)


@get("/leads/{lead_id:str}", tags=["leads"], guards=[*READ, reaches("lead")])
async def lead_record(request: AnyRequest, lead_id: AggregateIdParam) -> Response[LeadView]:
    """One lead's record; ``ETag`` carries the version its record was folded at (send it as ``If-Match`` with a
    correction)."""
    async with runtime(request).read_connection() as conn:
        build = await records_build(conn)
        found = await load_records(conn, build, [lead_id])
        if lead_id not in found:
            raise Rejected("lead_id", "no such lead in the lead records", 404)
        absorbed = await merged_from(conn, build, lead_id)
        try:
            async with conn.transaction():
                open_alerts = await alerts(conn, await sla_build(conn), status="open", subject=("lead", lead_id))
        except UndefinedTable:
            open_alerts = []
    r = found[lead_id]
    p = r.scored.profile
    view = LeadView(
        lead_id=lead_id,
        name=r.name,
        first_name=r.first_name,
        last_name=r.last_name,
        full_name=r.full_name,
        email=_shown(p.email),
        phone=_shown(p.phone),
        company=p.company,
        job_title=p.job_title,
        country=p.country,
        channel=r.channel,
        source=p.source,
        utm_campaign=p.utm_campaign,
        owner=r.scored.owner,
        status=r.status,
        score=r.scored.score,
        captured_at=r.captured_at,
        last_touch_at=r.last_touch_at,
        last_activity_at=r.last_activity_at,
        open_tasks=list(r.open_tasks),
        alerts=[alert_of(t) for t in open_alerts],
        duplicate_of=r.duplicate_of,
        merged_into=r.merged_into,
        merged_from=absorbed,
        corrected_fields=list(r.corrected_fields),
        corrected_at=r.corrected_at,
        version=r.version,
    )
    return Response(view, headers={"ETag": f'"{r.version}"'})


@patch("/leads/{lead_id:str}", status_code=202, tags=["leads"], guards=[*WRITE, reaches("lead")])
async def correct_lead(
    request: AnyRequest, lead_id: AggregateIdParam, data: JSONBody[schemas.CorrectLead]
) -> Response[Any]:
    """Correct a lead's profile: ``lead.corrected.v1`` names the changed fields and carries their new values sealed
    with the lead's key, like the capture. ``If-Match`` must carry the version you last saw (409 if stale)."""
    given = {f: v for f in CORRECTABLE if (v := getattr(data, f)) is not msgspec.UNSET}
    if not given:
        raise InputError.one("body", "give at least one field to correct")
    correction = msgspec.convert({**given, "fields": list(given)}, LeadCorrected)
    command = cmd.CorrectLead(lead_id=lead_id, correction=correction)
    return accepted(await run_command(request, data, command, if_match="required"))


@post("/leads/{lead_id:str}/merge", status_code=202, tags=["leads"], guards=[*WRITE, reaches("lead")])
async def merge_lead(
    request: AnyRequest, lead_id: AggregateIdParam, data: JSONBody[schemas.MergeLead]
) -> Response[Any]:
    """Merge this lead (a duplicate) into lead ``into``, which survives: ``lead.merged.v1`` on this lead points at
    it; both histories stay. This lead then reads ``merged`` and leaves the default list."""
    return accepted(await run_command(request, data, cmd.MergeLeads(lead_id=lead_id, into=data.into)))


router = Router(path="/v1", route_handlers=[lead_record, correct_lead, merge_lead])
