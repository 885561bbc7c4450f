"""Follow-up SLA alerts over HTTP: open and recent alerts by rep, and the alerts on a lead or deal."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import msgspec
from litestar import Router, get
from litestar.params import FromQuery, QueryParameter
from psycopg import AsyncConnection
from psycopg.errors import UndefinedTable

from events.types import SlaKind
from projections.board import AlertBadge
from projections.notify_store import DeliveryRow, DeliveryState, NoticeRow, NoticeState, list_deliveries, list_notices
from projections.sla import Resolution, Timer
from projections.sla_store import TIMER_COLUMNS, VERSION, AlertStatus, SlaSql, alerts, timer_from_record
from projections.versions import BuildVersion, build_name, serving_build_name
from services.api.common import AnyRequest, requires, runtime
from services.api.identity import owner_filter
from services.errors import InputError

DEFAULT_BUILD = build_name("sla", BuildVersion(VERSION, 1).number)


class Alert(msgspec.Struct, frozen=True, kw_only=True):
    """A breached follow-up SLA. ``late_seconds``: from the deadline to when the alert was raised."""

    alert_id: str
    kind: SlaKind
    policy: str
    subject_type: Literal["lead", "deal"]
    subject_id: str
    rep: str | None
    deadline: dt.datetime
    raised_at: dt.datetime
    late_seconds: float
    status: Literal["open", "resolved"]
    escalated_to: str | None
    escalated_at: dt.datetime | None
    resolved_at: dt.datetime | None
    resolution: Resolution | None
    task_id: str | None
    stage: str | None


class AlertPage(msgspec.Struct, frozen=True):
    alerts: list[Alert]
    next_cursor: str | None


def alert_of(t: Timer) -> Alert:
    assert t.raised_at is not None
    return Alert(
        alert_id=t.timer_id,
        kind=t.kind,
        policy=t.policy,
        subject_type=t.subject_type,
        subject_id=t.subject_id,
        rep=t.rep,
        deadline=t.deadline,
        raised_at=t.raised_at,
        late_seconds=round((t.raised_at - t.deadline).total_seconds(), 3),
        status="open" if t.resolved_at is None else "resolved",
        escalated_to=t.escalated_to,
        escalated_at=t.escalated_at,
        resolved_at=t.resolved_at,
        resolution=t.resolution,
        task_id=t.task_id,
        stage=t.stage,
    )


class _Cursor(msgspec.Struct, frozen=True, array_like=True):
    raised_at: dt.datetime
    alert_id: str


def _encode(t: Timer) -> str:
    assert t.raised_at is not None
    raw = msgspec.json.encode(_Cursor(t.raised_at, t.timer_id))
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(text: str) -> tuple[dt.datetime, str]:
    try:
        c = msgspec.json.decode(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)), type=_Cursor)
    except (binascii.Error, ValueError, msgspec.DecodeError) as exc:
        raise InputError.one("cursor", "invalid alerts cursor") from exc
    return c.raised_at, c.alert_id


async def sla_build(conn: AsyncConnection[Any]) -> str:
    return await serving_build_name(conn, "sla", DEFAULT_BUILD)


async def open_alerts_by_deal(conn: AsyncConnection[Any], deal_ids: Sequence[str]) -> dict[str, tuple[AlertBadge, ...]]:
    """Open alerts of these deals (for the board's cards); empty when the SLA worker has not run yet."""
    if not deal_ids:
        return {}
    table = SlaSql(await sla_build(conn)).timers
    try:
        async with conn.transaction():
            cur = await conn.execute(
                f"SELECT {TIMER_COLUMNS} FROM {table} WHERE subject_type = 'deal' AND subject_id = ANY(%s) "  # noqa: S608
                "AND state = 'raised' AND resolved_at IS NULL ORDER BY raised_at",
                (list(deal_ids),),
            )
            rows = await cur.fetchall()
    except UndefinedTable:
        return {}
    out: dict[str, tuple[AlertBadge, ...]] = {}
    for r in rows:
        t = timer_from_record(r)
        badge = AlertBadge(
            alert_id=t.timer_id, kind=t.kind, rep=t.rep, deadline=t.deadline, escalated_to=t.escalated_to
        )
        out[t.subject_id] = (*out.get(t.subject_id, ()), badge)
    return out


@get("/alerts", tags=["alerts"], guards=[requires("read")])
async def list_alerts(
    request: AnyRequest,
    rep: Annotated[str | None, QueryParameter(description="a rep: alerts for them or escalated to them")] = None,
    status: FromQuery[AlertStatus] = "open",
    lead_id: FromQuery[str | None] = None,
    deal_id: FromQuery[str | None] = None,
    cursor: FromQuery[str | None] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
) -> AlertPage:
    """Alerts raised by the SLA worker, newest first: ``status`` open (the default), resolved or all; for one
    ``rep`` (raised for them or escalated to them), one lead or one deal. ``next_cursor`` fetches the next page."""
    if lead_id is not None and deal_id is not None:
        raise InputError.one("deal_id", "give lead_id or deal_id, not both")
    subject = ("lead", lead_id) if lead_id is not None else ("deal", deal_id) if deal_id is not None else None
    before = _decode(cursor) if cursor is not None else None
    # A signed-in user who does not see everyone's reads the alerts of a rep they reach (their own by default).
    rep = owner_filter(request, rep)
    async with runtime(request).read_connection() as conn:
        rows = await alerts(conn, await sla_build(conn), rep, status, subject, before, limit + 1)
    page = rows[:limit]
    return AlertPage([alert_of(t) for t in page], _encode(page[-1]) if len(rows) > limit else None)


@get("/notifications", tags=["alerts"], guards=[requires("read")])
async def list_notifications(
    request: AnyRequest,
    recipient: FromQuery[str | None] = None,
    status: FromQuery[DeliveryState | None] = None,
    event_id: FromQuery[str | None] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
) -> list[DeliveryRow]:
    """What the notify worker sent (or is still trying to send), newest first, with every attempt: when, the
    answer (HTTP status or error) and how long it took."""
    for name, value in (("recipient", recipient), ("event_id", event_id)):
        if value is not None and "\x00" in value:
            # PostgreSQL text cannot hold NUL: refused here rather than failing in the driver (a 500).
            raise InputError.one(name, "must not contain NUL characters")
    async with runtime(request).read_connection() as conn:
        return await list_deliveries(conn, recipient, status, event_id, limit)


@get("/notices", tags=["alerts"], guards=[requires("read")])
async def list_notice_states(
    request: AnyRequest,
    status: FromQuery[NoticeState | None] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
) -> list[NoticeRow]:
    """Alerts and qualified leads the notify worker is to announce, newest first: ``waiting`` for the lead or deal
    to have an owner, or ``addressed`` (to whom, and why: ``owner``, ``named`` or ``unassigned``)."""
    async with runtime(request).read_connection() as conn:
        try:
            async with conn.transaction():
                return await list_notices(conn, status, limit)
        except UndefinedTable:
            return []  # the notify worker has not run yet


router = Router(path="/v1", route_handlers=[list_alerts, list_notifications, list_notice_states])
