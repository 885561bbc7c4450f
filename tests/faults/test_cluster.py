"""A three-node JetStream cluster on loopback, the event log with three replicas, appends through the API under
load: the node leading the log is killed (kill -9), later restarted, and once it has caught up the new leader is
killed too. Every acknowledged append is in the log afterwards, exactly once."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import nats.errors
import pytest
from nats.js import JetStreamContext

from events.config import NatsSettings, connect
from events.streams import StreamSettings
from events.subjects import Naming
from tests.faults.checks import assert_consistent
from tests.faults.conftest import Reaper, healthy, streams_made
from tests.faults.load import LoadDriver
from tests.faults.processes import NatsCluster, api_process
from tests.waiting import eventually

pytestmark = [pytest.mark.faults, pytest.mark.timeout(180)]


async def leader(cluster: NatsCluster, js: JetStreamContext, stream: str) -> int:
    """The node leading the stream, once it has one."""
    name: str | None = None

    async def elected() -> bool:
        nonlocal name
        with contextlib.suppress(nats.errors.Error):
            info = await js.stream_info(stream)
            name = info.cluster.leader if info.cluster else None
        return name is not None

    await eventually(elected, within=60, every=0.2)
    return cluster.node_of(name)


async def all_current(js: JetStreamContext, stream: str) -> bool:
    """Every replica is online and has the whole log."""
    try:
        info = await js.stream_info(stream)
    except nats.errors.Error:
        return False
    replicas = info.cluster.replicas if info.cluster and info.cluster.replicas else []
    return (
        info.cluster is not None
        and info.cluster.leader is not None
        and len(replicas) == 2
        and all(r.current and not r.offline for r in replicas)
    )


async def test_appends_under_load_survive_two_node_crashes_one_after_the_other(
    naming: Naming, api_config: Path, tmp_path: Path, reaper: Reaper
) -> None:
    cluster = reaper(NatsCluster(tmp_path)).start()
    settings = NatsSettings(servers=tuple(cluster.urls.split(",")), naming=naming, streams=StreamSettings(replicas=3))
    await streams_made(settings)
    api = api_process(tmp_path / "api.log", api_config, cluster.urls, naming.prefix, DEALSTREAM_REPLICAS="3")
    reaper(api).start()
    await healthy(api.base_url, within=90)
    nc, js = await connect(settings, "faults-cluster")
    stream = naming.events_stream
    stop = asyncio.Event()
    try:
        async with LoadDriver(api.base_url, give_up_after=120) as load:
            running = load.start(stop)
            try:
                await load.more(80, within=90)
                first = await leader(cluster, js, stream)
                cluster.kill(first)
                await load.more(80, within=90)
                await asyncio.to_thread(cluster.start, first)

                async def caught_up() -> bool:
                    return await all_current(js, stream)

                await eventually(caught_up, within=90, every=0.2)
                await load.more(40, within=90)
                second = await leader(cluster, js, stream)
                if second == first:  # it took the lead back: another node goes down then
                    second = next(n for n in (1, 2, 3) if n != first)
                cluster.kill(second)
                await load.more(80, within=90)
            finally:
                stop.set()
                report = await running
        await assert_consistent(report, settings)
    finally:
        await nc.close()
