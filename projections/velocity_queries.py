"""The velocity figures read back from the stored facts: the report of a period and the weighted pipeline.

Only the facts that can matter are selected (business time <= ``as_of``); :mod:`projections.velocity_report`
computes the figures from them, the same formulas the pure tests check.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from psycopg import AsyncConnection

from projections.instants import aware_utc
from projections.velocity_periods import Period, explicit_period
from projections.velocity_report import GroupBy, VelocityReport, WeightedMonth, metrics_report, weighted_by_close_month
from projections.velocity_store import BUILD, VelocitySql, select_deals, select_leads, select_pipelines


async def metrics(
    conn: AsyncConnection[Any],
    period_start: dt.datetime,
    period_end: dt.datetime,
    group_by: GroupBy = "overall",
    as_of: dt.datetime | None = None,
    previous_start: dt.datetime | None = None,
    build: str = BUILD,
) -> VelocityReport:
    """Every velocity figure for ``[period_start, period_end)`` as known at ``as_of`` (business time; default
    now), overall or per owner, lead source or pipeline. ``previous_start`` begins the period the lead velocity
    rate compares with (``[previous_start, period_start)``; default: the same length before). Pass the bounds
    of :func:`projections.velocity_periods.period` for a calendar period in a time zone. Raises ``ValueError`` on
    naive or inverted bounds or an unknown ``group_by``."""
    p = explicit_period(period_start, period_end)
    if previous_start is not None:
        if previous_start.tzinfo is None or not previous_start < p.start:
            raise ValueError("previous_start must be an aware instant before period_start")
        p = Period(start=p.start, end=p.end, previous_start=previous_start.astimezone(dt.UTC))
    as_of = dt.datetime.now(dt.UTC) if as_of is None else aware_utc(as_of, "as_of")
    # Every deal that can count: opened before the period ends (and by as_of), and not closed before it began.
    t = VelocitySql(build).tables
    deals = await select_deals(
        conn,
        t,
        "d.opened_at < %(end)s AND d.opened_at <= %(as_of)s "
        "AND (d.closed_at IS NULL OR d.closed_at >= %(start)s OR d.closed_at > %(as_of)s)",
        {"start": p.start, "end": p.end, "as_of": as_of},
    )
    leads = await select_leads(
        conn,
        t,
        "l.captured_at <= %(as_of)s AND ((l.captured_at >= %(start)s AND l.captured_at < %(end)s) "
        "OR (l.qualified_at >= %(previous)s AND l.qualified_at < %(end)s))",
        {"start": p.start, "end": p.end, "previous": p.previous_start, "as_of": as_of},
    )
    pipelines = await select_pipelines(conn, t, "p.defined_at <= %(as_of)s", {"as_of": as_of})
    return metrics_report(deals.values(), leads.values(), pipelines, p, group_by, as_of)


async def weighted_pipeline(
    conn: AsyncConnection[Any], as_of: dt.datetime | None = None, build: str = BUILD
) -> list[WeightedMonth]:
    """Open deals at ``as_of`` (default now) by expected close month and currency: count, amount, and amount x
    stage probability (see :func:`projections.velocity_report.weighted_by_close_month`)."""
    as_of = dt.datetime.now(dt.UTC) if as_of is None else aware_utc(as_of, "as_of")
    t = VelocitySql(build).tables
    deals = await select_deals(
        conn, t, "d.opened_at <= %(as_of)s AND (d.closed_at IS NULL OR d.closed_at > %(as_of)s)", {"as_of": as_of}
    )
    pipelines = await select_pipelines(conn, t, "p.defined_at <= %(as_of)s", {"as_of": as_of})
    return weighted_by_close_month(deals.values(), pipelines, as_of)
