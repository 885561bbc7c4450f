"""kill -9 of ``dealstream api`` with requests under way, restarted on the same port: clients retry with the same
Idempotency-Key; nothing is doubled, nothing acknowledged is lost, the board equals a rebuild.

The kill is fired the moment an append reaches the log, so that some request dies between its append and its
answer; that request's retry must find the first attempt's event instead of appending a second one. Kills go on
until that has happened at least once (the retry says ``duplicate``)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from nats.aio.msg import Msg

from events.config import NatsSettings, connect
from events.subjects import Naming
from tests.faults.checks import assert_consistent
from tests.faults.conftest import Reaper, healthy, streams_made
from tests.faults.load import LoadDriver
from tests.faults.processes import api_process, worker_process
from tests.waiting import eventually

pytestmark = [pytest.mark.faults, pytest.mark.timeout(180)]


async def test_the_api_killed_mid_request_under_load_loses_and_doubles_nothing(
    nats_url: str, naming: Naming, pg_dsn: str, api_config: Path, tmp_path: Path, reaper: Reaper
) -> None:
    settings = NatsSettings(servers=(nats_url,), naming=naming)
    await streams_made(settings)
    api = reaper(api_process(tmp_path / "api.log", api_config, nats_url, naming.prefix)).start()
    await healthy(api.base_url)
    reaper(worker_process(tmp_path / "worker.log", "board", nats_url, naming.prefix, pg_dsn)).start()
    nc, _ = await connect(settings, "faults-api-killed")
    landed = asyncio.Event()

    async def appended(_: Msg) -> None:
        landed.set()

    await nc.subscribe(naming.all_events, cb=appended)
    stop = asyncio.Event()
    kills = 0
    async with LoadDriver(api.base_url) as load:
        running = load.start(stop)

        async def requests_under_way() -> bool:
            return load.in_flight >= 3

        def answered_by_a_retry_finding_its_first_attempt() -> bool:
            return any(a.duplicate for a in load.report.retried)

        try:
            while kills < 2 or (kills < 10 and not answered_by_a_retry_finding_its_first_attempt()):
                await load.more(40)
                await eventually(requests_under_way, every=0.001)
                landed.clear()
                await landed.wait()
                api.kill()
                kills += 1
                # Same port: the clients only ever know the one address. Off the loop, so they keep trying meanwhile.
                await asyncio.to_thread(api.start)
                await load.more(30)
        finally:
            stop.set()
            report = await running
            await nc.close()
    assert answered_by_a_retry_finding_its_first_attempt(), f"{kills} kills, {report.summary()}"
    await assert_consistent(report, settings, pg_dsn, read_models=["board"])
