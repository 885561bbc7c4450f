"""The velocity report: every figure of a period per group, and the weighted pipeline, computed from the facts
of :mod:`projections.velocity` as known at a business time. Pure: no I/O, no clock.

Money is never added across currencies. Money figures obtained by division are rounded half-even to 0.01; every
amount answered is in its currency's minor units (:mod:`projections.money`).
Durations are in days (86,400 s).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from decimal import Decimal
from fractions import Fraction
from typing import Literal, TypeVar

import msgspec

from projections.money import in_minor_units, per_currency
from projections.stats import (
    average_money,
    days,
    lead_velocity_rate,
    mean,
    median,
    percentile,
    ratio,
    sales_velocity,
    weighted_amount,
    win_rate,
)
from projections.velocity import (
    DealFacts,
    LeadFacts,
    PipelineVersion,
    StageVisit,
    current_amount,
    deal_at,
    deal_owner,
    lead_at,
    lead_owner,
    pipeline_at,
)
from projections.velocity_periods import Period

GroupBy = Literal["overall", "owner", "source", "campaign", "pipeline"]
GROUP_BYS: tuple[GroupBy, ...] = ("overall", "owner", "source", "campaign", "pipeline")

_TICK = dt.timedelta(microseconds=1)


def reached_any(stages: Sequence[str], a: str, b: str) -> bool:
    """Any-stage conversion of one deal from ``a`` to ``b``: it was ever in ``a`` and ever in ``b``, in any
    order, whatever it skipped or moved back through."""
    return a in stages and b in stages


def reached_all(stages: Sequence[str], order: Sequence[str], a: str, b: str) -> bool:
    """All-stage conversion of one deal from ``a`` to ``b`` (``a`` before ``b`` in ``order``): its visited
    ``stages`` (in time order, re-entries included) contain ``a``, then every stage between ``a`` and ``b`` in
    pipeline order, then ``b``, as a subsequence. Skipping a stage breaks the path unless the deal comes back
    through it and then reaches the later ones again; moving backward never undoes progress already made."""
    i, j = order.index(a), order.index(b)
    if i >= j:
        raise ValueError(f"{a!r} is not before {b!r} in the pipeline")
    wanted = iter(order[i : j + 1])
    target = next(wanted)
    for stage in stages:
        if stage == target:
            nxt = next(wanted, None)
            if nxt is None:
                return True
            target = nxt
    return False


def stays(visits: Sequence[StageVisit], stage: str) -> tuple[float, float] | None:
    """(latest, cumulative) days in ``stage`` if the deal's latest visit to it has ended: latest is that
    visit's length, cumulative the sum over all its visits to the stage. None if it never left the stage."""
    mine = [v for v in visits if v.stage == stage]
    if not mine or mine[-1].left_at is None:
        return None
    lengths = [days(v.left_at - v.entered_at) for v in mine if v.left_at is not None]
    return lengths[-1], math.fsum(lengths)


class StageConversion(msgspec.Struct, frozen=True, kw_only=True):
    """Of the cohort's deals that reached ``from_stage``: how many reached ``to_stage`` at all (any-stage) and
    how many went through every stage in between in order (all-stage)."""

    pipeline_id: str
    from_stage: str
    to_stage: str
    reached_from: int
    any_stage: int
    all_stage: int
    any_stage_rate: float | None
    all_stage_rate: float | None


class TimeInStage(msgspec.Struct, frozen=True, kw_only=True):
    """Days in one stage of one pipeline, over the deals whose latest stay in it ended in the period."""

    pipeline_id: str
    stage: str
    deals: int
    latest_mean: float
    latest_median: float
    latest_p90: float
    cumulative_mean: float
    cumulative_median: float
    cumulative_p90: float


class LeadSource(msgspec.Struct, frozen=True, kw_only=True):
    source: str
    captured: int
    qualified: int
    lead_to_qualified: float | None


class GroupMetrics(msgspec.Struct, frozen=True, kw_only=True):
    """Every figure for one group, for the period ``[start, end)``, counting only facts dated <= ``as_of``.

    ``key``: the deal's owner, the deal's ``lead_source`` or its pipeline, no campaign (a lead: its ``source``,
    its owner as of ``as_of``, its ``utm_campaign``, no pipeline); None for "overall" and for what has none.

    - ``deals_won``/``deals_lost``: deals whose win/loss is dated in the period; ``win_rate`` = won / (won +
      lost), None when both are 0. ``lost_by_reason``: the lost ones by reason.
    - ``average_cycle_days``/``median_cycle_days``: over deals won in the period, won_at - opened_at in days.
    - ``won_value``/``average_won_value``: sum and mean of the won amount per currency.
    - ``open_deals``(``_by_currency``): the *open qualified deals*: every deal open at the period end (opened
      before ``end`` and not closed before it, as known at ``min(as_of, end)``), by its currency then.
    - ``sales_velocity[c]`` = open_deals[c] x average_won_value[c] x win_rate / max(average_cycle_days, 1),
      money per day, for currencies with open and won deals (the floor: ``stats.CYCLE_FLOOR_DAYS``).
    - ``stage_conversion``: cohort = deals opened in the period, their stage visits up to ``as_of``; for each
      pipeline (definition in force at ``as_of``) and stages A before B: ``reached_from`` = deals ever in A;
      ``any_stage`` = of those, ever in B; ``all_stage`` = of those, whose visits contain A, every stage between,
      then B, in that order. Rates divide by ``reached_from``.
    - ``time_in_stage``: per pipeline and stage, deals whose latest stay in it ended in the period: latest
      stay and cumulative (all its stays) in days, mean, median and p90 (linear interpolation).
    - ``leads_captured``: leads captured in the period; ``leads_qualified``: of those, qualified by ``as_of``;
      ``lead_to_qualified`` = qualified / captured; ``lead_sources``: the same per source (lead volume).
    - ``qualified_this_period``/``qualified_last_period``: leads qualified in ``[start, end)`` and in the
      previous period; ``lead_velocity_rate`` = (this - last) / last, None when last is 0.
    """

    key: str | None
    deals_opened: int
    deals_won: int
    deals_lost: int
    win_rate: float | None
    average_cycle_days: float | None
    median_cycle_days: float | None
    won_value: dict[str, Decimal]
    average_won_value: dict[str, Decimal]
    open_deals: int
    open_deals_by_currency: dict[str, int]
    sales_velocity: dict[str, Decimal]
    lost_by_reason: dict[str, int]
    stage_conversion: list[StageConversion]
    time_in_stage: list[TimeInStage]
    leads_captured: int
    leads_qualified: int
    lead_to_qualified: float | None
    lead_sources: list[LeadSource]
    qualified_this_period: int
    qualified_last_period: int
    lead_velocity_rate: float | None


class VelocityReport(msgspec.Struct, frozen=True, kw_only=True):
    period_start: dt.datetime
    period_end: dt.datetime
    previous_start: dt.datetime
    as_of: dt.datetime
    group_by: GroupBy
    groups: list[GroupMetrics]


class WeightedMonth(msgspec.Struct, frozen=True, kw_only=True):
    """Open deals expected to close in ``month`` (``YYYY-MM``; None without a date), in one currency."""

    month: str | None
    currency: str
    deals: int
    amount: Decimal
    weighted: Decimal


def _in(t: dt.datetime | None, start: dt.datetime, end: dt.datetime) -> bool:
    return t is not None and start <= t < end


K = TypeVar("K", bound=Hashable)


def _count(keys: Iterable[K]) -> dict[K, int]:
    out: dict[K, int] = {}
    for k in keys:
        out[k] = out.get(k, 0) + 1
    return out


def _none_last(key: str | None) -> tuple[bool, str]:
    return key is None, key or ""


def stage_conversions(cohort: Sequence[DealFacts], definitions: Mapping[str, PipelineVersion]) -> list[StageConversion]:
    """Every ordered pair of defined stages (earlier, later) of each pipeline the cohort's deals are in; stages
    a definition does not name are left out (their order is unknown)."""
    out: list[StageConversion] = []
    for pipeline_id in sorted({d.pipeline_id for d in cohort}):
        definition = definitions.get(pipeline_id)
        if definition is None:
            continue
        order = [s.id for s in definition.stages]
        paths = [[v.stage for v in d.visits] for d in cohort if d.pipeline_id == pipeline_id]
        for i, a in enumerate(order):
            reached = [p for p in paths if a in p]
            for b in order[i + 1 :]:
                n_any = sum(reached_any(p, a, b) for p in reached)
                n_all = sum(reached_all(p, order, a, b) for p in reached)
                out.append(
                    StageConversion(
                        pipeline_id=pipeline_id,
                        from_stage=a,
                        to_stage=b,
                        reached_from=len(reached),
                        any_stage=n_any,
                        all_stage=n_all,
                        any_stage_rate=ratio(n_any, len(reached)),
                        all_stage_rate=ratio(n_all, len(reached)),
                    )
                )
    return out


def time_in_stage(deals: Sequence[DealFacts], start: dt.datetime, end: dt.datetime) -> list[TimeInStage]:
    """Per (pipeline, stage): latest and cumulative stays (:func:`stays`) of the deals whose latest visit to the
    stage ended in ``[start, end)``; deals are taken as known at the period end (pass them cut there)."""
    samples: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for deal in deals:
        for stage in dict.fromkeys(v.stage for v in deal.visits):
            last = [v for v in deal.visits if v.stage == stage][-1]
            pair = stays(deal.visits, stage)
            if pair is not None and _in(last.left_at, start, end):
                samples.setdefault((deal.pipeline_id, stage), []).append(pair)
    out = []
    for (pipeline_id, stage), pairs in sorted(samples.items()):
        latest = [p[0] for p in pairs]
        total = [p[1] for p in pairs]
        out.append(
            TimeInStage(
                pipeline_id=pipeline_id,
                stage=stage,
                deals=len(pairs),
                latest_mean=_f(mean(latest)),
                latest_median=_f(median(latest)),
                latest_p90=_f(percentile(latest, 0.9)),
                cumulative_mean=_f(mean(total)),
                cumulative_median=_f(median(total)),
                cumulative_p90=_f(percentile(total, 0.9)),
            )
        )
    return out


def _f(value: float | None) -> float:
    assert value is not None  # only called on non-empty samples
    return value


def group_metrics(
    key: str | None,
    deals: Sequence[DealFacts],
    leads: Sequence[LeadFacts],
    definitions: Mapping[str, PipelineVersion],
    p: Period,
    as_of: dt.datetime,
) -> GroupMetrics:
    """All figures of one group from facts already cut at ``as_of`` (see :func:`metrics_report`)."""
    start, end = p.start, p.end
    won = [d for d in deals if d.outcome == "won" and _in(d.closed_at, start, end)]
    lost = [d for d in deals if d.outcome == "lost" and _in(d.closed_at, start, end)]
    cycles = [(d.closed_at - d.opened_at) for d in won if d.closed_at is not None]
    cycle_total = sum(cycles, dt.timedelta())
    avg_cycle = Fraction(cycle_total // _TICK, len(cycles) * (dt.timedelta(days=1) // _TICK)) if cycles else None

    won_value: dict[str, Decimal] = {}
    won_count: dict[str, int] = {}
    for d in won:
        assert d.won_currency is not None and d.won_amount is not None
        won_value[d.won_currency] = won_value.get(d.won_currency, Decimal(0)) + d.won_amount
        won_count[d.won_currency] = won_count.get(d.won_currency, 0) + 1

    # Open at the period end: the deals as known just before ``end`` (and at ``as_of`` if that is earlier).
    cut = min(as_of, end - _TICK)
    at_end = [x for x in (deal_at(d, cut) for d in deals) if x is not None]
    open_by_currency = _count(current_amount(d).currency for d in at_end if d.outcome is None)
    velocity: dict[str, Decimal] = {}
    for currency, n in sorted(open_by_currency.items()):
        if currency in won_count and avg_cycle is not None:
            v = sales_velocity(n, Fraction(won_value[currency]) / won_count[currency], len(won), len(lost), avg_cycle)
            if v is not None:
                velocity[currency] = v

    cohort = [d for d in deals if _in(d.opened_at, start, end)]
    captured = [lead for lead in leads if _in(lead.captured_at, start, end)]
    qualified = [lead for lead in captured if lead.qualified_at is not None]
    by_source = _count(lead.source for lead in captured)
    qualified_by_source = _count(lead.source for lead in qualified)
    this_period = sum(_in(lead.qualified_at, start, end) for lead in leads)
    last_period = sum(_in(lead.qualified_at, p.previous_start, start) for lead in leads)
    cycle_days = [days(c) for c in cycles]
    return GroupMetrics(
        key=key,
        deals_opened=len(cohort),
        deals_won=len(won),
        deals_lost=len(lost),
        win_rate=win_rate(len(won), len(lost)),
        average_cycle_days=mean(cycle_days),
        median_cycle_days=median(cycle_days),
        won_value=per_currency(dict(sorted(won_value.items()))),
        average_won_value=per_currency({c: average_money(won_value[c], won_count[c]) for c in sorted(won_value)}),
        open_deals=sum(open_by_currency.values()),
        open_deals_by_currency=dict(sorted(open_by_currency.items())),
        sales_velocity=per_currency(velocity),
        lost_by_reason=dict(sorted(_count(d.lost_reason or "" for d in lost).items())),
        stage_conversion=stage_conversions(cohort, definitions),
        time_in_stage=time_in_stage(at_end, start, end),
        leads_captured=len(captured),
        leads_qualified=len(qualified),
        lead_to_qualified=ratio(len(qualified), len(captured)),
        lead_sources=[
            LeadSource(
                source=s,
                captured=n,
                qualified=qualified_by_source.get(s, 0),
                lead_to_qualified=ratio(qualified_by_source.get(s, 0), n),
            )
            for s, n in sorted(by_source.items())
        ],
        qualified_this_period=this_period,
        qualified_last_period=last_period,
        lead_velocity_rate=lead_velocity_rate(this_period, last_period),
    )


def _deal_key(group_by: GroupBy) -> Callable[[DealFacts], str | None]:
    if group_by == "owner":
        return deal_owner
    if group_by == "source":
        return lambda d: d.lead_source
    if group_by == "pipeline":
        return lambda d: d.pipeline_id
    # A deal keeps its lead's source but no campaign: under "campaign" its figures are in the group with key None.
    return lambda d: None


def _lead_key(group_by: GroupBy) -> Callable[[LeadFacts], str | None]:
    if group_by == "owner":
        return lead_owner
    if group_by == "source":
        return lambda lead: lead.source
    if group_by == "campaign":
        return lambda lead: lead.campaign
    # A lead belongs to no pipeline: under "pipeline" its figures are in the group with key None.
    return lambda lead: None


def metrics_report(
    deals: Iterable[DealFacts],
    leads: Iterable[LeadFacts],
    pipelines: Mapping[str, Sequence[PipelineVersion]],
    p: Period,
    group_by: GroupBy,
    as_of: dt.datetime,
) -> VelocityReport:
    """The report for period ``p`` as known at ``as_of``, one group per key (None last); facts are cut at
    ``as_of`` here, so any superset of the relevant facts may be passed."""
    if group_by not in GROUP_BYS:
        raise ValueError(f"group_by must be one of {GROUP_BYS}")
    known_deals = [x for x in (deal_at(d, as_of) for d in deals) if x is not None]
    known_leads = [x for x in (lead_at(lead, as_of) for lead in leads) if x is not None]
    definitions = {k: v for k, v in ((k, pipeline_at(vs, as_of)) for k, vs in pipelines.items()) if v is not None}
    deal_key, lead_key = _deal_key(group_by), _lead_key(group_by)
    deal_groups: dict[str | None, list[DealFacts]] = {}
    for d in known_deals:
        deal_groups.setdefault(deal_key(d), []).append(d)
    lead_groups: dict[str | None, list[LeadFacts]] = {}
    for lead in known_leads:
        lead_groups.setdefault(lead_key(lead), []).append(lead)
    keys = [None] if group_by == "overall" else sorted(deal_groups.keys() | lead_groups.keys(), key=_none_last)
    groups = [group_metrics(k, deal_groups.get(k, []), lead_groups.get(k, []), definitions, p, as_of) for k in keys]
    return VelocityReport(
        period_start=p.start,
        period_end=p.end,
        previous_start=p.previous_start,
        as_of=as_of,
        group_by=group_by,
        groups=groups,
    )


def weighted_by_close_month(
    deals: Iterable[DealFacts], pipelines: Mapping[str, Sequence[PipelineVersion]], as_of: dt.datetime
) -> list[WeightedMonth]:
    """Open deals at ``as_of`` by (expected close month, currency): count, sum of amounts and sum of
    ``amount x probability`` of the deal's stage in the pipeline definition in force at ``as_of`` (0 for a stage
    or pipeline it does not define). Amount, currency and stage are those known at ``as_of``."""
    rows: dict[tuple[str | None, str], tuple[int, Decimal, Decimal]] = {}
    for deal in deals:
        known = deal_at(deal, as_of)
        if known is None or known.outcome is not None:
            continue
        definition = pipeline_at(pipelines.get(known.pipeline_id, ()), as_of)
        stage = known.visits[-1].stage
        probability = next((s.probability for s in definition.stages if s.id == stage), 0.0) if definition else 0.0
        money_now = current_amount(known)
        month = known.expected_close_date.strftime("%Y-%m") if known.expected_close_date else None
        n, total, weighted = rows.get((month, money_now.currency), (0, Decimal(0), Decimal(0)))
        rows[(month, money_now.currency)] = (
            n + 1,
            total + money_now.amount,
            weighted + weighted_amount(money_now.amount, probability),
        )
    return [
        WeightedMonth(month=m, currency=c, deals=n, amount=in_minor_units(a, c), weighted=in_minor_units(w, c))
        for (m, c), (n, a, w) in sorted(rows.items(), key=lambda kv: (*_none_last(kv[0][0]), kv[0][1]))
    ]
