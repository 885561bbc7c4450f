"""First-touch SLA compliance over HTTP: met on time, late, breached, open, and time to first touch."""

from __future__ import annotations

import datetime as dt

from litestar import Router, get
from litestar.params import FromQuery

from projections import compliance_store
from projections.compliance_report import ComplianceReport, Group
from projections.versions import serving_build_name
from services.api.common import AnyRequest, runtime
from services.api.reads import (
    READ,
    AsOf,
    DateParam,
    FromParam,
    PeriodKind,
    ToParam,
    TzParam,
    _as_of,
    chosen_period,
    period_errors,
)


@get("/metrics/sla", tags=["metrics"], guards=READ)
async def sla_compliance(
    request: AnyRequest,
    period: FromQuery[PeriodKind | None] = "month",
    date: DateParam = None,
    tz: TzParam = "UTC",
    start: FromParam = None,
    end: ToParam = None,
    group: FromQuery[Group] = "overall",
    as_of: AsOf = None,
) -> ComplianceReport:
    """First-touch SLA of the leads captured in a calendar period in ``tz`` (or an explicit ``from``/``to``
    range), overall or per rep, team, source or channel, counting only what was known at ``as_of``: met on time,
    late, breached, within (not yet due), cancelled, on-time rate, and median and p90 minutes to first touch in
    wall and business time. Definitions in docs/read-models.md."""
    when = _as_of(as_of) or dt.datetime.now(dt.UTC)
    with period_errors():
        chosen = chosen_period(period, date, tz, start, end)
        async with runtime(request).read_connection() as conn:
            build = await serving_build_name(conn, "compliance", compliance_store.BUILD)
            return await compliance_store.report(conn, chosen, group, when, build)


router = Router(path="/v1", route_handlers=[sla_compliance])
