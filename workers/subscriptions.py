"""The subscriptions worker's actor: sends each due webhook delivery, retries with backoff, records each try,
and carries out replays.

A delivery's body is the event's envelope exactly as the log holds it (sealed personal data stays sealed),
POSTed as JSON with ``Dealstream-Event-Id`` (receivers deduplicate on it), ``Dealstream-Sequence`` (its
stream sequence), ``Dealstream-Subscription-Id``, ``Dealstream-Delivery-Id`` and ``Dealstream-Signature``
(HMAC-SHA256 with the subscription's secret, see :func:`projections.notify.signature`); any 2xx is success.
A failure is tried again after a doubling wait until the policy's ``max_attempts``, then the delivery is
``failed``. At least once: a delivery in flight when the process dies is sent again on restart.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import httpx
import psycopg
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from events.codec import DecodeError, decode
from events.config import NatsSettings, connect
from events.envelope import StoredEvent
from events.ledger import Ledger
from events.scan import scan
from projections.notify import signature
from projections.notify_store import Attempt
from projections.subscriptions import matches
from projections.subscriptions_store import (
    DueDelivery,
    Replay,
    SubscriptionsProjection,
    delivery_row,
    due_deliveries,
    finish_replay,
    list_subscriptions,
    pending_replays,
    record_attempt,
)
from workers.actor import Actor
from workers.engine import ProjectionEngine


class SubscriptionsActor(Actor):
    name = "subscriptions"

    def __init__(
        self, engine: ProjectionEngine, nats_settings: NatsSettings, database_url: str, poll: float = 0.25
    ) -> None:
        super().__init__(engine, nats_settings, database_url, poll)
        projection = engine.projection
        assert isinstance(projection, SubscriptionsProjection)
        self.policy = projection.policy
        self.http = httpx.AsyncClient(timeout=10.0)
        self.nats: tuple[NATS, JetStreamContext] | None = None
        self.sent = 0
        self.failed = 0
        self.attempts = 0

    async def close(self) -> None:
        await self.http.aclose()
        if self.nats is not None:
            await self.nats[0].close()

    async def tick(self, conn: psycopg.AsyncConnection[Any], ledger: Ledger) -> None:
        for replay in await pending_replays(conn):
            await self._replay(conn, replay)
        for delivery in await due_deliveries(conn, dt.datetime.now(dt.UTC)):
            await self._attempt(conn, delivery)

    async def _replay(self, conn: psycopg.AsyncConnection[Any], replay: Replay) -> None:
        """Ask again for the subscription's events from the replay's sequence to the log's end as it is now."""
        found = await list_subscriptions(conn, replay.subscription_id)
        if not found:
            return
        subscription = found[0]
        if self.nats is None:
            self.nats = await connect(self.nats_settings, "dealstream-subscriptions-replay")
        naming = self.nats_settings.naming
        now, rows, last = dt.datetime.now(dt.UTC), [], replay.from_sequence - 1
        async for message in scan(self.nats[1], naming.events_stream, start=max(1, replay.from_sequence)):
            last = message.sequence
            try:
                envelope = decode(message.data)
            except DecodeError:
                continue  # never appended by the ledger (it validates); the dead-letter stream is the engine's
            if matches(subscription, envelope):
                event = StoredEvent(sequence=message.sequence, subject=message.subject, envelope=envelope)
                rows.append(delivery_row(subscription, event, now, replay.replay_id))
        await finish_replay(conn, replay, rows, last)
        self.log.info("subscriptions.replayed", replay_id=replay.replay_id, deliveries=len(rows), to_sequence=last)

    async def _attempt(self, conn: psycopg.AsyncConnection[Any], delivery: DueDelivery) -> None:
        n = delivery.attempts + 1
        started, at = time.perf_counter(), dt.datetime.now(dt.UTC)
        status: int | None = None
        error: str | None = None
        headers = {
            "Content-Type": "application/json",
            "Dealstream-Event-Id": delivery.event_id,
            "Dealstream-Sequence": str(delivery.sequence),
            "Dealstream-Subscription-Id": delivery.subscription_id,
            "Dealstream-Delivery-Id": delivery.delivery_id,
            "Dealstream-Signature": signature(delivery.secret, int(time.time()), delivery.body),
        }
        try:
            response = await self.http.post(delivery.url, content=delivery.body, headers=headers)
            status = response.status_code
            if not 200 <= status < 300:
                error = f"HTTP {status}"
        except (httpx.HTTPError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}"[:1000]
        ok = error is None
        attempt = Attempt(
            n=n, at=at, ok=ok, status=status, error=error, duration_ms=(time.perf_counter() - started) * 1000
        )
        self.attempts += 1
        if ok:
            state, next_at = "delivered", at
            self.sent += 1
        elif n >= self.policy.max_attempts:
            state, next_at = "failed", at
            self.failed += 1
        else:
            state, next_at = "pending", at + self.policy.backoff(n)
        await record_attempt(conn, delivery.delivery_id, attempt, state, next_at)  # type: ignore[arg-type]
        self.log.info(
            "subscriptions.attempt",
            delivery_id=delivery.delivery_id,
            subscription_id=delivery.subscription_id,
            event_id=delivery.event_id,
            attempt=n,
            ok=ok,
            error=error,
            state=state,
        )
