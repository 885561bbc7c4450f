"""Rebuild and verify against real servers: a rebuild under live writes takes over and equals the live model,
the live worker follows it, and verify finds a row someone changed behind the log's back."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest
from nats.js import JetStreamContext

from events.config import NatsSettings
from events.store import EventStore
from events.subjects import Naming
from projections.board_store import BoardProjection, read_state
from projections.versions import serving_build_name
from tests.projection_fixtures import FAST, append_concurrently, wait_caught_up, workload
from tests.waiting import eventually
from workers.rebuild import Progress, rebuild, verify
from workers.registry import serve_worker

pytestmark = pytest.mark.integration


async def test_a_rebuild_during_live_writes_takes_over_equal_to_the_live_model_and_the_worker_follows(
    store: EventStore,
    nats_conn: tuple[Any, JetStreamContext],
    nats_settings: NatsSettings,
    naming: Naming,
    pg_dsn: str,
) -> None:
    _, js = nats_conn
    await append_concurrently(store, workload(200, seed=11))
    stop = asyncio.Event()
    live = asyncio.create_task(serve_worker("board", "0/1", nats_settings, pg_dsn, FAST, stop, instance=""))
    try:
        await wait_caught_up(js, pg_dsn, naming, BoardProjection())
        writes = asyncio.create_task(append_concurrently(store, workload(200, seed=12)))
        seen: list[Progress] = []
        assert await rebuild(BoardProjection("r1"), nats_settings, pg_dsn, seen.append)
        await writes
        assert seen and seen[-1].serving and seen[-1].done <= seen[-1].total

        async def serving_r1() -> bool:
            async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
                return await serving_build_name(conn, "board", "") == "board_v1_r1"

        await eventually(serving_r1)
        # The live worker followed the rebuild: it keeps board_v1_r1 up to date from here on.
        await append_concurrently(store, workload(30, seed=13))
        await wait_caught_up(js, pg_dsn, naming, BoardProjection("r1"))
        result = await verify(BoardProjection("v1"), nats_settings, pg_dsn)
        assert result.live == "board_v1_r1" and result.same, result
        assert {t.table for t in result.tables} == {"deals", "deal_leads", "pipelines"}
        async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
            rebuilt = await read_state(conn, "board_v1_r1")
        assert len(rebuilt.deals) == 430  # every deal of the three workloads, the last ones from the follower

        # A row changed behind the log's back is found.
        async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
            await conn.execute("UPDATE board_v1_r1_deals SET amount = amount + 1 WHERE deal_id = 'w11-0'")
        result = await verify(BoardProjection("v2"), nats_settings, pg_dsn)
        deals = next(t for t in result.tables if t.table == "deals")
        assert not result.same and deals.only_live == 1 and deals.only_rebuilt == 1
        assert "w11-0" in deals.sample_only_live[0]
        async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
            cur = await conn.execute("SELECT count(*) FROM projection_checkpoints WHERE projection LIKE 'board_v1_v%'")
            assert await cur.fetchone() == (0,)  # the shadow builds are gone
    finally:
        stop.set()
        await asyncio.wait_for(live, 30)
