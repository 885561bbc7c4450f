"""PostgreSQL restarted under a running ``dealstream worker board`` while the load goes on: once after a crash
(immediate shutdown, recovered from the WAL), once after a fast shutdown. The worker recovers on its own and
the board equals a rebuild."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from devstack.servers import PostgresServer
from events.config import NatsSettings
from events.subjects import Naming
from tests.faults.checks import assert_consistent
from tests.faults.conftest import Reaper, healthy, streams_made
from tests.faults.load import LoadDriver
from tests.faults.processes import api_process, worker_process
from tests.waiting import eventually

pytestmark = [pytest.mark.faults, pytest.mark.timeout(180)]


@pytest.fixture
def postgres() -> Iterator[PostgresServer]:
    # Not under pytest's tmp dir: as root, PostgreSQL runs as another user, who must be able to reach the folder.
    root = Path(tempfile.mkdtemp(prefix="dealstream-faults-pg-"))
    server = PostgresServer(root / "data")
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def crash(server: PostgresServer) -> None:
    """Immediate shutdown: no checkpoint on the way out; the next start replays the WAL, as after a crash."""
    assert server.proc is not None
    server.proc.send_signal(signal.SIGQUIT)
    server.proc.wait(30)


async def checkpoint(url: str) -> int:
    with contextlib.suppress(psycopg.OperationalError, psycopg.errors.UndefinedTable):
        async with await psycopg.AsyncConnection.connect(url, connect_timeout=2) as conn:
            cur = await conn.execute("SELECT coalesce(max(last_sequence), 0) FROM projection_checkpoints")
            row = await cur.fetchone()
            return int(row[0]) if row else 0
    return 0


async def test_postgres_restarted_under_a_running_worker_which_recovers_equal_to_a_rebuild(
    nats_url: str, naming: Naming, postgres: PostgresServer, api_config: Path, tmp_path: Path, reaper: Reaper
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
            postgres.url,
            DEALSTREAM_ENGINE_BATCH="20",
            DEALSTREAM_ENGINE_FETCH_TIMEOUT="0.2",
        )
    ).start()
    stop = asyncio.Event()
    async with LoadDriver(api.base_url) as load:
        running = load.start(stop)
        try:
            for down in (crash, PostgresServer.stop):
                await load.more(60)
                before = await checkpoint(postgres.url)

                async def worker_moved_on(past: int = before) -> bool:
                    return await checkpoint(postgres.url) > past

                await eventually(worker_moved_on)  # it is applying batches when the database goes
                await asyncio.to_thread(down, postgres)
                await load.more(30)  # the log moves on while the database is down
                await asyncio.to_thread(postgres.start)
                await load.more(30)
        finally:
            stop.set()
            report = await running
    await assert_consistent(report, settings, postgres.url, read_models=["board"])
    assert worker.running, worker.tail()
    log = worker.log.read_text()
    assert "engine.retry" in log or "engine.error" in log, "the worker never noticed the database was gone"
