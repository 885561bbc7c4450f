"""The application layer's handlers against the real nats-server: the workers' decisions land once, as before."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from events import commands as cmd
from events import handlers
from events.aggregates import Rejected
from events.ids import derived_id
from events.ledger import Context, Ledger
from events.personal import Vault
from events.store import EventStore
from events.types import AlertEscalated, AlertRaised, LeadAssigned, LeadCaptured, LeadQualified, StageDefinition
from tests.builders import T0
from tests.conftest import read_opened

pytestmark = pytest.mark.integration

NOW = T0 + dt.timedelta(hours=1)
API = Context(actor="user:ana", source="api", correlation_id="c-api", now=NOW)


def system(actor: str) -> Context:
    return Context(actor=actor, source="system", correlation_id="c-worker", now=NOW)


async def _captured(ledger: Ledger, lead_id: str) -> None:
    lead = cmd.NewLead(lead_id, LeadCaptured(email="a@example.com", company="Acme"), T0)
    await handlers.capture_leads(ledger, API, cmd.CaptureLeads(leads=[lead]))


async def test_routing_assigns_once_in_the_leads_correlation_at_its_capture_time(store: EventStore) -> None:
    ledger = Ledger(store)
    await _captured(ledger, "lead-1")
    route = cmd.RouteLead(lead_id="lead-1", owner="bo")
    accepted = await handlers.route_lead(ledger, system("routing-worker"), route)
    with pytest.raises(Rejected) as again:
        await handlers.route_lead(Ledger(store), system("routing-worker"), route)
    assert again.value.field == "owner"
    capture, assigned = [s.envelope for s in await store.read("lead", "lead-1")]
    assert assigned.event_id == accepted.event_id == derived_id("routing", "lead-1")
    assert (assigned.correlation_id, assigned.causation_id) == (capture.correlation_id, capture.event_id)
    assert (assigned.occurred_at, assigned.recorded_at) == (T0, NOW)
    assert (assigned.actor, assigned.source, assigned.data) == (
        "routing-worker",
        "system",
        LeadAssigned("bo", None, "rule"),
    )


async def test_a_manual_assignment_first_leaves_routing_nothing_to_do(store: EventStore) -> None:
    ledger = Ledger(store)
    await _captured(ledger, "lead-1")
    await handlers.handle(ledger, API, cmd.AssignLead(lead_id="lead-1", owner="ana"))
    with pytest.raises(Rejected):
        await handlers.route_lead(ledger, system("routing-worker"), cmd.RouteLead(lead_id="lead-1", owner="bo"))
    with pytest.raises(Rejected) as missing:
        await handlers.route_lead(ledger, system("routing-worker"), cmd.RouteLead(lead_id="nobody", owner="bo"))
    assert missing.value.status == 404


async def test_a_qualification_on_score_is_sealed_and_made_once(store: EventStore, vault: Vault) -> None:
    ledger = Ledger(store, vault)
    await _captured(ledger, "lead-1")
    crossed = T0 + dt.timedelta(minutes=5)
    qualify = cmd.QualifyOnScore(
        lead_id="lead-1",
        score=80.0,
        reason="answered budget 50k",
        build="scores_v1",
        crossed_sequence=7,
        occurred_at=crossed,
    )
    await handlers.qualify_on_score(ledger, system("scores-worker"), qualify)
    with pytest.raises(Rejected):
        await handlers.qualify_on_score(ledger, system("scores-worker"), qualify)
    capture, qualified = [s.envelope for s in await store.read("lead", "lead-1")]
    assert qualified.event_id == derived_id("scores", "scores_v1", "lead-1", "7")
    assert (qualified.correlation_id, qualified.occurred_at) == (capture.correlation_id, crossed)
    assert isinstance(qualified.data, LeadQualified) and qualified.data.reason is None  # sealed in the log
    opened = (await read_opened(store, vault, "lead-1"))[1].envelope.data
    assert opened == LeadQualified(reason="answered budget 50k", score=80.0)


async def test_an_alert_is_raised_and_escalated_once(store: EventStore) -> None:
    ledger = Ledger(store)
    alert = AlertRaised(
        kind="first_touch", policy="p", subject_type="lead", subject_id="lead-1", deadline=T0, rep="ana"
    )
    ctx = Context(actor="sla-worker", source="system", correlation_id="timer-1", now=NOW)
    escalate = cmd.EscalateAlert(alert_id="timer-1", manager="boss", rep="ana", occurred_at=T0 + dt.timedelta(hours=2))
    with pytest.raises(Rejected):
        await handlers.escalate_alert(ledger, ctx, escalate)  # not raised yet
    raise_ = cmd.RaiseAlert(alert_id="timer-1", alert=alert, occurred_at=T0)
    await handlers.raise_alert(ledger, ctx, raise_)
    await handlers.escalate_alert(ledger, ctx, escalate)
    for again in (
        handlers.raise_alert(Ledger(store), ctx, raise_),
        handlers.escalate_alert(Ledger(store), ctx, escalate),
    ):
        with pytest.raises(Rejected):
            await again
    raised, escalated = [s.envelope for s in await store.read("alert", "timer-1")]
    assert [raised.event_id, escalated.event_id] == [
        derived_id("alert", "raised", "timer-1"),
        derived_id("alert", "escalated", "timer-1"),
    ]
    assert (raised.occurred_at, escalated.occurred_at) == (T0, T0 + dt.timedelta(hours=2))
    assert escalated.data == AlertEscalated(manager="boss", rep="ana")
    assert {raised.correlation_id, escalated.correlation_id} == {"timer-1"}


async def test_a_deal_opens_in_the_pipelines_first_stage_with_its_leads_source(store: EventStore) -> None:
    ledger = Ledger(store)
    await _captured(ledger, "lead-1")
    stages = [
        StageDefinition(id="new", name="New", probability=0.1),
        StageDefinition(id="won", name="Won", probability=1),
    ]
    await handlers.handle(ledger, API, cmd.DefinePipeline(pipeline_id="p", name="P", stages=stages))
    opened = await handlers.handle(
        ledger, API, cmd.OpenDeal(pipeline_id="p", amount=Decimal(10), currency="EUR", lead_id="lead-1")
    )
    [deal] = [s.envelope.data for s in await store.read("deal", opened.aggregate_id)]
    assert (getattr(deal, "stage", None), getattr(deal, "lead_source", None)) == ("new", "api")
    with pytest.raises(Rejected) as no_lead:
        await handlers.handle(
            ledger, API, cmd.OpenDeal(pipeline_id="p", amount=Decimal(1), currency="EUR", lead_id="x")
        )
    assert (no_lead.value.field, no_lead.value.status) == ("lead_id", 422)
    keyed = Context(actor="user:ana", source="api", correlation_id="c", now=NOW, idempotency_key="k-1")
    first = await handlers.handle(ledger, keyed, cmd.OpenDeal(pipeline_id="p", amount=Decimal(1), currency="EUR"))
    retry = await handlers.handle(ledger, keyed, cmd.OpenDeal(pipeline_id="p", amount=Decimal(1), currency="EUR"))
    assert first.aggregate_id == retry.aggregate_id == derived_id("deal", "k-1") and retry.duplicate
