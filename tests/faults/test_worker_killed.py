"""kill -9 of ``dealstream worker board`` while a batch's transaction is open, under load, three times: once
restarted, the board equals a rebuild from the log."""

from __future__ import annotations

import asyncio
from pathlib import Path

import psycopg
import pytest

from events.config import NatsSettings
from events.subjects import Naming
from projections.board_store import BoardProjection
from projections.contract import Shard, consumer_name
from tests.faults.checks import assert_consistent, read_model_problems
from tests.faults.conftest import Reaper, healthy, streams_made
from tests.faults.load import LoadDriver
from tests.faults.processes import api_process, worker_process

pytestmark = [pytest.mark.faults, pytest.mark.timeout(180)]


async def writing(dsn: str, application_name: str, within: float = 10.0) -> bool:
    """Wait until the worker's session holds uncommitted writes (a batch under way); False if it never did."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        deadline = asyncio.get_running_loop().time() + within
        while asyncio.get_running_loop().time() < deadline:
            cur = await conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND backend_xid IS NOT NULL",
                (application_name,),
            )
            if (row := await cur.fetchone()) is not None and row[0] > 0:
                return True
            await asyncio.sleep(0.002)
    return False


async def test_a_worker_killed_mid_batch_under_load_restarts_and_equals_a_rebuild(
    nats_url: str, naming: Naming, pg_dsn: str, api_config: Path, tmp_path: Path, reaper: Reaper
) -> None:
    settings = NatsSettings(servers=(nats_url,), naming=naming)
    await streams_made(settings)
    api = reaper(api_process(tmp_path / "api.log", api_config, nats_url, naming.prefix)).start()
    await healthy(api.base_url)
    worker = reaper(
        worker_process(
            tmp_path / "worker.log",
            "board",
            nats_url,
            naming.prefix,
            pg_dsn,
            # Small batches: many transactions to land a kill in.
            DEALSTREAM_ENGINE_BATCH="10",
            DEALSTREAM_ENGINE_FETCH_TIMEOUT="0.2",
        )
    ).start()
    session = consumer_name(naming, BoardProjection(), Shard())[:63]
    stop = asyncio.Event()
    mid_batch = 0
    async with LoadDriver(api.base_url) as load:
        running = load.start(stop)
        try:
            for _ in range(3):
                await load.more(40)
                mid_batch += await writing(pg_dsn, session)
                worker.kill()
                await load.more(20)  # the log moves on while the worker is down
                worker.start()
            await load.more(40)
        finally:
            stop.set()
            report = await running
    assert mid_batch >= 1, f"no kill landed inside a batch's transaction\n{worker.tail()}"
    await assert_consistent(report, settings, pg_dsn, read_models=["board"])
    assert worker.running, worker.tail()

    # The comparison is not blind: a row changed behind the log's back is found.
    assert worker.stop() == 0, worker.tail()
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        await conn.execute(
            "UPDATE board_v2_deals SET amount = amount + 1 WHERE deal_id = (SELECT min(deal_id) FROM board_v2_deals)"
        )
    assert await read_model_problems("board", settings, pg_dsn)
