"""The routing worker against real servers: new leads get owners by the rules, once; manual always wins."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from nats.js import JetStreamContext

from events.config import NatsSettings
from events.store import EventStore
from events.subjects import Naming
from events.types import LeadAssigned, LeadCaptured
from projections.routing import RoutingRule, RoutingRules
from projections.routing_store import RoutingProjection, read_state
from projections.sla_rules import Team
from tests.builders import envelope
from tests.projection_fixtures import FAST, running, wait_caught_up
from tests.waiting import eventually
from workers.engine import ProjectionEngine
from workers.routing import RoutingActor

pytestmark = pytest.mark.integration

RULES = RoutingRules(
    rules=[RoutingRule(name="everyone", team="inside")],
    teams={"inside": Team(members=["ana", "bo"], manager="maria")},
)


@contextlib.asynccontextmanager
async def routing_worker(nats_settings: NatsSettings, dsn: str) -> AsyncIterator[RoutingActor]:
    engine = ProjectionEngine(RoutingProjection(RULES), nats_settings, dsn, settings=FAST)
    actor = RoutingActor(engine, nats_settings, dsn, poll=0.05)
    stop = asyncio.Event()
    task = asyncio.gather(engine.run(stop), actor.run(stop))
    try:
        yield actor
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def assignments(store: EventStore, lead_id: str) -> list[LeadAssigned]:
    return [e.envelope.data for e in await store.read("lead", lead_id) if isinstance(e.envelope.data, LeadAssigned)]


async def test_leads_are_routed_in_turn_once_and_a_manual_assignment_wins(
    store: EventStore,
    nats_conn: tuple[Any, JetStreamContext],
    nats_settings: NatsSettings,
    naming: Naming,
    pg_dsn: str,
) -> None:
    _, js = nats_conn
    for n in range(1, 5):
        await store.append([envelope(LeadCaptured(email=f"l{n}@example.com"), "lead", f"l{n}")], 0)
    await store.append([envelope(LeadAssigned(owner="zoe", reason="manual"), "lead", "l3")], None)

    async with routing_worker(nats_settings, pg_dsn) as actor:

        async def routed() -> bool:
            return all([await assignments(store, f"l{n}") for n in (1, 2, 4)])

        await eventually(routed)
        await wait_caught_up(js, pg_dsn, naming, actor.engine.projection)
    async with routing_worker(nats_settings, pg_dsn) as actor:  # a restart decides nothing again
        await wait_caught_up(js, pg_dsn, naming, actor.engine.projection)
        target = actor.ticks + 3

        async def polled() -> bool:
            return actor.ticks >= target

        await eventually(polled)

    got = {n: [(a.owner, a.reason) for a in await assignments(store, f"l{n}")] for n in range(1, 5)}
    # The turns run in capture order; l3's turn was taken by its decision, which the manual owner overrode.
    assert got == {1: [("ana", "rule")], 2: [("bo", "rule")], 3: [("zoe", "manual")], 4: [("bo", "rule")]}
    async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
        live = await read_state(conn, RoutingProjection(RULES).build)
    assert {k: v.state for k, v in live.items()} == {
        "l1": "assigned",
        "l2": "assigned",
        "l3": "manual",
        "l4": "assigned",
    }
    rebuild = RoutingProjection(RULES, instance="rebuild")
    async with running(ProjectionEngine(rebuild, nats_settings, pg_dsn, settings=FAST)):
        await wait_caught_up(js, pg_dsn, naming, rebuild)
    async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
        assert await read_state(conn, rebuild.build) == live
