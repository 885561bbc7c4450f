"""The scores worker against real servers: a threshold crossing qualifies once; a new rules version scores
beside the serving one, its difference can be read before it is switched on, and then it qualifies the
leads it newly qualifies, once."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from nats.js import JetStreamContext

from events.config import NatsSettings
from events.personal import Vault
from events.store import EventStore
from events.subjects import Naming
from events.types import LeadCaptured, LeadQualified, TouchpointLogged
from projections.scores_store import ScoresProjection
from projections.scoring import rules_from_toml
from projections.versions import switch
from services.config import Settings
from tests.builders import envelope
from tests.conftest import ADMIN_KEY, api_config, wait_healthy
from tests.projection_fixtures import FAST, wait_caught_up
from tests.waiting import eventually
from workers.engine import ProjectionEngine
from workers.scores import QualificationActor

pytestmark = pytest.mark.integration

V1 = rules_from_toml("""
[scoring]
version = 1
threshold = 30
half_life_days = 14
[[scoring.fit]]
name = "leader"
field = "job_title"
pattern = "head|director"
points = 20
[[scoring.engagement]]
name = "conversation"
kind = ["call", "meeting"]
points = 15
""")
# Version 2 also values engineers: lead "eng" newly qualifies under it.
V2 = rules_from_toml("""
[scoring]
version = 2
threshold = 30
half_life_days = 14
[[scoring.fit]]
name = "leader"
field = "job_title"
pattern = "head|director|engineer"
points = 20
[[scoring.engagement]]
name = "conversation"
kind = ["call", "meeting"]
points = 15
""")


@contextlib.asynccontextmanager
async def scores_worker(
    nats_settings: NatsSettings, dsn: str, projection: ScoresProjection
) -> AsyncIterator[QualificationActor]:
    engine = ProjectionEngine(projection, nats_settings, dsn, settings=FAST)
    actor = QualificationActor(engine, nats_settings, dsn, poll=0.05)
    stop = asyncio.Event()
    task = asyncio.gather(engine.run(stop), actor.run(stop))
    try:
        yield actor
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def qualifications(store: EventStore, lead_id: str) -> list[LeadQualified]:
    """The lead's qualifications as a reader allowed to see personal data reads them: the explanation quotes
    what the lead answered, so the log holds it sealed with the lead's key."""
    stored = [e.envelope for e in await store.read("lead", lead_id) if isinstance(e.envelope.data, LeadQualified)]
    assert all(isinstance(e.data, LeadQualified) and e.data.reason is None for e in stored)
    opened = await Vault(store.js, store.naming).unsealed(stored)
    return [e.data for e in opened if isinstance(e.data, LeadQualified)]


async def lead(store: EventStore, lead_id: str, title: str, at: dt.datetime) -> None:
    await store.append(
        [envelope(LeadCaptured(email=f"{lead_id}@acme.example", job_title=title), "lead", lead_id, at)], 0
    )
    call = TouchpointLogged(touchpoint_id="c1", kind="call", direction="outbound", outcome="talked")
    await store.append([envelope(call, "lead", lead_id, at + dt.timedelta(minutes=1))], None)


async def test_a_crossing_qualifies_once_and_a_new_rules_version_is_compared_before_it_is_switched_on(
    store: EventStore,
    nats_conn: tuple[Any, JetStreamContext],
    nats_settings: NatsSettings,
    naming: Naming,
    pg_dsn: str,
) -> None:
    from services.api.app import create_app

    _, js = nats_conn
    now = dt.datetime.now(dt.UTC)
    await lead(store, "boss", "Head of Sales", now)  # 20 fit + 15 call = 35 >= 30
    await lead(store, "eng", "Software Engineer", now)  # 15 under v1, 35 under v2
    v1, v2 = ScoresProjection(V1), ScoresProjection(V2)

    async with scores_worker(nats_settings, pg_dsn, v1) as actor:

        async def boss_qualified() -> bool:
            return bool(await qualifications(store, "boss"))

        await eventually(boss_qualified)
        await wait_caught_up(js, pg_dsn, naming, v1)
        target = actor.ticks + 3

        async def polled() -> bool:
            return actor.ticks >= target

        await eventually(polled)
    [q] = await qualifications(store, "boss")
    assert q.score == 35 and q.reason is not None and "+20 leader" in q.reason and "+15 conversation" in q.reason
    assert await qualifications(store, "eng") == []

    app = create_app(Settings(nats=nats_settings, config=api_config(), database_url=pg_dsn))
    async with AsyncTestClient[Litestar](app, raise_server_exceptions=False) as api:
        api.headers["Authorization"] = f"Bearer {ADMIN_KEY}"
        await wait_healthy(api)
        at = (now + dt.timedelta(minutes=1)).isoformat()
        boss = (await api.get("/v1/leads/boss/score", params={"as_of": at})).json()
        assert boss["score"] == 35 and boss["build"] == "scores_v101" and boss["qualified"] is True
        assert [(c["rule"], c["points"]) for c in boss["contributions"]] == [("leader", 20), ("conversation", 15)]
        ranked = (await api.get("/v1/leads", params={"order": "score", "status": "all"})).json()
        assert [x["lead_id"] for x in ranked["leads"]] == ["boss", "eng"]
        assert (await api.get("/v1/leads/nobody/score")).status_code == 404

        # Version 2 scores the whole log beside version 1, which keeps serving and nobody is qualified by it.
        async with scores_worker(nats_settings, pg_dsn, v2) as actor2:
            await wait_caught_up(js, pg_dsn, naming, v2)
            target = actor2.ticks

            diff = (await api.get("/v1/scores/diff")).json()
            assert diff["newly_qualifying"] == 1 and diff["no_longer_qualifying"] == 0
            assert [(c["lead_id"], c["old_score"], c["new_score"]) for c in diff["largest"]] == [("eng", 15, 35)]
            assert actor2.ticks == target  # not serving: it acts on nothing
            assert await qualifications(store, "eng") == []

            async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
                replaced = await switch(conn, "scores", v2.build)
            assert replaced is not None and replaced.build == "scores_v101"

            async def eng_qualified() -> bool:
                return bool(await qualifications(store, "eng"))

            await eventually(eng_qualified)
            await wait_caught_up(js, pg_dsn, naming, v2)
            target = actor2.ticks + 3

            async def polled2() -> bool:
                return actor2.ticks >= target

            await eventually(polled2)
        assert (await api.get("/v1/leads/eng/score")).json()["build"] == "scores_v102"
    assert len(await qualifications(store, "boss")) == 1 and len(await qualifications(store, "eng")) == 1
