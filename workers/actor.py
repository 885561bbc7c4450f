"""Actors: the part of a worker that acts on its read model by appending events (SLA alerts, routing).

An actor runs beside its projection's engine, in the same process and for the same shard, and polls its
tables. It acts only while that build serves, so a build still rebuilding never appends anything. It appends
through the ledger's handlers (``events/handlers.py``), guarded by the log itself (an expected version), which
is what makes them happen once.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from typing import Any

import psycopg
import structlog

from events.config import NatsSettings, connect
from events.ledger import Context, Ledger
from events.personal import Vault
from events.store import EventStore
from workers.engine import ProjectionEngine

log = structlog.get_logger("dealstream.actor")

CACHED_EVENTS = 1_000
"""An actor decides on each aggregate about once: its ledger keeps little history in memory."""


class Actor:
    """Calls :meth:`tick` every ``poll`` seconds while the engine's build serves; survives outages."""

    name = "actor"
    """Who the actor's events name as their actor."""

    def __init__(
        self, engine: ProjectionEngine, nats_settings: NatsSettings, database_url: str, poll: float = 0.25
    ) -> None:
        self.engine = engine
        self.nats_settings = nats_settings
        self.database_url = database_url
        self.poll = poll
        self.ticks = 0
        self.log = log.bind(build=engine.projection.build, partition=engine.shard.key)

    async def tick(self, conn: psycopg.AsyncConnection[Any], ledger: Ledger) -> None:
        raise NotImplementedError

    def context(self, now: dt.datetime, correlation_id: str) -> Context:
        """What the actor's appends say about who made them: this worker, as the system."""
        return Context(actor=self.name, source="system", correlation_id=correlation_id, now=now)

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
                    naming = self.nats_settings.naming
                    store = EventStore(nc, js, naming, self.nats_settings.publish_timeout)
                    ledger = Ledger(store, Vault(js, naming), cached_events=CACHED_EVENTS)
                    async with await psycopg.AsyncConnection.connect(self.database_url, autocommit=True) as conn:
                        while not stop.is_set():
                            if self.engine.serving:
                                await self.tick(conn, ledger)
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
