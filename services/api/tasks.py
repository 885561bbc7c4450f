"""A rep's day in one call: their open, overdue or due-today tasks on leads and deals, earliest due first."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from litestar import Router, get
from litestar.params import FromQuery, QueryParameter

from projections import tasks_store
from projections.sla_rules import SlaRules
from projections.tasks_store import TaskPage, TaskStatus
from projections.versions import serving_build_name
from services.api.common import AnyRequest, requires, runtime
from services.api.identity import owner_filter


def owners_day(owner: str | None, now: dt.datetime, rules: SlaRules) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) in UTC of the day it is ``now`` in the owner's team time zone (the rules' calendars; reps in
    no team, and no owner, by the default calendar)."""
    zone = rules.calendar_of(owner).zone
    day = now.astimezone(zone).date()
    start = dt.datetime.combine(day, dt.time(0), tzinfo=zone)
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0), tzinfo=zone)
    return start.astimezone(dt.UTC), end.astimezone(dt.UTC)


@get("/tasks", tags=["tasks"], guards=[requires("read")])
async def list_tasks(
    request: AnyRequest,
    owner: FromQuery[str | None] = None,
    status: Annotated[
        TaskStatus, QueryParameter(description="open (default), overdue, or due_today in the owner's time zone")
    ] = "open",
    cursor: FromQuery[str | None] = None,
    limit: Annotated[int | None, QueryParameter(description="1 to 200, default 50")] = None,
) -> TaskPage:
    """Open tasks (not completed), earliest due first, one keyset page at a time: all, ``overdue`` (due before
    now) or ``due_today`` (due today in the owner's team time zone, from the rules' calendars). A task's owner
    is the one it was scheduled for, else its lead's or deal's current owner."""
    now = dt.datetime.now(dt.UTC)
    owner = owner_filter(request, owner)
    today = owners_day(owner, now, runtime(request).settings.rules.sla)
    async with runtime(request).read_connection() as conn:
        build = await serving_build_name(conn, "tasks", tasks_store.BUILD)
        return await tasks_store.task_page(conn, owner, status, now, today, cursor, limit, build)


router = Router(path="/v1", route_handlers=[list_tasks])
