"""The projection engine against real servers: crashes, restarts, shards, outages, standby."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import nats.errors
import psycopg
import pytest
from nats.js import JetStreamContext

from devstack.servers import NatsServer
from events.config import NatsSettings, connect
from events.store import EventStore, StoreUnavailable
from events.streams import StreamSettings, ensure_streams
from events.subjects import Naming
from projections.board_store import BoardProjection
from projections.contract import Shard, consumer_name
from tests.builders import T0
from tests.projection_fixtures import (
    FAST,
    Script,
    append_concurrently,
    append_script,
    board_engine,
    lags,
    opened,
    running,
    wait_caught_up,
    workload,
)
from workers.engine import EngineSettings
from workers.registry import serve_worker, worker_lag

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BOARD = BoardProjection()


@pytest.fixture
def other_dsn(pg_url: str) -> Iterator[str]:
    """A second fresh schema: where a from-scratch rebuild goes."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    yield psycopg.conninfo.make_conninfo(pg_url, options=f"-c search_path={schema}")
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


async def table(dsn: str, name: str, key: str) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cur = await conn.execute(f"SELECT * FROM {name} ORDER BY {key}")
        return await cur.fetchall()


REBUILD = BoardProjection("rebuild")


async def same_rows(a: str, b: str) -> None:
    """The live board in ``a`` has the very rows of the rebuild in ``b``."""
    deals = await table(a, BOARD.sql.deals, "deal_id")
    assert deals and deals == await table(b, REBUILD.sql.deals, "deal_id")
    assert await table(a, BOARD.sql.pipelines, "pipeline_id") == await table(b, REBUILD.sql.pipelines, "pipeline_id")


async def rebuild(nats_settings: NatsSettings, js: JetStreamContext, dsn: str) -> None:
    """The board from sequence 1 into ``dsn``: its own build, so its own durable consumer and tables."""
    async with running(
        board_engine(nats_settings, dsn, settings=EngineSettings(fetch_timeout=0.2), instance="rebuild")
    ):
        await wait_caught_up(js, dsn, nats_settings.naming, REBUILD)


async def checkpoint(dsn: str) -> int:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        with contextlib.suppress(psycopg.errors.UndefinedTable):
            cur = await conn.execute("SELECT coalesce(max(last_sequence), 0) FROM projection_checkpoints")
            row = await cur.fetchone()
            return int(row[0]) if row else 0
    return 0


def start_worker(nats_url: str, naming: Naming, dsn: str, batch: int, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DEALSTREAM_NATS_URL": nats_url,
        "DEALSTREAM_PREFIX": naming.prefix,
        "DATABASE_URL": dsn,
        "DEALSTREAM_ENGINE_BATCH": str(batch),
        "DEALSTREAM_ENGINE_FETCH_TIMEOUT": "0.2",
        "DEALSTREAM_LOG_FORMAT": "json",
    }
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "workers", "board"], cwd=ROOT, env=env, stdout=out, stderr=out)


async def test_killed_mid_way_and_restarted_equals_a_rebuild(
    store: EventStore,
    nats_conn: tuple[Any, JetStreamContext],
    nats_settings: NatsSettings,
    nats_url: str,
    naming: Naming,
    pg_dsn: str,
    other_dsn: str,
    tmp_path: Path,
) -> None:
    _, js = nats_conn
    log = tmp_path / "worker.log"
    await append_concurrently(store, workload(3000))
    last = (await js.stream_info(naming.events_stream)).state.last_seq
    kills = 0
    seen = 0
    for _ in range(3):
        proc = start_worker(nats_url, naming, pg_dsn, 150, log)
        try:
            # kill -9 as soon as it has moved past where the last one died: mid-stream, mostly mid-batch
            while (now := await checkpoint(pg_dsn)) <= seen and proc.poll() is None:
                await asyncio.sleep(0.005)
            seen = now
        finally:
            proc.kill()
            proc.wait()
        if seen < last:
            kills += 1
        # more events arrive while it is down
        await append_script(store, [("deal", f"late-{kills}-{seen}", opened("Late"), T0)])
    assert kills >= 1, "the worker finished before it could be killed"
    proc = start_worker(nats_url, naming, pg_dsn, 150, log)
    try:
        await wait_caught_up(js, pg_dsn, naming, BOARD, within=120)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    await rebuild(nats_settings, js, other_dsn)
    await same_rows(pg_dsn, other_dsn)


async def test_two_shards_produce_the_same_rows_as_one(
    store: EventStore,
    nats_conn: tuple[Any, JetStreamContext],
    nats_settings: NatsSettings,
    naming: Naming,
    pg_dsn: str,
    other_dsn: str,
) -> None:
    _, js = nats_conn
    await append_concurrently(store, workload(600))
    shards = [Shard(0, 2), Shard(1, 2)]
    async with (
        running(board_engine(nats_settings, pg_dsn, shards[0], FAST)) as a,
        running(board_engine(nats_settings, pg_dsn, shards[1], FAST)) as b,
    ):
        # appended while both run, too
        await append_concurrently(store, workload(200, seed=8))
        await wait_caught_up(js, pg_dsn, naming, BOARD, shards)
    assert a.applied > 0 and b.applied > 0
    assert a.applied + b.applied == (await js.stream_info(naming.events_stream)).state.messages
    await rebuild(nats_settings, js, other_dsn)
    await same_rows(pg_dsn, other_dsn)
    async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
        cur = await conn.execute("SELECT partition_key FROM projection_checkpoints ORDER BY 1")
        assert [r[0] for r in await cur.fetchall()] == ["0/2", "1/2"]


async def test_a_restart_resumes_from_the_checkpoint_and_the_database_wins_over_the_consumer(
    store: EventStore,
    nats_conn: tuple[Any, JetStreamContext],
    nats_settings: NatsSettings,
    naming: Naming,
    pg_dsn: str,
    other_dsn: str,
) -> None:
    _, js = nats_conn
    await append_concurrently(store, workload(100))
    async with running(board_engine(nats_settings, pg_dsn, settings=FAST)):
        await wait_caught_up(js, pg_dsn, naming, BOARD)
    first = await checkpoint(pg_dsn)

    # Clean restart: the durable consumer agrees with the checkpoint and only new events are applied.
    await append_concurrently(store, workload(10, seed=9))
    async with running(board_engine(nats_settings, pg_dsn, settings=FAST)) as engine:
        await wait_caught_up(js, pg_dsn, naming, BOARD)
    second = await checkpoint(pg_dsn)
    assert engine.applied == second - first

    # The consumer is gone (or was reset by hand): it is recreated from the checkpoint.
    durable = consumer_name(naming, BOARD, Shard())
    await js.delete_consumer(naming.events_stream, durable)
    await append_concurrently(store, workload(10, seed=10))
    async with running(board_engine(nats_settings, pg_dsn, settings=FAST)) as engine:
        await wait_caught_up(js, pg_dsn, naming, BOARD)
    third = await checkpoint(pg_dsn)
    assert engine.applied == third - second

    # The checkpoint is rolled back (a restored backup): the consumer, ahead of it, is recreated behind it.
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        await conn.execute("UPDATE projection_checkpoints SET last_sequence = %s", (first,))
    async with running(board_engine(nats_settings, pg_dsn, settings=FAST)) as engine:
        await wait_caught_up(js, pg_dsn, naming, BOARD)
    assert engine.applied == third - first
    assert await checkpoint(pg_dsn) == third
    await rebuild(nats_settings, js, other_dsn)
    await same_rows(pg_dsn, other_dsn)


async def test_a_second_process_on_the_same_partition_waits_as_a_standby(
    store: EventStore,
    nats_conn: tuple[Any, JetStreamContext],
    nats_settings: NatsSettings,
    naming: Naming,
    pg_dsn: str,
) -> None:
    _, js = nats_conn
    await append_concurrently(store, workload(50))
    async with running(board_engine(nats_settings, pg_dsn, settings=FAST)) as live:
        await wait_caught_up(js, pg_dsn, naming, BOARD)
        async with running(board_engine(nats_settings, pg_dsn, settings=FAST)) as standby:
            await append_concurrently(store, workload(50, seed=11))
            await wait_caught_up(js, pg_dsn, naming, BOARD)
        assert standby.applied == 0
    assert live.applied == (await js.stream_info(naming.events_stream)).state.messages


async def test_a_killed_database_connection_is_survived(
    store: EventStore,
    nats_conn: tuple[Any, JetStreamContext],
    nats_settings: NatsSettings,
    naming: Naming,
    pg_dsn: str,
    pg_url: str,
    other_dsn: str,
) -> None:
    _, js = nats_conn
    await append_concurrently(store, workload(200))
    async with running(
        board_engine(
            nats_settings,
            pg_dsn,
            settings=EngineSettings(batch_size=50, fetch_timeout=0.2, backoff_initial=0.05, backoff_max=0.2),
        )
    ):
        await wait_caught_up(js, pg_dsn, naming, BOARD)  # connected, for sure
        for i in range(3):
            # The server drops the engine's session, as on a PostgreSQL restart or failover.
            async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as admin:
                cur = await admin.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = %s",
                    (consumer_name(naming, BOARD, Shard()),),
                )
                killed = await cur.fetchone()
            if i == 0:
                assert killed == (1,)
            await append_concurrently(store, workload(30, seed=20 + i))
            await asyncio.sleep(0.2)
        await wait_caught_up(js, pg_dsn, naming, BOARD)
    await rebuild(nats_settings, js, other_dsn)
    await same_rows(pg_dsn, other_dsn)


@contextlib.asynccontextmanager
async def private_nats() -> AsyncIterator[NatsServer]:
    server = NatsServer(Path(tempfile.mkdtemp(prefix="dealstream-nats-")), name="engine-outage").start()
    try:
        yield server
    finally:
        server.stop()


async def append_when_back(store: EventStore, script: Script, within: float = 30.0) -> None:
    """Append once the test's own client has reconnected and JetStream answers again."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        try:
            await append_concurrently(store, script)
            return
        except (StoreUnavailable, nats.errors.Error):
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.1)


async def test_a_nats_restart_is_survived(pg_dsn: str, other_dsn: str) -> None:
    async with private_nats() as server:
        settings = NatsSettings(
            servers=(server.url,), naming=Naming(f"o{uuid.uuid4().hex[:8]}"), streams=StreamSettings()
        )
        nc, js = await connect(settings, "test")
        await ensure_streams(js, settings.naming, settings.streams)
        store = EventStore(nc, js, settings.naming)
        await append_concurrently(store, workload(100))
        async with running(
            board_engine(
                settings,
                pg_dsn,
                settings=EngineSettings(batch_size=50, fetch_timeout=0.2, backoff_initial=0.05, backoff_max=0.5),
            )
        ) as engine:
            await wait_caught_up(js, pg_dsn, settings.naming, BOARD)
            server.kill()  # SIGKILL: the file store keeps what was acknowledged
            await asyncio.sleep(1.0)
            server.start()
            await append_when_back(store, workload(100, seed=12))
            await wait_caught_up(js, pg_dsn, settings.naming, BOARD)
            assert [lag.caught_up for lag in await lags(js, pg_dsn, settings.naming, BOARD, [Shard()])] == [True]
        assert engine.applied == (await js.stream_info(settings.naming.events_stream)).state.messages
        await rebuild(settings, js, other_dsn)
        await same_rows(pg_dsn, other_dsn)
        await nc.close()


async def test_the_registry_runs_the_board_and_reports_its_lag(
    store: EventStore,
    nats_conn: tuple[Any, JetStreamContext],
    nats_settings: NatsSettings,
    naming: Naming,
    pg_dsn: str,
) -> None:
    _, js = nats_conn
    assert await worker_lag("board", nats_settings, pg_dsn) == []  # never ran: no checkpoint yet
    await append_concurrently(store, workload(20))
    stop = asyncio.Event()
    task = asyncio.create_task(serve_worker("board", "0/1", nats_settings, pg_dsn, FAST, stop))
    await wait_caught_up(js, pg_dsn, naming, BOARD)
    stop.set()
    await asyncio.wait_for(task, 30)
    last = (await js.stream_info(naming.events_stream)).state.last_seq
    [lag] = await worker_lag("board", nats_settings, pg_dsn)
    assert (lag.projection, lag.partition_key) == ("board_v2", "0/1")
    assert lag.checkpoint == lag.stream_last_sequence == last
    assert lag.caught_up and lag.oldest_unapplied_age_seconds is None
    [appended] = await append_script(store, [("deal", "after", opened(), T0)])
    [lag] = await worker_lag("board", nats_settings, pg_dsn)
    assert lag.first_unapplied_sequence == appended.sequence == lag.stream_last_sequence
    assert lag.oldest_unapplied_age_seconds is not None and lag.oldest_unapplied_age_seconds >= 0
