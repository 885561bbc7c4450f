"""The compliance projection fed by the engine from a real nats-server into a real PostgreSQL, in two shards:
its rows are the pure fold's, and a rebuild from the log finds the same."""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

import psycopg
import pytest
from nats.js import JetStreamContext

from events.config import NatsSettings
from events.envelope import Source
from events.store import EventStore
from events.subjects import Naming
from events.types import Event, LeadAssigned, LeadCaptured, LeadDisqualified, TouchpointLogged
from projections.compliance import fold
from projections.compliance_store import ComplianceProjection, read_state
from projections.contract import Shard
from tests.integration.test_velocity_projection import append
from tests.projection_fixtures import FAST, running, wait_caught_up
from tests.unit.test_compliance_fold import RULES
from tests.unit.test_velocity_scenario import Script
from workers.engine import ProjectionEngine
from workers.rebuild import verify

pytestmark = pytest.mark.integration

MON = dt.datetime(2026, 11, 23, 8, 0, tzinfo=dt.UTC)


CHANNELS: list[Source] = ["api", "meta", "typeform"]


def _event(kind: str, i: int, rng: random.Random) -> Event:
    if kind == "assign":
        return LeadAssigned(owner=rng.choice(["ana", "bob"]))
    if kind == "touch":
        return TouchpointLogged(touchpoint_id=f"t{i}", kind="call", direction="outbound")
    if kind == "note":
        return TouchpointLogged(touchpoint_id=f"n{i}", kind="note", direction="internal")
    return LeadDisqualified(reason="spam")


def script(leads: int = 40, seed: int = 5) -> Script:
    """Leads on three channels, each assigned, touched or disqualified at random times after its capture."""
    rng = random.Random(seed)
    out: Script = []
    for i in range(leads):
        lead_id, source = f"lead-{i}", rng.choice(CHANNELS)
        at = MON + dt.timedelta(minutes=rng.randrange(0, 3 * 24 * 60))
        out.append(("lead", lead_id, LeadCaptured(email=f"{i}@example.com"), at, source))
        for _ in range(rng.randrange(0, 4)):
            at += dt.timedelta(minutes=rng.randrange(1, 240))
            kind = rng.choice(["assign", "touch", "note", "disqualify"])
            out.append(("lead", lead_id, _event(kind, i, rng), at, source))
    return out


def engine(nats_settings: NatsSettings, pg_dsn: str, shard: Shard) -> ProjectionEngine:
    return ProjectionEngine(ComplianceProjection(RULES), nats_settings, pg_dsn, shard, FAST)


async def test_the_stored_facts_are_the_folds_in_two_shards_and_a_rebuild_finds_the_same(
    store: EventStore,
    nats_conn: tuple[Any, JetStreamContext],
    nats_settings: NatsSettings,
    naming: Naming,
    pg_dsn: str,
) -> None:
    _, js = nats_conn
    log = await append(store, script())
    expected = fold(log, RULES)
    assert expected.leads and any(lead.owners for lead in expected.leads.values())
    shards = [Shard(0, 2), Shard(1, 2)]
    async with running(engine(nats_settings, pg_dsn, shards[0])), running(engine(nats_settings, pg_dsn, shards[1])):
        await wait_caught_up(js, pg_dsn, naming, ComplianceProjection(RULES), shards)
    async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
        assert (await read_state(conn, ComplianceProjection(RULES).build)).leads == expected.leads

    result = await verify(ComplianceProjection(RULES, "v1"), nats_settings, pg_dsn)
    assert result.live == "compliance_v101" and result.same, result
    assert {t.table for t in result.tables} == {"leads", "owners"}
