"""Actors: the part of a worker that acts on its read model by appending events (SLA alerts, routing).

An actor runs beside its projection's engine, in the same process and for the same shard, and polls its
tables. It acts only while that build serves, so a build still rebuilding never appends anything. Its
appends are guarded by the log itself (an expected version), which is what makes them happen once.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import psycopg
import structlog

from events.config import NatsSettings, connect
from events.store import EventStore
from workers.engine import ProjectionEngine

log = structlog.get_logger("dealstream.actor")


class Actor:
    """Calls :meth:`tick` every ``poll`` seconds while the engine's build serves; survives outages."""

    def __init__(
        self, engine: ProjectionEngine, nats_settings: NatsSettings, database_url: str, poll: float = 0.25
    ) -> None:
        self.engine = engine
        self.nats_settings = nats_settings
        self.database_url = database_url
        self.poll = poll
        self.ticks = 0
        self.log = log.bind(build=engine.projection.build, partition=engine.shard.key)

    async def tick(self, conn: psycopg.AsyncConnection[Any], store: EventStore) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        """Release what the actor holds (HTTP clients); called once when it stops."""

    async def run(self, stop: asyncio.Event) -> None:
        try:
            await self._run(stop)
        finally:
            await self.close()

    async def _run(self, stop: asyncio.Event) -> None:
        backoff = 0.2
        while not stop.is_set():
            try:
                nc, js = await connect(self.nats_settings, f"dealstream-{self.engine.durable}-actor")
                try:
                    store = EventStore(nc, js, self.nats_settings.naming, self.nats_settings.publish_timeout)
                    async with await psycopg.AsyncConnection.connect(self.database_url, autocommit=True) as conn:
                        while not stop.is_set():
                            if self.engine.serving:
                                await self.tick(conn, store)
                                self.ticks += 1
                            backoff = 0.2
                            with contextlib.suppress(TimeoutError):
                                await asyncio.wait_for(stop.wait(), self.poll)
                finally:
                    with contextlib.suppress(Exception):
                        await nc.close()
            except Exception as exc:
                # Tables not there yet, PostgreSQL or NATS away: the work waits in the database meanwhile.
                self.log.warning("actor.retry", error=f"{type(exc).__name__}: {exc}", backoff=backoff)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff)
                backoff = min(backoff * 2, 10.0)
