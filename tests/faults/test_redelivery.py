"""Duplicates and redeliveries, on a log whose duplicate window is one second.

- A worker gets events again that it already applied: deliveries left unacknowledged past ``ack_wait`` (a
  batch held up in the database), and its consumer deleted and re-created from sequence 1. It applies each
  event once: its count of applied events equals the events it selects, and the board equals a rebuild.
- Every acknowledged request sent again after the window: the same answer, nothing new in the log. Each lead
  is still one lead because its id derives from the source's id or the Idempotency-Key, not from the window.
- Every stored message published again with its original headers after the window: refused by the
  expected-sequence guard; the store's own retry of an append that landed gets the first sequence back.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest
from nats.aio.msg import Msg
from nats.js.errors import APIError, NotFoundError

from events.audit import scan
from events.chain import CHAIN_HEADER
from events.codec import decode
from events.config import NatsSettings, connect
from events.store import WRONG_LAST_SEQUENCE, EventStore
from events.streams import StreamSettings
from events.subjects import Naming
from projections.board_store import BoardProjection
from tests.faults.checks import assert_consistent
from tests.faults.conftest import Reaper, healthy, streams_made
from tests.faults.load import LoadDriver
from tests.faults.processes import api_process
from tests.projection_fixtures import running, wait_caught_up
from tests.waiting import eventually
from workers.engine import EngineSettings, ProjectionEngine

pytestmark = [pytest.mark.faults, pytest.mark.timeout(180)]

WINDOW = 1.0


class WatchedEngine(ProjectionEngine):
    """The board's engine as it runs in production, counting deliveries of events it had already applied."""

    stale = 0

    async def process(self, msgs: Sequence[Msg]) -> None:
        self.stale += sum(1 for m in msgs if m.metadata.sequence.stream <= self._checkpoint)
        await super().process(msgs)


async def held_up(dsn: str, build: str, seconds: float) -> None:
    """Hold the engine's checkpoint row locked: its next batch waits in the database, unacknowledged."""
    async with await psycopg.AsyncConnection.connect(dsn) as conn, conn.transaction():
        await conn.execute("SELECT * FROM projection_checkpoints WHERE projection = %s FOR UPDATE", (build,))
        await asyncio.sleep(seconds)


async def test_redeliveries_and_resends_after_the_duplicate_window_change_nothing(
    nats_url: str, naming: Naming, pg_dsn: str, api_config: Path, tmp_path: Path, reaper: Reaper
) -> None:
    settings = NatsSettings(servers=(nats_url,), naming=naming, streams=StreamSettings(duplicate_window_seconds=WINDOW))
    await streams_made(settings)
    api = reaper(
        api_process(tmp_path / "api.log", api_config, nats_url, naming.prefix, DEALSTREAM_DUPLICATE_WINDOW=str(WINDOW))
    ).start()
    await healthy(api.base_url)
    nc, js = await connect(settings, "faults-redelivery")
    try:
        assert (await js.stream_info(naming.events_stream)).config.duplicate_window == WINDOW
        board = BoardProjection()
        engine = WatchedEngine(
            board,
            settings,
            pg_dsn,
            settings=EngineSettings(batch_size=20, fetch_timeout=0.5, ack_wait=WINDOW, lag_interval=3600.0),
        )
        async with running(engine), LoadDriver(api.base_url) as load:
            stop = asyncio.Event()
            load_running = load.start(stop)
            try:
                await load.more(60)
                # A batch held past ack_wait: the server sends its events again.
                await held_up(pg_dsn, board.build, 3 * WINDOW)
                await load.more(40)
            finally:
                stop.set()
                await load_running
            after_ack_wait = engine.stale

            # The consumer replaced by one that starts over from sequence 1, under the idle engine.
            await wait_caught_up(js, pg_dsn, naming, board)
            info = await js.consumer_info(naming.events_stream, engine.durable)
            await js.delete_consumer(naming.events_stream, engine.durable)
            await js.add_consumer(naming.events_stream, config=dataclasses.replace(info.config, opt_start_seq=1))

            async def replaced_again() -> bool:
                try:
                    info = await js.consumer_info(naming.events_stream, engine.durable)
                except NotFoundError:
                    return False  # between the engine's delete and its create
                return bool(info.config.opt_start_seq != 1)

            await eventually(replaced_again)
            after_restart = engine.stale - after_ack_wait
            stop = asyncio.Event()
            load_running = load.start(stop)
            try:
                await load.more(60)
            finally:
                stop.set()
                report = await load_running
            await wait_caught_up(js, pg_dsn, naming, board)

            # Sent again once the window has passed: the first answers, and nothing new in the log.
            await asyncio.sleep(WINDOW * 1.5)
            last = (await js.stream_info(naming.events_stream)).state.last_seq
            again = await load.replay(report.acks)
            changed = [(a.request.key, a.event_id, b) for a, b in again if b is None or b.event_id != a.event_id]
            assert not changed, changed[:3]
            assert all(b is not None and b.duplicate for _, b in again)
            assert (await js.stream_info(naming.events_stream)).state.last_seq == last

            # Stored messages published again, byte for byte with their headers: refused, not appended.
            previous: dict[str, int] = {}
            refused = 0
            store = EventStore(nc, js, naming)
            async for m in scan(js, naming.events_stream):
                headers: dict[str, Any] = {
                    "Nats-Msg-Id": decode(m.data).event_id,
                    "Nats-Expected-Last-Subject-Sequence": str(previous.get(m.subject, 0)),
                    CHAIN_HEADER: m.link,
                }
                with pytest.raises(APIError) as error:
                    await js.publish(m.subject, m.data, stream=naming.events_stream, headers=headers)
                refused += error.value.err_code == WRONG_LAST_SEQUENCE
                if m.sequence % 25 == 0:
                    # The store's retry of an append whose answer it never got: the first sequence comes back.
                    envelope = decode(m.data)
                    [appended] = await store.append([envelope], expected_version=previous.get(m.subject, 0))
                    assert (appended.sequence, appended.duplicate) == (m.sequence, True)
                previous[m.subject] = m.sequence
            assert refused == last
            assert (await js.stream_info(naming.events_stream)).state.last_seq == last

        log = await assert_consistent(report, settings, pg_dsn, read_models=["board"])
        # Every lead event reaches the board too (broadcast): an erasure scrubs the names of the deals opened from it.
        assert engine.applied == sum(e.envelope.aggregate_type in (*board.partitioned, *board.broadcast) for e in log)
        assert after_ack_wait > 0 and after_restart > 0, (after_ack_wait, after_restart)
    finally:
        await nc.close()
