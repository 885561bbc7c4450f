"""The velocity projection fed by the engine from a real nats-server into a real PostgreSQL."""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

import msgspec
import psycopg
import pytest
from nats.js import JetStreamContext

from events.config import NatsSettings
from events.envelope import AggregateType, StoredEvent
from events.store import EventStore
from events.subjects import Naming
from events.types import LeadCaptured, LeadQualified
from projections.contract import Shard
from projections.velocity import fold
from projections.velocity_periods import explicit_period
from projections.velocity_queries import metrics, weighted_pipeline
from projections.velocity_report import GROUP_BYS, metrics_report, weighted_by_close_month
from projections.velocity_store import VelocityProjection, read_state
from tests.builders import envelope
from tests.projection_fixtures import FAST, append_concurrently, running, wait_caught_up, workload
from tests.projection_fixtures import Script as FixtureScript
from tests.unit.test_velocity_scenario import (
    AS_OF,
    EARLY,
    EXPECTED,
    EXPECTED_EARLY,
    EXPECTED_WEIGHTED,
    EXPECTED_WEIGHTED_MARCH_24,
    EXPECTED_WEIGHTED_MARCH_31,
    MARCH,
    Script,
    approx_equal,
    day,
    script,
)
from workers.checkpoints import ensure_schema
from workers.engine import ProjectionEngine

pytestmark = pytest.mark.integration


async def append(store: EventStore, s: Script) -> list[StoredEvent]:
    """Append each event with its aggregate's expected version and its source; return them as stored."""
    versions: dict[tuple[str, str], int] = {}
    out: list[StoredEvent] = []
    for kind, aggregate_id, data, at, source in s:
        env = msgspec.structs.replace(envelope(data, kind, aggregate_id, at), source=source)
        [appended] = await store.append([env], expected_version=versions.get((kind, aggregate_id), 0))
        versions[(kind, aggregate_id)] = appended.sequence
        out.append(
            StoredEvent(
                sequence=appended.sequence, subject=store.naming.aggregate_subject(kind, aggregate_id), envelope=env
            )
        )
    return out


def engine(nats_settings: NatsSettings, pg_dsn: str, shard: Shard | None = None) -> ProjectionEngine:
    return ProjectionEngine(VelocityProjection(), nats_settings, pg_dsn, shard, FAST)


async def test_a_scripted_month_gives_the_hand_computed_figures_now_and_as_of_earlier(
    store: EventStore,
    nats_conn: tuple[Any, JetStreamContext],
    nats_settings: NatsSettings,
    naming: Naming,
    pg_dsn: str,
) -> None:
    _, js = nats_conn
    log = await append(store, script())
    async with running(engine(nats_settings, pg_dsn)):
        await wait_caught_up(js, pg_dsn, naming, VelocityProjection())
    async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
        # A session in another time zone changes nothing: every instant is read back in UTC.
        await conn.execute("SET TIME ZONE 'Europe/Warsaw'")
        state = await read_state(conn)
        assert state == fold(log)

        [now] = (await metrics(conn, MARCH.start, MARCH.end, "overall", AS_OF, MARCH.previous_start)).groups
        approx_equal(now, EXPECTED)
        [early] = (await metrics(conn, MARCH.start, MARCH.end, "overall", EARLY, MARCH.previous_start)).groups
        approx_equal(early, EXPECTED_EARLY)
        for group_by in GROUP_BYS:
            for as_of in (AS_OF, EARLY, day(3, 20)):
                report = await metrics(conn, MARCH.start, MARCH.end, group_by, as_of, MARCH.previous_start)
                assert report == metrics_report(
                    state.deals.values(), state.leads.values(), state.pipelines, MARCH, group_by, as_of
                )

        assert await weighted_pipeline(conn, AS_OF) == EXPECTED_WEIGHTED
        assert await weighted_pipeline(conn, day(3, 31)) == EXPECTED_WEIGHTED_MARCH_31
        assert await weighted_pipeline(conn, day(3, 24)) == EXPECTED_WEIGHTED_MARCH_24
        assert await weighted_pipeline(conn, day(1, 1)) == []

        encoded = msgspec.json.decode(msgspec.json.encode(now))
        assert encoded["average_won_value"] == {"EUR": "1600.00"} and encoded["sales_velocity"] == {"EUR": "133.33"}

        cur = await conn.execute("SELECT projection, partition_key, last_sequence FROM projection_checkpoints")
        assert await cur.fetchall() == [("velocity_v1", "0/1", log[-1].sequence)]


async def test_applying_a_batch_twice_or_overlapping_changes_nothing(
    store: EventStore,
    nats_conn: tuple[Any, JetStreamContext],
    pg_dsn: str,
) -> None:
    log = await append(store, script())
    projection = VelocityProjection()
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        await ensure_schema(conn, projection)
        for batch in (log[:20], log[:20], log[10:], log, log[-1:]):
            async with conn.transaction():
                await projection.apply_batch(conn, batch)
        state = await read_state(conn)
        counts = []
        for table in ("deals", "stage_visits", "deal_amounts", "leads", "lead_owners", "pipelines"):
            cur = await conn.execute(f"SELECT count(*) FROM velocity_v1_{table}")
            counts.append((table, (await cur.fetchone() or [0])[0]))
    assert state == fold(log)
    assert counts == [
        ("deals", 8),
        ("stage_visits", 16),
        ("deal_amounts", 9),
        ("leads", 5),
        ("lead_owners", 1),
        ("pipelines", 1),
    ]


async def read_log(store: EventStore, aggregates: set[tuple[AggregateType, str]]) -> list[StoredEvent]:
    events = [e for kind, aggregate_id in sorted(aggregates) for e in await store.read(kind, aggregate_id)]
    return sorted(events, key=lambda e: e.sequence)


async def test_two_shards_on_a_bigger_log_store_the_facts_of_the_pure_fold(
    store: EventStore,
    nats_conn: tuple[Any, JetStreamContext],
    nats_settings: NatsSettings,
    naming: Naming,
    pg_dsn: str,
) -> None:
    _, js = nats_conn
    rng = random.Random(3)
    deals = workload(300)
    leads: FixtureScript = []
    start = deals[0][3]
    for i in range(120):
        at = start + dt.timedelta(hours=rng.randrange(0, 2000))
        leads.append(("lead", f"lead-{i}", LeadCaptured(email=f"l{i}@x.io"), at))
        if rng.random() < 0.4:
            leads.append(("lead", f"lead-{i}", LeadQualified(), at + dt.timedelta(hours=rng.randrange(1, 300))))
    await append_concurrently(store, deals + leads)
    shards = [Shard(0, 2), Shard(1, 2)]
    async with running(engine(nats_settings, pg_dsn, shards[0])), running(engine(nats_settings, pg_dsn, shards[1])):
        await wait_caught_up(js, pg_dsn, naming, VelocityProjection(), shards)
    log = await read_log(store, {(kind, aggregate_id) for kind, aggregate_id, _, _ in deals + leads})
    expected = fold(log)
    assert len(expected.deals) == 300 and len(expected.leads) == 120
    as_of = start + dt.timedelta(days=60)
    async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
        assert await read_state(conn) == expected
        for group_by in ("overall", "owner", "pipeline"):
            p_start, p_end = start + dt.timedelta(days=20), start + dt.timedelta(days=50)
            report = await metrics(conn, p_start, p_end, group_by, as_of)
            p = report.period_start, report.period_end, report.previous_start
            assert p == (p_start, p_end, p_start - dt.timedelta(days=30))
            assert report == metrics_report(
                expected.deals.values(),
                expected.leads.values(),
                expected.pipelines,
                explicit_period(p_start, p_end),
                group_by,
                as_of,
            )
        assert await weighted_pipeline(conn, as_of) == weighted_by_close_month(
            expected.deals.values(), expected.pipelines, as_of
        )
