"""Versioned read models: a new version rebuilds into its own tables while the old one serves, then takes over."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import psycopg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from nats.js import JetStreamContext

from events.config import NatsSettings
from events.store import EventStore
from events.subjects import Naming
from projections.board_queries import board
from projections.board_store import BoardProjection, read_state
from projections.contract import CHECKPOINT_DDL, Shard
from projections.versions import (
    BUILDS_DDL,
    VERSIONS_DDL,
    BuildConflict,
    claim,
    recorded_rules,
    register,
    serving_build,
    serving_build_name,
    try_take_over,
)
from services.config import Settings
from tests.conftest import ADMIN_KEY, api_config, wait_healthy
from tests.projection_fixtures import FAST, append_concurrently, running, wait_caught_up, workload
from tests.waiting import eventually
from workers.engine import ProjectionEngine
from workers.rebuild import rebuild, verify
from workers.registry import build_rules, serve_worker

pytestmark = pytest.mark.integration


class BoardV2(BoardProjection):
    """The board with its version bumped, as a change to its fold would: same rows, new tables."""

    version = 3


async def serving(dsn: str) -> str | None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        build = await serving_build(conn, "board")
        return None if build is None else build.build


async def test_a_new_version_builds_beside_the_serving_one_and_takes_over_when_caught_up(
    store: EventStore,
    nats_conn: tuple[Any, JetStreamContext],
    nats_settings: NatsSettings,
    naming: Naming,
    pg_dsn: str,
) -> None:
    _, js = nats_conn
    await append_concurrently(store, workload(150, seed=3))
    v1, v2 = BoardProjection(), BoardV2()
    async with running(ProjectionEngine(v1, nats_settings, pg_dsn, settings=FAST)) as old:
        await wait_caught_up(js, pg_dsn, naming, v1)
        assert await serving(pg_dsn) == "board_v2"  # the first build of a projection serves from its start

        # v2 starts from the beginning of the log while v1 keeps serving and both follow live writes.
        async with running(ProjectionEngine(v2, nats_settings, pg_dsn, settings=FAST)) as new:
            await append_concurrently(store, workload(150, seed=4))
            await eventually(lambda: serving_is(pg_dsn, "board_v3"))
            assert new.serving

            # The old worker, still running and caught up, keeps trying and must not take the readers back.
            async def old_saw_it() -> bool:
                return old.superseded_by == "board_v3" and not old.serving

            await eventually(old_saw_it)
            await append_concurrently(store, workload(20, seed=5))
            await wait_caught_up(js, pg_dsn, naming, v1)
            await wait_caught_up(js, pg_dsn, naming, v2)
            assert await serving(pg_dsn) == "board_v3"

    async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
        rows_v1, rows_v2 = await read_state(conn, "board_v2"), await read_state(conn, "board_v3")
        assert rows_v2.deals and rows_v2 == rows_v1
        # Readers follow the pointer: with v1's tables gone the board still answers, from v2's.
        await conn.execute("DROP TABLE board_v2_deals, board_v2_pipelines")
        await conn.commit()
        build = await serving_build_name(conn, "board", "board_v2")
        assert build == "board_v3"
        columns = await board(conn, build=build)
        assert sum(c.count for b in columns for c in b.columns) == sum(
            1 for d in rows_v2.deals.values() if d.status == "open"
        )


async def serving_is(dsn: str, build: str) -> bool:
    return await serving(dsn) == build


async def test_the_api_reads_the_serving_build_and_reports_every_build(
    store: EventStore,
    nats_conn: tuple[Any, JetStreamContext],
    nats_settings: NatsSettings,
    naming: Naming,
    pg_dsn: str,
) -> None:
    from services.api.app import create_app

    _, js = nats_conn
    await append_concurrently(store, workload(40, seed=8))
    async with running(ProjectionEngine(BoardProjection(), nats_settings, pg_dsn, settings=FAST)):
        await wait_caught_up(js, pg_dsn, naming, BoardProjection())
    async with running(ProjectionEngine(BoardV2(), nats_settings, pg_dsn, settings=FAST)) as new:
        await eventually(lambda: serving_is(pg_dsn, "board_v3"))
        assert new.serving
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        # Only v2's rows can answer now: a read of v1's tables would show an empty board.
        await conn.execute("TRUNCATE board_v2_deals")
        expected = await board(conn, build="board_v3")
    app = create_app(Settings(nats=nats_settings, config=api_config(), database_url=pg_dsn))
    async with AsyncTestClient[Litestar](app, raise_server_exceptions=False) as client:
        client.headers["Authorization"] = f"Bearer {ADMIN_KEY}"
        await wait_healthy(client)
        got = (await client.get("/v1/board", params={"limit": 500})).json()
        assert sum(c["count"] for b in got for c in b["columns"]) == sum(c.count for b in expected for c in b.columns)
        assert sum(c["count"] for b in got for c in b["columns"]) > 0
        lags = (await client.get("/v1/projections")).json()
    board_lags = {(lag["build"], lag["serving"]) for lag in lags if lag["worker"] == "board"}
    assert board_lags == {("board_v2", False), ("board_v3", True)}


async def test_a_sharded_build_takes_over_only_when_every_shard_has_reached_the_serving_position(pg_dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        await conn.execute(CHECKPOINT_DDL)
        await conn.execute(VERSIONS_DDL)
        await register(conn, "board", "board_v1", 1)
        await register(conn, "board", "board_v2", 2)  # a build registers only where nothing serves
        assert await serving_build_name(conn, "board", "x") == "board_v1"

        async def checkpoints(build: str, by_shard: dict[str, int]) -> None:
            for key, seq in by_shard.items():
                await conn.execute(
                    "INSERT INTO projection_checkpoints (projection, partition_key, last_sequence) "
                    "VALUES (%s, %s, %s) ON CONFLICT (projection, partition_key) DO UPDATE "
                    "SET last_sequence = EXCLUDED.last_sequence",
                    (build, key, seq),
                )

        await checkpoints("board_v1", {"0/1": 100})
        await checkpoints("board_v2", {"0/2": 100})
        assert await try_take_over(conn, "board", "board_v2", 2, 2) is None  # shard 1/2 has no checkpoint yet
        await checkpoints("board_v2", {"1/2": 99})
        assert await try_take_over(conn, "board", "board_v2", 2, 2) is None  # one shard is behind the serving one
        await checkpoints("board_v2", {"1/2": 100})
        replaced = await try_take_over(conn, "board", "board_v2", 2, 2)
        assert replaced is not None and replaced.build == "board_v1"
        assert await serving_build_name(conn, "board", "x") == "board_v2"
        await checkpoints("board_v1", {"0/1": 500})
        assert await try_take_over(conn, "board", "board_v1", 1, 1) is None  # never back to a lower version
        assert await serving_build_name(conn, "board", "x") == "board_v2"


async def registered(dsn: str, build: str) -> bool:
    """Whether ``build`` serves (False while no worker has made the tables yet)."""
    try:
        return await serving_is(dsn, build)
    except psycopg.errors.UndefinedTable:
        return False


async def checkpoint_keys(dsn: str) -> dict[str, set[str]]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute("SELECT projection, partition_key FROM projection_checkpoints")
        keys: dict[str, set[str]] = {}
        for build, key in await cur.fetchall():
            keys.setdefault(str(build), set()).add(str(key))
        return keys


async def test_a_labelled_sharded_build_writes_only_its_own_tables_beside_the_serving_one(
    store: EventStore,
    nats_conn: tuple[Any, JetStreamContext],
    nats_settings: NatsSettings,
    naming: Naming,
    pg_dsn: str,
) -> None:
    """``DEALSTREAM_ENGINE_INSTANCE=x`` with ``--partition 1/2`` beside the serving board_v2 (0/1): once caught up
    it used to follow board_v2 and apply from sequence 1 into its tables; it must stay in board_v2_x."""
    _, js = nats_conn
    await append_concurrently(store, workload(60, seed=21))
    stop = asyncio.Event()
    live = asyncio.create_task(serve_worker("board", "0/1", nats_settings, pg_dsn, FAST, stop, instance=""))
    labelled: asyncio.Task[None] | None = None
    try:
        await eventually(lambda: registered(pg_dsn, "board_v2"))  # the first build of a projection serves
        labelled = asyncio.create_task(serve_worker("board", "1/2", nats_settings, pg_dsn, FAST, stop, instance="x"))
        await wait_caught_up(js, pg_dsn, naming, BoardProjection())
        await wait_caught_up(js, pg_dsn, naming, BoardProjection("x"), shards=[Shard(1, 2)])
        # Once more, after each has looked at who serves: the labelled build keeps its own tables up to date.
        await append_concurrently(store, workload(30, seed=22))
        await wait_caught_up(js, pg_dsn, naming, BoardProjection("x"), shards=[Shard(1, 2)])
        await wait_caught_up(js, pg_dsn, naming, BoardProjection())
        assert not labelled.done()
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(live, *([labelled] if labelled else [])), 30)
    assert await checkpoint_keys(pg_dsn) == {"board_v2": {"0/1"}, "board_v2_x": {"1/2"}}
    assert await serving(pg_dsn) == "board_v2"
    async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
        rows = await read_state(conn, "board_v2")
    assert len(rows.deals) == 90
    result = await verify(BoardProjection("check"), nats_settings, pg_dsn)
    assert result.same, result  # nothing was applied twice into the serving build


async def test_a_shard_of_another_split_is_refused_by_the_build_and_writes_nothing(
    store: EventStore,
    nats_conn: tuple[Any, JetStreamContext],
    nats_settings: NatsSettings,
    naming: Naming,
    pg_dsn: str,
) -> None:
    _, js = nats_conn
    await append_concurrently(store, workload(20, seed=23))
    async with running(ProjectionEngine(BoardProjection(), nats_settings, pg_dsn, settings=FAST)):
        await wait_caught_up(js, pg_dsn, naming, BoardProjection())
        with pytest.raises(BuildConflict, match=r"board_v2 is built in shards 0/1; shard 1/2 would apply"):
            await asyncio.wait_for(serve_worker("board", "1/2", nats_settings, pg_dsn, FAST, instance=""), 30)
    assert await checkpoint_keys(pg_dsn) == {"board_v2": {"0/1"}}


async def test_the_version_s_own_build_follows_a_rebuild_only_with_the_same_shards(
    store: EventStore,
    nats_conn: tuple[Any, JetStreamContext],
    nats_settings: NatsSettings,
    naming: Naming,
    pg_dsn: str,
) -> None:
    """Workers of board_v2 in two shards; a rebuild (one shard) takes over. Following it, each shard would replay
    the log into tables the rebuild filled: they stay in board_v2 and say why."""
    _, js = nats_conn
    await append_concurrently(store, workload(40, seed=24))
    halves = [Shard(0, 2), Shard(1, 2)]
    engines = [ProjectionEngine(BoardProjection(), nats_settings, pg_dsn, s, FAST) for s in halves]
    async with running(engines[0]), running(engines[1]):
        await wait_caught_up(js, pg_dsn, naming, BoardProjection(), shards=halves)
        assert await rebuild(BoardProjection("r1"), nats_settings, pg_dsn)

        async def both_declined() -> bool:
            return all(e.not_following == "board_v2_r1" for e in engines)

        await eventually(both_declined)
        assert all(e.moved_to is None for e in engines)
    assert await checkpoint_keys(pg_dsn) == {"board_v2": {"0/2", "1/2"}, "board_v2_r1": {"0/1"}}


async def test_rules_that_steer_only_what_comes_next_are_recorded_anew_not_refused(pg_dsn: str) -> None:
    """Notify's rules (recipients) have no version: a change is recorded for the build, never refused."""
    old = build_rules("notify", "", "")
    new = build_rules("notify", '[notify]\nrecipients.ana.email = "ana@example.com"\n', "/etc/sales.toml")
    assert old.sha256 != new.sha256 and not new.binding
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        for statement in (CHECKPOINT_DDL, VERSIONS_DDL, BUILDS_DDL):
            await conn.execute(statement)
        await claim(conn, "notify", "notify_v1", 1, "0/1", old)
        await claim(conn, "notify", "notify_v1", 1, "0/1", new)
        assert await recorded_rules(conn, "notify_v1") == msgspec.structs.replace(new, binding=True)
        scores = build_rules("scores", "", "")
        await claim(conn, "scores", "scores_v101", 101, "0/1", scores)
        with pytest.raises(BuildConflict, match="scores_v101 was made from rules"):
            await claim(conn, "scores", "scores_v101", 101, "0/1", build_rules("scores", SCORES_V1, "/x.toml"))


SCORES_V1 = "[scoring]\nversion = 1\nthreshold = 20\nhalf_life_days = 14\n"
