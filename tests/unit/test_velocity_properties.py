"""Properties of the velocity figures over generated logs: win rate in [0, 1]; cumulative stays >= latest;
any-stage conversion >= all-stage. The fold's laws (idempotent, batch- and shard-split invariant) are in
test_fold_laws, over these logs."""

from __future__ import annotations

import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from events.envelope import StoredEvent
from events.types import (
    DealReassigned,
    DealReopened,
    Event,
    LeadAssigned,
    LeadCaptured,
    LeadDisqualified,
    LeadQualified,
    PipelineDefined,
    StageDefinition,
)
from projections.velocity import deal_at, fold
from projections.velocity_periods import PERIOD_KINDS, PeriodKind, period
from projections.velocity_report import GROUP_BYS, GroupBy, metrics_report, stays, weighted_by_close_month
from tests.projection_fixtures import amount, lost, moved, opened, stored, touch, won

STAGES = ["new", "qualified", "proposal", "odd"]
DEALS = [f"deal{i}" for i in range(6)]
LEADS = [f"lead{i}" for i in range(4)]
PIPELINES = ["p1", "p2"]
HOUR = dt.timedelta(hours=1)
T0 = dt.datetime(2025, 3, 1, tzinfo=dt.UTC)


@st.composite
def deal_event(draw: st.DrawFn) -> Event:
    kinds = ["open", "move", "move", "touch", "amount", "won", "lost", "reopen", "reassign"]
    kind = draw(st.sampled_from(kinds))
    stage = draw(st.sampled_from(STAGES))
    if kind == "reassign":
        return DealReassigned(owner=draw(st.sampled_from(["a", "b", "c"])))
    if kind == "reopen":
        return DealReopened(stage=stage, lost_stage="new", lost_reason="price")
    if kind == "open":
        return opened(
            stage=stage,
            amount=str(draw(st.integers(0, 10_000))),
            owner=draw(st.sampled_from(["a", "b"])),
            currency=draw(st.sampled_from(["EUR", "USD"])),
            pipeline_id=draw(st.sampled_from(PIPELINES)),
        )
    if kind == "move":
        return moved("x", stage)
    if kind == "touch":
        return touch()
    if kind == "amount":
        return amount("0", str(draw(st.integers(0, 10_000))), draw(st.sampled_from(["EUR", "USD"])))
    return won(stage) if kind == "won" else lost(stage, draw(st.sampled_from(["price", "timing"])))


def lead_event(draw: st.DrawFn) -> Event:
    kind = draw(st.sampled_from(["capture", "assign", "qualify", "disqualify"]))
    if kind == "capture":
        return LeadCaptured(email="x@y.io")
    if kind == "assign":
        return LeadAssigned(owner=draw(st.sampled_from(["a", "b"])))
    return LeadQualified() if kind == "qualify" else LeadDisqualified(reason="no")


@st.composite
def logs(draw: st.DrawFn) -> list[StoredEvent]:
    """Deal, lead and pipeline events, sequences strictly increasing with gaps, business times in any order."""
    events: list[StoredEvent] = []
    seq = 0
    for _ in range(draw(st.integers(0, 60))):
        seq += draw(st.integers(1, 3))
        at = T0 + draw(st.integers(0, 24 * 62)) * HOUR
        roll = draw(st.integers(0, 9))
        if roll == 0:
            stages = draw(st.lists(st.sampled_from(STAGES[:3]), min_size=1, max_size=3, unique=True))
            data: Event = PipelineDefined(
                name="P",
                stages=[
                    StageDefinition(id=s, name=s.title(), probability=draw(st.sampled_from([0.0, 0.25, 1.0])))
                    for s in stages
                ],
            )
            events.append(stored(seq, data, draw(st.sampled_from(PIPELINES)), at, "pipeline"))
        elif roll <= 3:
            events.append(stored(seq, lead_event(draw), draw(st.sampled_from(LEADS)), at, "lead"))
        else:
            events.append(stored(seq, draw(deal_event()), draw(st.sampled_from(DEALS)), at))
    return events


@settings(max_examples=200, deadline=None)
@given(logs(), st.integers(0, 24 * 62), st.sampled_from(PERIOD_KINDS), st.sampled_from(GROUP_BYS))
def test_figures_stay_in_range(events: list[StoredEvent], hours: int, kind: PeriodKind, group_by: GroupBy) -> None:
    state = fold(events)
    as_of = T0 + hours * HOUR
    p = period(kind, (T0 + dt.timedelta(days=20)).date(), "Europe/Warsaw")
    report = metrics_report(state.deals.values(), state.leads.values(), state.pipelines, p, group_by, as_of)
    for g in report.groups:
        assert g.win_rate is None or 0.0 <= g.win_rate <= 1.0
        assert g.lead_to_qualified is None or 0.0 <= g.lead_to_qualified <= 1.0
        assert g.deals_won + g.deals_lost <= sum(1 for d in state.deals.values() if d.closed_at is not None)
        assert (g.average_cycle_days is None) == (g.deals_won == 0)
        assert g.average_cycle_days is None or g.average_cycle_days >= 0
        assert all(v >= 0 for v in g.sales_velocity.values())
        for c in g.stage_conversion:
            assert c.reached_from >= c.any_stage >= c.all_stage >= 0
            assert c.any_stage_rate is None or c.all_stage_rate is None or c.any_stage_rate >= c.all_stage_rate
        for t in g.time_in_stage:
            assert t.deals > 0
            assert t.cumulative_mean >= t.latest_mean - 1e-9
            assert t.cumulative_median >= t.latest_median - 1e-9
            assert t.cumulative_p90 >= t.latest_p90 - 1e-9
            assert min(t.latest_mean, t.latest_median, t.latest_p90) >= 0
    rows = weighted_by_close_month(state.deals.values(), state.pipelines, as_of)
    assert all(0 <= r.weighted <= r.amount for r in rows)


@settings(max_examples=200, deadline=None)
@given(logs(), st.integers(0, 24 * 62))
def test_each_deals_cumulative_stay_is_at_least_its_latest(events: list[StoredEvent], hours: int) -> None:
    for deal in fold(events).deals.values():
        known = deal_at(deal, T0 + hours * HOUR)
        if known is None:
            continue
        assert all(v.left_at is None or v.left_at >= v.entered_at for v in known.visits)
        for stage in {v.stage for v in known.visits}:
            pair = stays(known.visits, stage)
            assert pair is None or pair[1] >= pair[0] >= 0
