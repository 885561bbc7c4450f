"""nats-server killed (kill -9) and restarted under load: the API answers 503 meanwhile, clients retry with the
same Idempotency-Key, nothing is doubled or lost, and the board worker, which lived through it, equals a
rebuild."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from devstack.servers import NatsServer
from events.config import NatsSettings
from events.subjects import Naming
from tests.faults.checks import assert_consistent
from tests.faults.conftest import Reaper, healthy, streams_made
from tests.faults.load import LoadDriver
from tests.faults.processes import api_process, worker_process
from tests.waiting import eventually

pytestmark = [pytest.mark.faults, pytest.mark.timeout(180)]


async def test_nats_killed_and_restarted_under_load_means_503s_then_every_retry_lands_once(
    naming: Naming, pg_dsn: str, api_config: Path, tmp_path: Path, reaper: Reaper
) -> None:
    nats = reaper(NatsServer(tmp_path / "nats", name="faults-restart", log_file=tmp_path / "nats.log")).start()
    settings = NatsSettings(servers=(nats.url,), naming=naming)
    await streams_made(settings)
    api = reaper(api_process(tmp_path / "api.log", api_config, nats.url, naming.prefix)).start()
    await healthy(api.base_url)
    worker = reaper(
        worker_process(
            tmp_path / "worker.log", "board", nats.url, naming.prefix, pg_dsn, DEALSTREAM_ENGINE_FETCH_TIMEOUT="0.2"
        )
    ).start()
    stop = asyncio.Event()
    async with LoadDriver(api.base_url) as load:
        running = load.start(stop)

        async def requests_under_way() -> bool:
            return load.in_flight >= 3

        try:
            for _ in range(2):
                await load.more(80)
                await eventually(requests_under_way, every=0.001)
                before = load.report.outcomes["503"]
                nats.kill()  # the file store keeps what it acknowledged

                async def refused_while_down(before: int = before) -> bool:
                    return load.report.outcomes["503"] >= before + 10

                await eventually(refused_while_down)
                # Same port and store directory, off the loop so that clients keep trying meanwhile.
                await asyncio.to_thread(nats.start)
                await load.more(40, within=90)
            await load.more(40)
        finally:
            stop.set()
            report = await running
    assert report.outcomes["503"] >= 20, report.summary()
    assert report.retried, report.summary()
    await assert_consistent(report, settings, pg_dsn, read_models=["board"])
    assert worker.running, worker.tail()
