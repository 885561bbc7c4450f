"""Meta Lead Ads leads get their fields from a real local HTTP server answering like the Graph API, once."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator

import httpx
import pytest
import structlog

from events import commands as cmd
from events import handlers
from events.aggregates import Rejected
from events.config import NatsSettings
from events.ids import derived_id
from events.ledger import Context, Ledger
from events.personal import ERASED, Vault
from events.store import EventStore
from events.types import AlertRaised, LeadAssigned, LeadCaptured, LeadDetailsFetched
from projections import routes, scores
from projections.routing import RoutingRule, RoutingRules
from projections.routing_store import RoutingProjection
from projections.scoring import FitRule, ScoringRules, fit_score, profile_from
from services.providers import meta
from services.providers.meta_graph import fetch_details, run_fetcher
from tests.builders import T0
from tests.conftest import FIXTURES, read_opened
from tests.graph_api import GraphApi, graph_api
from tests.projection_fixtures import FAST
from tests.waiting import eventually
from workers.engine import ProjectionEngine
from workers.routing import RoutingActor
from workers.settings import GraphSettings, Secrets, Settings

pytestmark = pytest.mark.integration

PAGE_ID = "516540199134611"
TOKEN = "EAAGm0PX4ZCpsBAPAGE-TOKEN-s3cr3t"
LEADGEN_ID = "5545971704561545"
LEAD_ID = derived_id("meta", LEADGEN_ID)
NOW = T0 + dt.timedelta(hours=1)
SCORING = ScoringRules(
    version=1,
    threshold=50,
    half_life_days=14,
    fit=[FitRule(name="work-mail", field="email_domain", points=60, equals="example.org")],
)
ROUTING = RoutingRules(rules=[RoutingRule(name="fit", min_score=50, owner="chen")], fallback="sales-lead")


@pytest.fixture
def graph() -> Iterator[GraphApi]:
    with graph_api((FIXTURES / "meta_lead_graph_response.json").read_bytes()) as api:
        yield api


def settings_for(graph: GraphApi, attempts: int = 4) -> GraphSettings:
    return GraphSettings(
        base_url=graph.url,
        version="v21.0",
        page_tokens=Secrets({PAGE_ID: TOKEN}),
        attempts=attempts,
        backoff=0.01,
        admin="maria",
    )


async def _captured_from_webhook(ledger: Ledger) -> None:
    """The lead as the webhook route captures it: ids only."""
    inbound = meta.parse((FIXTURES / "meta_leadgen_webhook.json").read_bytes())[0]
    assert inbound.lead.email is None and inbound.source_ref == LEADGEN_ID
    ctx = Context(actor="meta", source="meta", correlation_id="c-meta", now=NOW)
    lead = cmd.NewLead(LEAD_ID, inbound.lead, inbound.occurred_at, inbound.raw)
    await handlers.capture_leads(ledger, ctx, cmd.CaptureLeads(leads=[lead]))


def _fit(captured: LeadCaptured, source: str) -> float:
    return fit_score(SCORING, profile_from(captured, source))


async def test_a_meta_lead_gets_its_fields_once_and_scores_and_routing_see_them(
    store: EventStore, vault: Vault, graph: GraphApi
) -> None:
    ledger = Ledger(store, vault)
    await _captured_from_webhook(ledger)
    async with httpx.AsyncClient() as client:
        accepted = await fetch_details(ledger, client, settings_for(graph), LEAD_ID, NOW)
        assert accepted is not None and accepted.event_id == derived_id("details", LEAD_ID)
        # A redelivery, a restart or a second fetcher: nothing asked, nothing appended twice.
        assert await fetch_details(Ledger(store, vault), client, settings_for(graph), LEAD_ID, NOW) is None
    assert graph.requests == [(f"/v21.0/{LEADGEN_ID}", f"Bearer {TOKEN}")]
    again = cmd.RecordLeadDetails(lead_id=LEAD_ID, details=LeadDetailsFetched(provider="meta", email="x@example.org"))
    with pytest.raises(Rejected):
        await handlers.record_lead_details(Ledger(store, vault), Context("t", "system", "c", NOW), again)

    capture, fetched = [s.envelope for s in await store.read("lead", LEAD_ID)]
    assert isinstance(fetched.data, LeadDetailsFetched) and fetched.data.sealed is not None
    assert fetched.data.email is None and fetched.data.answers == {}  # sealed in the log
    assert (fetched.occurred_at, fetched.causation_id) == (capture.occurred_at, capture.event_id)
    opened = await read_opened(store, vault, LEAD_ID)
    details = opened[1].envelope.data
    assert isinstance(details, LeadDetailsFetched)
    assert (details.email, details.full_name, details.company) == (
        "james.oak@example.org",
        "James Oak",
        "Oak & Sons Joinery",
    )
    assert details.answers == {"what_is_your_budget?": "10k-50k"}

    [row] = scores.fold(opened, SCORING).values()
    assert row.profile.email == "james.oak@example.org" and row.fit == 60
    assert row.crossed_sequence == opened[1].sequence  # qualified on what was fetched
    table = routes.fold(opened[:1], ROUTING, _fit)
    assert table.leads[LEAD_ID].state == "awaiting_details"  # not routed on an empty capture
    routes.fold(opened[1:], ROUTING, _fit, table)
    assert (table.leads[LEAD_ID].state, table.leads[LEAD_ID].decided_owner) == ("pending", "chen")


async def test_an_expired_token_is_retried_logged_without_the_token_and_alerted_past_the_limit(
    store: EventStore, vault: Vault, graph: GraphApi
) -> None:
    ledger = Ledger(store, vault)
    await _captured_from_webhook(ledger)
    graph.error("expired_token", times=6)
    with structlog.testing.capture_logs() as logs:
        async with httpx.AsyncClient() as client:
            assert await fetch_details(ledger, client, settings_for(graph, attempts=3), LEAD_ID, NOW) is None
            assert await fetch_details(Ledger(store, vault), client, settings_for(graph, 3), LEAD_ID, NOW) is None
    assert len(graph.requests) == 6
    failed = [e for e in logs if e["event"] == "meta.fetch_failed"]
    assert [(e["kind"], e["code"], e["attempt"]) for e in failed[:3]] == [("expired_token", 190, n) for n in (1, 2, 3)]
    assert "Session has expired" in failed[0]["error"]
    assert TOKEN not in repr(logs)
    assert [e["kind"] for e in logs if e["event"] == "meta.fetch_gave_up"] == ["expired_token"] * 2
    [alert] = [s.envelope for s in await store.read("alert", derived_id("meta-fetch", LEAD_ID))]  # raised once
    assert alert.data == AlertRaised(
        kind="source_fetch", policy="meta_graph", subject_type="lead", subject_id=LEAD_ID, deadline=NOW, rep="maria"
    )
    assert len(await store.read("lead", LEAD_ID)) == 1  # no details recorded


async def test_a_rate_limit_backs_off_then_fetches(store: EventStore, vault: Vault, graph: GraphApi) -> None:
    ledger = Ledger(store, vault)
    await _captured_from_webhook(ledger)
    graph.error("rate_limit")
    graph.error("page_rate_limit")
    with structlog.testing.capture_logs() as logs:
        async with httpx.AsyncClient() as client:
            assert await fetch_details(ledger, client, settings_for(graph), LEAD_ID, NOW) is not None
    failed = [(e["kind"], e["code"], e["backoff"]) for e in logs if e["event"] == "meta.fetch_failed"]
    assert failed == [("rate_limit", 4, 0.01), ("rate_limit", 32, 0.02)]
    assert len(graph.requests) == 3
    assert [type(s.envelope.data) for s in await store.read("lead", LEAD_ID)] == [LeadCaptured, LeadDetailsFetched]


async def test_erasure_leaves_nothing_readable_of_the_fetched_fields(
    store: EventStore, vault: Vault, graph: GraphApi
) -> None:
    ledger = Ledger(store, vault)
    await _captured_from_webhook(ledger)
    async with httpx.AsyncClient() as client:
        await fetch_details(ledger, client, settings_for(graph), LEAD_ID, NOW)
    api = Context(actor="user:ana", source="api", correlation_id="c-erase", now=NOW)
    await handlers.erase_lead(ledger, api, cmd.EraseLead(lead_id=LEAD_ID))
    opened = await read_opened(store, vault, LEAD_ID)
    details = opened[1].envelope.data
    assert isinstance(details, LeadDetailsFetched)
    assert (details.email, details.full_name, details.company, details.answers) == (ERASED, ERASED, ERASED, {})
    [row] = scores.fold(opened, SCORING).values()
    assert row.erased and row.profile.email is None and row.profile.answers == {}
    # An erased lead is fetched no more.
    async with httpx.AsyncClient() as client:
        assert await fetch_details(Ledger(store, vault), client, settings_for(graph), LEAD_ID, NOW) is None
    assert len(graph.requests) == 1


async def test_the_meta_worker_fetches_what_routing_awaits_and_the_lead_is_routed_on_it(
    store: EventStore, vault: Vault, graph: GraphApi, nats_settings: NatsSettings, pg_dsn: str
) -> None:
    await _captured_from_webhook(Ledger(store, vault))
    engine = ProjectionEngine(RoutingProjection(ROUTING, _fit), nats_settings, pg_dsn, settings=FAST)
    config = Settings(nats=nats_settings, database_url=pg_dsn, meta_graph=settings_for(graph))
    stop = asyncio.Event()
    task = asyncio.gather(
        engine.run(stop),
        RoutingActor(engine, nats_settings, pg_dsn, poll=0.05).run(stop),
        run_fetcher(config, stop, 0.05),
    )
    try:

        async def routed() -> bool:
            return any(isinstance(s.envelope.data, LeadAssigned) for s in await store.read("lead", LEAD_ID))

        await eventually(routed)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    kinds = [s.envelope.data for s in await store.read("lead", LEAD_ID)]
    assert [type(k) for k in kinds] == [LeadCaptured, LeadDetailsFetched, LeadAssigned]
    assert kinds[2] == LeadAssigned(owner="chen", reason="rule")  # on the fetched e-mail's fit, not the fallback
    assert len(graph.requests) == 1
