"""Command decisions on folded aggregate state, without servers."""

from __future__ import annotations

from decimal import Decimal

import pytest

from events import aggregates as agg
from events.types import (
    AlertEscalated,
    AlertRaised,
    DealLost,
    DealWon,
    LeadAssigned,
    LeadCaptured,
    LeadQualified,
    PipelineDefined,
    StageDefinition,
    TaskCompleted,
    TaskScheduled,
)
from tests.builders import T0, deal_opened, envelope, stage_changed

PIPELINE = agg.fold_pipeline(
    [
        envelope(
            PipelineDefined(
                name="P",
                stages=[
                    StageDefinition(id="new", name="New", probability=0.1),
                    StageDefinition(id="proposal", name="Proposal", probability=0.5),
                ],
            ),
            aggregate_type="pipeline",
        )
    ]
)


def test_a_deal_folds_to_its_current_stage_and_status() -> None:
    history = [envelope(deal_opened("new")), envelope(stage_changed("new", "proposal"))]
    state = agg.fold_deal(history)
    assert (state.exists, state.stage, state.status, state.amount) == (True, "proposal", "open", Decimal("1000"))
    assert (
        agg.fold_deal([*history, envelope(DealWon(stage="proposal", amount=Decimal(5), currency="EUR"))]).status
        == "won"
    )


def test_stage_moves_are_checked_against_the_pipeline_and_the_deal() -> None:
    state = agg.fold_deal([envelope(deal_opened("new"))])
    assert agg.move_stage(state, PIPELINE, "proposal") == stage_changed("new", "proposal")
    with pytest.raises(agg.Rejected) as caught:
        agg.move_stage(state, PIPELINE, "nowhere")
    assert (caught.value.field, caught.value.status) == ("to_stage", 422)
    with pytest.raises(agg.Rejected):
        agg.move_stage(state, PIPELINE, "new")
    with pytest.raises(agg.Rejected) as missing:
        agg.move_stage(agg.DealState(), PIPELINE, "proposal")
    assert missing.value.status == 404


def test_closed_deals_refuse_every_change() -> None:
    lost = agg.fold_deal([envelope(deal_opened()), envelope(DealLost(stage="new", reason="price"))])
    for attempt in (
        lambda: agg.win_deal(lost, None),
        lambda: agg.lose_deal(lost, "x"),
        lambda: agg.change_amount(lost, Decimal(1), None),
        lambda: agg.move_stage(lost, PIPELINE, "proposal"),
    ):
        with pytest.raises(agg.Rejected) as caught:
            attempt()
        assert caught.value.status == 409 and caught.value.field == "status"


def test_winning_keeps_the_deal_amount_unless_given() -> None:
    state = agg.fold_deal([envelope(deal_opened())])
    assert agg.win_deal(state, None).amount == Decimal("1000")
    assert agg.win_deal(state, Decimal("900")).amount == Decimal("900")


def test_a_lead_qualifies_once() -> None:
    lead = agg.fold_lead([envelope(LeadCaptured(email="a@b.co"), aggregate_type="lead")])
    assert agg.qualify_lead(lead, LeadQualified()) == LeadQualified()
    qualified = agg.fold_lead(
        [envelope(LeadCaptured(), aggregate_type="lead"), envelope(LeadQualified(), aggregate_type="lead")]
    )
    with pytest.raises(agg.Rejected):
        agg.qualify_lead(qualified, LeadQualified())


def test_a_leads_source_is_the_marketing_source_it_named_else_its_channel() -> None:
    # A deal opened from the lead carries this as its lead_source, so metrics by source see the referral.
    named = agg.fold_lead([envelope(LeadCaptured(source="referral"), aggregate_type="lead")])
    plain = agg.fold_lead([envelope(LeadCaptured(), aggregate_type="lead")])
    assert (named.source, plain.source) == ("referral", "api")


def test_tasks_complete_once_and_only_when_scheduled() -> None:
    task = TaskScheduled(task_id="t1", title="Call back", due_at=T0)
    state = agg.fold_lead([envelope(LeadCaptured(), aggregate_type="lead"), envelope(task, aggregate_type="lead")])
    done = TaskCompleted(task_id="t1")
    assert agg.complete_task(state, done) == done
    with pytest.raises(agg.Rejected):
        agg.schedule_task(state, task)
    with pytest.raises(agg.Rejected) as missing:
        agg.complete_task(state, TaskCompleted(task_id="t2"))
    assert missing.value.status == 404


def test_pipeline_stage_ids_must_be_unique() -> None:
    twice = PipelineDefined(name="P", stages=[StageDefinition(id="a", name="A", probability=0.1)] * 2)
    with pytest.raises(agg.Rejected):
        agg.define_pipeline(twice)


def test_opening_needs_a_known_pipeline_and_stage() -> None:
    assert agg.open_deal(agg.DealState(), PIPELINE, deal_opened("new")) == deal_opened("new")
    with pytest.raises(agg.Rejected):
        agg.open_deal(agg.DealState(), agg.PipelineState(), deal_opened("new"))
    with pytest.raises(agg.Rejected):
        agg.open_deal(agg.DealState(), PIPELINE, deal_opened("zzz"))
    with pytest.raises(agg.Rejected):
        agg.open_deal(agg.fold_deal([envelope(deal_opened())]), PIPELINE, deal_opened("new"))


def test_routing_assigns_only_a_lead_nobody_owns_with_the_rule_as_reason() -> None:
    captured = envelope(LeadCaptured(email="a@example.com"), aggregate_type="lead", aggregate_id="lead-1")
    assert agg.route_lead(agg.fold_lead([captured]), "ana") == LeadAssigned(owner="ana", reason="rule")
    manual = envelope(LeadAssigned(owner="bo"), aggregate_type="lead", aggregate_id="lead-1")
    with pytest.raises(agg.Rejected) as owned:
        agg.route_lead(agg.fold_lead([captured, manual]), "ana")
    assert (owned.value.field, owned.value.status) == ("owner", 409)
    with pytest.raises(agg.Rejected) as missing:
        agg.route_lead(agg.LeadState(), "ana")
    assert missing.value.status == 404


ALERT = AlertRaised(kind="first_touch", policy="p", subject_type="lead", subject_id="lead-1", deadline=T0, rep="ana")


def test_an_alert_is_raised_once() -> None:
    assert agg.raise_alert(agg.fold_alert([]), ALERT) == ALERT
    raised = [envelope(ALERT, aggregate_type="alert", aggregate_id="t-1")]
    with pytest.raises(agg.Rejected) as again:
        agg.raise_alert(agg.fold_alert(raised), ALERT)
    assert (again.value.field, again.value.status) == ("alert_id", 409)


def test_an_alert_escalates_once_and_only_once_raised() -> None:
    raised = [envelope(ALERT, aggregate_type="alert", aggregate_id="t-1")]
    escalation = agg.escalate_alert(agg.fold_alert(raised), "boss", "ana")
    assert escalation == AlertEscalated(manager="boss", rep="ana")
    with pytest.raises(agg.Rejected) as twice:
        agg.escalate_alert(agg.fold_alert([*raised, envelope(escalation, aggregate_type="alert")]), "boss", "ana")
    assert twice.value.status == 409
    with pytest.raises(agg.Rejected) as not_raised:
        agg.escalate_alert(agg.fold_alert([]), "boss", "ana")
    assert not_raised.value.status == 404
