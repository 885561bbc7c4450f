"""The first-touch SLA compliance report: outcomes and time to first touch of the leads captured in a period,
per rep, team, source or channel, from the facts of :mod:`projections.compliance` as known at a business time.
Pure: no I/O, no clock. Durations are in minutes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from typing import Literal

import msgspec

from projections.compliance import OUTCOMES, FirstTouchFacts, lead_at, outcome
from projections.stats import median, percentile, ratio
from projections.velocity_periods import Period

Group = Literal["overall", "rep", "team", "source", "channel"]
GROUPS: tuple[Group, ...] = ("overall", "rep", "team", "source", "channel")

_MINUTE = dt.timedelta(minutes=1)


class ComplianceGroup(msgspec.Struct, frozen=True, kw_only=True):
    """The figures of one group (``key`` None: unassigned, or the one group of ``overall``).

    ``leads`` = ``met + late + breached + within + cancelled``. ``on_time_rate`` = ``met / (met + late +
    breached)``, the decided leads (None when there are none). The times to first touch are over the touched
    leads (met and late): ``wall`` is elapsed real time from capture, ``business`` the working time in the
    calendar of the rep credited with the touch."""

    key: str | None
    leads: int
    met: int
    late: int
    breached: int
    within: int
    cancelled: int
    on_time_rate: float | None
    median_wall_minutes: float | None
    p90_wall_minutes: float | None
    median_business_minutes: float | None
    p90_business_minutes: float | None


class ComplianceReport(msgspec.Struct, frozen=True, kw_only=True):
    """Leads captured in ``[period_start, period_end)``, as known at ``as_of``, one group per key (None last)."""

    period_start: dt.datetime
    period_end: dt.datetime
    as_of: dt.datetime
    group: Group
    groups: list[ComplianceGroup]


def group_figures(key: str | None, leads: list[FirstTouchFacts], as_of: dt.datetime) -> ComplianceGroup:
    """The figures of one group of leads already cut at ``as_of``."""
    counts = dict.fromkeys(OUTCOMES, 0)
    for lead in leads:
        counts[outcome(lead, as_of)] += 1
    touched = [lead for lead in leads if lead.touched_at is not None]
    wall = [(lead.touched_at - lead.captured_at) / _MINUTE for lead in touched if lead.touched_at is not None]
    business = [lead.business_seconds / 60 for lead in touched if lead.business_seconds is not None]
    return ComplianceGroup(
        key=key,
        leads=len(leads),
        met=counts["met"],
        late=counts["late"],
        breached=counts["breached"],
        within=counts["within"],
        cancelled=counts["cancelled"],
        on_time_rate=ratio(counts["met"], counts["met"] + counts["late"] + counts["breached"]),
        median_wall_minutes=median(wall),
        p90_wall_minutes=percentile(wall, 0.9),
        median_business_minutes=median(business),
        p90_business_minutes=percentile(business, 0.9),
    )


def _key(group: Group) -> Callable[[FirstTouchFacts], str | None]:
    if group == "rep":
        return lambda lead: lead.assignment.owner if lead.assignment else None
    if group == "team":
        return lambda lead: lead.assignment.team if lead.assignment else None
    if group == "source":
        return lambda lead: lead.source
    if group == "channel":
        return lambda lead: lead.channel
    return lambda lead: None


def compliance_report(
    leads: Iterable[FirstTouchFacts], p: Period, group: Group, as_of: dt.datetime
) -> ComplianceReport:
    """The report for the leads captured in period ``p`` as known at ``as_of``; facts are cut at ``as_of`` here,
    so any superset of the relevant facts may be passed. A lead's rep and team are its owner's as known then
    (for a touched lead: the owner at its first touch)."""
    if group not in GROUPS:
        raise ValueError(f"group must be one of {GROUPS}")
    key = _key(group)
    groups: dict[str | None, list[FirstTouchFacts]] = {} if group != "overall" else {None: []}
    for lead in leads:
        known = lead_at(lead, as_of)
        if known is not None and p.start <= known.captured_at < p.end:
            groups.setdefault(key(known), []).append(known)
    ordered = sorted(groups, key=lambda k: (k is None, k or ""))
    return ComplianceReport(
        period_start=p.start,
        period_end=p.end,
        as_of=as_of,
        group=group,
        groups=[group_figures(k, groups[k], as_of) for k in ordered],
    )
