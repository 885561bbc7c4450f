"""The board, velocity, SLA and tasks folds follow a deal's edits: reassignment, correction and reopening, and a
reopened deal counts lost only while it is lost."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from events import aggregates as agg
from events.types import (
    DealReassigned,
    DealReopened,
    DealUpdated,
    PipelineDefined,
    StageDefinition,
    TaskScheduled,
)
from projections import board, sla, tasks, velocity
from projections.sla_rules import Policy, SlaRules
from projections.velocity_periods import explicit_period
from projections.velocity_report import metrics_report, weighted_by_close_month
from services import replay
from tests.projection_fixtures import lost, opened, stored, won

T0 = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)
PIPELINE = PipelineDefined(
    name="Sales",
    stages=[
        StageDefinition(id="new", name="New", probability=0.1, rotting_days=5),
        StageDefinition(id="proposal", name="Proposal", probability=0.5),
    ],
)


def test_the_board_row_follows_reassignment_corrections_and_reopening() -> None:
    events = [
        stored(1, opened(stage="new", owner="ana"), at=T0),
        stored(2, DealReassigned(owner="ben", previous_owner="ana"), at=T0 + DAY),
        stored(
            3,
            DealUpdated(changed=("name", "next_step"), name="Acme 2027", next_step="send the quote"),
            at=T0 + DAY,
        ),
        stored(4, DealUpdated(changed=("expected_close_date",), expected_close_date=dt.date(2027, 1, 31)), at=T0),
        stored(5, DealUpdated(changed=("next_step",)), at=T0 + 2 * DAY),
        stored(6, lost("new", "timing"), at=T0 + 3 * DAY),
        stored(7, DealReopened(stage="proposal", lost_stage="new", lost_reason="timing"), at=T0 + 4 * DAY),
    ]
    row = board.fold(events).deals["d1"]
    assert (row.owner, row.name, row.next_step, row.expected_close_date) == (
        "ben",
        "Acme 2027",
        None,
        dt.date(2027, 1, 31),
    )
    assert (row.status, row.stage, row.stage_entered_at, row.closed_at, row.lost_reason) == (
        "open",
        "proposal",
        T0 + 4 * DAY,
        None,
        None,
    )


def _lost_in(state: velocity.VelocityState, start: dt.datetime, end: dt.datetime, as_of: dt.datetime) -> int:
    report = metrics_report(state.deals.values(), [], state.pipelines, explicit_period(start, end), "overall", as_of)
    return sum(g.deals_lost for g in report.groups)


def test_a_reopened_deal_counts_lost_once_at_its_latest_loss() -> None:
    march, april, may = T0, T0 + 31 * DAY, T0 + 61 * DAY
    events = [
        stored(1, opened(stage="new"), at=march),
        stored(2, lost("new", "price"), at=march + 5 * DAY),
        stored(3, DealReopened(stage="new", lost_stage="new", lost_reason="price"), at=march + 10 * DAY),
        stored(4, lost("new", "timing"), at=april + 2 * DAY),
    ]
    state = velocity.fold(events)
    now = may
    assert _lost_in(state, march, april, now) == 0 and _lost_in(state, april, may, now) == 1
    # As known between the first loss and the reopening, it was lost in March, for the first reason.
    then = march + 7 * DAY
    assert _lost_in(state, march, april, then) == 1
    earlier = velocity.deal_at(state.deals["d1"], then)
    assert earlier is not None and (earlier.outcome, earlier.lost_reason) == ("lost", "price")
    between = velocity.deal_at(state.deals["d1"], march + 20 * DAY)
    assert between is not None and between.outcome is None and between.visits[-1].stage == "new"

    won_after = velocity.fold([*events[:3], stored(4, won("new"), at=april + 2 * DAY)])
    assert _lost_in(won_after, march, may, now) == 0
    report = metrics_report(won_after.deals.values(), [], {}, explicit_period(march, may), "overall", now)
    assert report.groups[0].deals_won == 1


RULES = SlaRules(
    policies=[
        Policy(name="rot", kind="deal_rotting", applies_to=["deal"]),
        Policy(name="touch", kind="next_touch", applies_to=["deal"], within_minutes=60),
    ]
)


def test_sla_clocks_follow_the_new_owner_and_restart_on_reopening() -> None:
    events = [
        stored(1, PIPELINE, "sales", T0, "pipeline"),
        stored(2, opened(stage="new", owner="ana"), at=T0),
        stored(3, DealReassigned(owner="ben", previous_owner="ana"), at=T0 + DAY),
    ]
    state = sla.fold(events, RULES)
    assert {t.rep for t in state.timers.values() if t.state == "pending"} == {"ben"}
    state = sla.fold([stored(4, lost("new"), at=T0 + 2 * DAY)], RULES, state)
    assert not [t for t in state.timers.values() if t.state == "pending"]
    reopened = stored(5, DealReopened(stage="new", lost_stage="new", lost_reason="price"), at=T0 + 3 * DAY)
    state = sla.fold([reopened], RULES, state)
    pending = [t for t in state.timers.values() if t.state == "pending"]
    assert {t.kind for t in pending} == {"deal_rotting", "next_touch"} and {t.rep for t in pending} == {"ben"}
    assert min(t.started_at for t in pending) == T0 + 3 * DAY


def test_tasks_follow_their_deals_owner_unless_they_name_their_own() -> None:
    due = T0 + DAY
    events = [
        stored(1, opened(owner="ana"), at=T0),
        stored(2, TaskScheduled(task_id="t1", title="Call", due_at=due), at=T0),
        stored(3, TaskScheduled(task_id="t2", title="Demo", due_at=due, owner="bo"), at=T0),
        stored(4, DealReassigned(owner="chen", previous_owner="ana"), at=T0),
    ]
    state = tasks.fold(events)
    assert {k[2]: t.owner for k, t in state.tasks.items()} == {"t1": "chen", "t2": "bo"}


def test_decisions_on_deal_edits() -> None:
    deal = agg.DealState(exists=True, owner="ana", pipeline_id="sales", stage="new")
    pipeline = agg.PipelineState(exists=True, stages=list(PIPELINE.stages))
    assert agg.reassign_deal(deal, "ben") == DealReassigned(owner="ben", previous_owner="ana")
    with pytest.raises(agg.Rejected) as same:
        agg.reassign_deal(deal, "ana")
    assert same.value.field == "owner"
    with pytest.raises(agg.Rejected) as unnamed:
        agg.update_deal(deal, DealUpdated(changed=("name",)))
    assert unnamed.value.field == "name"
    with pytest.raises(agg.Rejected) as still_open:
        agg.reopen_deal(deal, pipeline, None)
    assert still_open.value.status == 409
    gone = agg.DealState(exists=True, status="lost", lost_stage="new", lost_reason="price", pipeline_id="sales")
    assert agg.reopen_deal(gone, pipeline, None) == DealReopened(stage="new", lost_stage="new", lost_reason="price")
    with pytest.raises(agg.Rejected):
        agg.reopen_deal(agg.DealState(exists=True, status="won"), pipeline, None)


def _definition(probability: float) -> PipelineDefined:
    return PipelineDefined(name="Sales", stages=[StageDefinition(id="new", name="New", probability=probability)])


def test_an_imported_pipeline_history_weighs_deals_with_the_stages_in_force_then() -> None:
    # The 2026 definition was written first; the 2024 one came later, with an imported history.
    old, new = T0 - 700 * DAY, T0 - 10 * DAY
    events = [
        stored(1, _definition(0.9), "sales", new, "pipeline"),
        stored(2, _definition(0.1), "sales", old, "pipeline"),
        stored(3, opened(stage="new", amount="1000"), at=old + DAY),
    ]
    # The board weighs with the definition in force now (the latest business time), not the last appended.
    [column] = board.build_board(board.fold(events), as_of=T0)[0].columns
    assert column.probability == 0.9 and column.weighted == {"EUR": Decimal("900.00")}
    state = velocity.fold(events)
    [then] = weighted_by_close_month(state.deals.values(), state.pipelines, old + 2 * DAY)
    [now] = weighted_by_close_month(state.deals.values(), state.pipelines, T0)
    assert (then.weighted, now.weighted) == (Decimal("100.00"), Decimal("900.00"))
    # As the board stood before the 2026 definition existed: the 2024 stages.
    past = board.fold(e for e in events if e.envelope.occurred_at <= old + 2 * DAY)
    assert board.build_board(past, as_of=old + 2 * DAY)[0].columns[0].probability == 0.1


def test_a_corrected_close_date_moves_a_deal_out_of_the_slipped_list_from_the_correction_on() -> None:
    events = [
        stored(1, opened(stage="new"), at=T0),
        stored(2, DealUpdated(changed=("expected_close_date",), expected_close_date=dt.date(2026, 3, 10)), at=T0),
        stored(
            3, DealUpdated(changed=("expected_close_date",), expected_close_date=dt.date(2026, 4, 30)), at=T0 + 15 * DAY
        ),
    ]
    before = replay.board_as_of(events, T0 + 12 * DAY)
    assert [(d.deal_id, d.expected_close_date) for d in before.slipped] == [("d1", dt.date(2026, 3, 10))]
    assert replay.board_as_of(events, T0 + 20 * DAY).slipped == []


def test_velocity_by_owner_credits_the_owner_known_at_the_moment() -> None:
    events = [
        stored(1, opened(stage="new", owner="ana"), at=T0),
        stored(2, DealReassigned(owner="ben", previous_owner="ana"), at=T0 + 5 * DAY),
        stored(3, won("new"), at=T0 + 10 * DAY),
    ]
    state = velocity.fold(events)
    period = explicit_period(T0, T0 + 30 * DAY)

    def won_by(as_of: dt.datetime) -> dict[str | None, int]:
        report = metrics_report(state.deals.values(), [], {}, period, "owner", as_of)
        return {g.key: g.deals_won for g in report.groups}

    assert won_by(T0 + 20 * DAY) == {"ben": 1}
    assert velocity.deal_owner(velocity.deal_at(state.deals["d1"], T0 + DAY) or state.deals["d1"]) == "ana"
