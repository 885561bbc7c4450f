"""Webhook subscriptions in PostgreSQL: the subscriptions with their audit trail, and an outbox of deliveries
with every attempt recorded.

Subscriptions are configuration an operator changes, with a secret that must be revocable: they are kept here,
not on the log (which nothing may change or delete), and every change is written to
``webhook_subscription_audit`` in the same transaction. The projection writes one delivery per matching event in
the engine's transaction; the tables are shared by every build, so a rebuild sends nothing twice. A replay asks
for the events from a stream sequence again, as new deliveries.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import Any, Literal

import msgspec
from psycopg import AsyncConnection
from psycopg.errors import UniqueViolation

from events.codec import encode
from events.envelope import AGGREGATE_TYPES, AggregateType, StoredEvent
from events.ids import derived_id
from projections.notify_store import Attempt, attempts_of, attempts_table
from projections.subscriptions import DeliveryPolicy, Subscription, matches
from projections.versions import build_name

VERSION = 1
DeliveryState = Literal["pending", "delivered", "failed", "cancelled"]

DDL = (
    """
    CREATE TABLE IF NOT EXISTS webhook_subscriptions (
        subscription_id text PRIMARY KEY,
        url text NOT NULL,
        event_types jsonb NOT NULL,
        filter jsonb NOT NULL,
        secret text,
        active boolean NOT NULL,
        description text,
        created_at timestamptz NOT NULL,
        created_by text NOT NULL,
        deleted_at timestamptz
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS webhook_subscription_audit (
        n bigserial PRIMARY KEY,
        subscription_id text NOT NULL,
        at timestamptz NOT NULL,
        actor text NOT NULL,
        action text NOT NULL,
        detail jsonb NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS webhook_deliveries (
        delivery_id text PRIMARY KEY,
        subscription_id text NOT NULL,
        event_id text NOT NULL,
        event_type text NOT NULL,
        sequence bigint NOT NULL,
        replay_id text,
        body text NOT NULL,
        state text NOT NULL DEFAULT 'pending',
        attempts integer NOT NULL DEFAULT 0,
        next_attempt_at timestamptz NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        delivered_at timestamptz,
        last_error text
    )
    """,
    "CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE state = 'pending'",
    "CREATE INDEX IF NOT EXISTS webhook_deliveries_of ON webhook_deliveries (subscription_id, created_at DESC)",
    attempts_table("webhook_attempts", "webhook_deliveries"),
    """
    CREATE TABLE IF NOT EXISTS webhook_replays (
        replay_id text PRIMARY KEY,
        subscription_id text NOT NULL,
        from_sequence bigint NOT NULL,
        requested_at timestamptz NOT NULL,
        requested_by text NOT NULL,
        done_at timestamptz,
        to_sequence bigint,
        enqueued integer
    )
    """,
)

_SUBSCRIPTION = "subscription_id, url, event_types::text, filter::text, active, description, created_at, created_by"


class WebhookDelivery(msgspec.Struct, frozen=True, kw_only=True):
    """One event sent (or still to be sent) to one subscription, with every attempt."""

    delivery_id: str
    subscription_id: str
    event_id: str
    event_type: str
    sequence: int
    replay_id: str | None
    state: DeliveryState
    attempts: int
    next_attempt_at: dt.datetime
    created_at: dt.datetime
    delivered_at: dt.datetime | None
    last_error: str | None
    history: list[Attempt] = []


class DueDelivery(msgspec.Struct, frozen=True, kw_only=True):
    """What the worker needs to send a delivery: the body as it will be signed, where to, with what secret."""

    delivery_id: str
    subscription_id: str
    event_id: str
    sequence: int
    body: bytes
    attempts: int
    url: str
    secret: str


class Replay(msgspec.Struct, frozen=True, kw_only=True):
    replay_id: str
    subscription_id: str
    from_sequence: int


def _subscription(r: Sequence[Any]) -> Subscription:
    return Subscription(
        subscription_id=r[0],
        url=r[1],
        event_types=json.loads(r[2]),
        filter=json.loads(r[3]),
        active=r[4],
        description=r[5],
        created_at=r[6],
        created_by=r[7],
    )


async def ensure_tables(conn: AsyncConnection[Any]) -> None:
    """Create the tables if they are not there yet (the API may be asked before any worker ran)."""
    for attempt in (1, 2):
        try:
            for statement in DDL:
                await conn.execute(statement)
            return
        except UniqueViolation:
            # Two sessions creating the same table at once: one loses with this; the table is there now.
            if attempt == 2:
                raise


async def _audit(
    conn: AsyncConnection[Any], subscription_id: str, at: dt.datetime, actor: str, action: str, detail: object
) -> None:
    await conn.execute(
        "INSERT INTO webhook_subscription_audit (subscription_id, at, actor, action, detail) "
        "VALUES (%s, %s, %s, %s, %s::jsonb)",
        (subscription_id, at, actor, action, json.dumps(detail)),
    )


async def create_subscription(conn: AsyncConnection[Any], subscription: Subscription, secret: str) -> None:
    """The new subscription and its audit line, together (the secret is not audited)."""
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO webhook_subscriptions (subscription_id, url, event_types, filter, secret, active, "
            "description, created_at, created_by) VALUES (%s, %s, %s::jsonb, %s::jsonb, %s, %s, %s, %s, %s)",
            (
                subscription.subscription_id,
                subscription.url,
                json.dumps(subscription.event_types),
                json.dumps(subscription.filter),
                secret,
                subscription.active,
                subscription.description,
                subscription.created_at,
                subscription.created_by,
            ),
        )
        detail = msgspec.to_builtins(subscription)
        await _audit(
            conn, subscription.subscription_id, subscription.created_at, subscription.created_by, "created", detail
        )


async def delete_subscription(conn: AsyncConnection[Any], subscription_id: str, at: dt.datetime, actor: str) -> bool:
    """Switch it off for good: its secret is wiped and its pending deliveries cancelled. False if unknown."""
    async with conn.transaction():
        cur = await conn.execute(
            "UPDATE webhook_subscriptions SET active = false, secret = NULL, deleted_at = %s "
            "WHERE subscription_id = %s AND deleted_at IS NULL",
            (at, subscription_id),
        )
        if cur.rowcount == 0:
            return False
        await conn.execute(
            "UPDATE webhook_deliveries SET state = 'cancelled' WHERE subscription_id = %s AND state = 'pending'",
            (subscription_id,),
        )
        await _audit(conn, subscription_id, at, actor, "deleted", {})
    return True


async def list_subscriptions(conn: AsyncConnection[Any], subscription_id: str | None = None) -> list[Subscription]:
    """The subscriptions not deleted, oldest first (or the one asked for)."""
    where, params = "deleted_at IS NULL", ()
    if subscription_id is not None:
        where, params = "deleted_at IS NULL AND subscription_id = %s", (subscription_id,)  # type: ignore[assignment]
    cur = await conn.execute(
        f"SELECT {_SUBSCRIPTION} FROM webhook_subscriptions WHERE {where} ORDER BY created_at, subscription_id",  # noqa: S608
        params,
    )
    return [_subscription(r) for r in await cur.fetchall()]


async def request_replay(
    conn: AsyncConnection[Any], subscription_id: str, from_sequence: int, at: dt.datetime, actor: str
) -> str:
    """Ask the worker to send the subscription's events from ``from_sequence`` to the end of the log again."""
    replay_id = derived_id("webhook-replay", subscription_id, str(from_sequence), at.isoformat())
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO webhook_replays (replay_id, subscription_id, from_sequence, requested_at, requested_by) "
            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (replay_id, subscription_id, from_sequence, at, actor),
        )
        await _audit(
            conn, subscription_id, at, actor, "replay", {"from_sequence": from_sequence, "replay_id": replay_id}
        )
    return replay_id


async def pending_replays(conn: AsyncConnection[Any]) -> list[Replay]:
    cur = await conn.execute(
        "SELECT r.replay_id, r.subscription_id, r.from_sequence FROM webhook_replays r "
        "JOIN webhook_subscriptions s USING (subscription_id) "
        "WHERE r.done_at IS NULL AND s.active ORDER BY r.requested_at, r.replay_id"
    )
    return [Replay(replay_id=a, subscription_id=b, from_sequence=c) for a, b, c in await cur.fetchall()]


def delivery_row(
    subscription: Subscription, event: StoredEvent, now: dt.datetime, replay_id: str | None = None
) -> tuple[Any, ...]:
    """A delivery's row. Its id derives from the subscription, the event (and the replay), so folding the event
    again asks for the same delivery."""
    env = event.envelope
    parts = (subscription.subscription_id, env.event_id) + ((replay_id,) if replay_id else ())
    return (
        derived_id("webhook-delivery", *parts),
        subscription.subscription_id,
        env.event_id,
        env.type,
        event.sequence,
        replay_id,
        encode(env).decode(),
        now,
    )


async def enqueue(conn: AsyncConnection[Any], rows: Sequence[tuple[Any, ...]]) -> None:
    if not rows:
        return
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO webhook_deliveries (delivery_id, subscription_id, event_id, event_type, sequence, replay_id, "
            "body, next_attempt_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            rows,
        )


async def finish_replay(conn: AsyncConnection[Any], replay: Replay, rows: Sequence[tuple[Any, ...]], last: int) -> None:
    """The replay's deliveries and its end, together: a replay cut short is done again whole, asking for the
    same deliveries."""
    async with conn.transaction():
        await enqueue(conn, rows)
        await conn.execute(
            "UPDATE webhook_replays SET done_at = now(), to_sequence = %s, enqueued = %s WHERE replay_id = %s",
            (last, len(rows), replay.replay_id),
        )


class SubscriptionsProjection:
    """Asks for one delivery per event of the log that an active subscription matches."""

    name = "subscriptions"
    version = VERSION
    partitioned: tuple[AggregateType, ...] = AGGREGATE_TYPES
    broadcast: tuple[AggregateType, ...] = ()

    def __init__(self, instance: str = "", policy: DeliveryPolicy | None = None) -> None:
        self.build = build_name(self.name, self.version, instance)
        self.policy = policy or DeliveryPolicy()

    def ddl(self) -> Sequence[str]:
        return DDL

    async def apply_batch(self, conn: AsyncConnection[Any], events: Sequence[StoredEvent]) -> None:
        cur = await conn.execute(
            f"SELECT {_SUBSCRIPTION} FROM webhook_subscriptions WHERE active"  # noqa: S608
        )
        subscriptions = [_subscription(r) for r in await cur.fetchall()]
        if not subscriptions:
            return
        now = dt.datetime.now(dt.UTC)
        rows = [
            delivery_row(s, event, now)
            for event in events
            for s in subscriptions
            # A subscription hears of what is recorded after it was made; older events come by replay only.
            if event.envelope.recorded_at >= s.created_at and matches(s, event.envelope)
        ]
        await enqueue(conn, rows)


async def due_deliveries(conn: AsyncConnection[Any], now: dt.datetime, limit: int = 50) -> list[DueDelivery]:
    cur = await conn.execute(
        "SELECT d.delivery_id, d.subscription_id, d.event_id, d.sequence, d.body, d.attempts, s.url, s.secret "
        "FROM webhook_deliveries d JOIN webhook_subscriptions s USING (subscription_id) "
        "WHERE d.state = 'pending' AND d.next_attempt_at <= %s AND s.active "
        "ORDER BY d.next_attempt_at, d.sequence, d.delivery_id LIMIT %s",
        (now, limit),
    )
    return [
        DueDelivery(
            delivery_id=r[0],
            subscription_id=r[1],
            event_id=r[2],
            sequence=r[3],
            body=r[4].encode(),
            attempts=r[5],
            url=r[6],
            secret=r[7],
        )
        for r in await cur.fetchall()
    ]


async def record_attempt(
    conn: AsyncConnection[Any], delivery_id: str, attempt: Attempt, state: DeliveryState, next_attempt_at: dt.datetime
) -> None:
    """The attempt and the delivery's new state, together."""
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO webhook_attempts (delivery_id, n, at, ok, status, error, duration_ms) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (delivery_id, attempt.n, attempt.at, attempt.ok, attempt.status, attempt.error, attempt.duration_ms),
        )
        await conn.execute(
            "UPDATE webhook_deliveries SET state = %s, attempts = %s, next_attempt_at = %s, last_error = %s, "
            "delivered_at = CASE WHEN %s THEN %s ELSE delivered_at END WHERE delivery_id = %s",
            (state, attempt.n, next_attempt_at, attempt.error, attempt.ok, attempt.at, delivery_id),
        )


async def list_deliveries(conn: AsyncConnection[Any], subscription_id: str, limit: int = 100) -> list[WebhookDelivery]:
    """A subscription's deliveries in log order (replays after), each with its attempts."""
    cur = await conn.execute(
        "SELECT delivery_id, subscription_id, event_id, event_type, sequence, replay_id, state, attempts, "
        "next_attempt_at, created_at, delivered_at, last_error FROM webhook_deliveries WHERE subscription_id = %s "
        "ORDER BY created_at, sequence, delivery_id LIMIT %s",
        (subscription_id, limit),
    )
    rows = [
        WebhookDelivery(
            delivery_id=r[0],
            subscription_id=r[1],
            event_id=r[2],
            event_type=r[3],
            sequence=r[4],
            replay_id=r[5],
            state=r[6],
            attempts=r[7],
            next_attempt_at=r[8],
            created_at=r[9],
            delivered_at=r[10],
            last_error=r[11],
        )
        for r in await cur.fetchall()
    ]
    if not rows:
        return rows
    attempts = await attempts_of(conn, "webhook_attempts", [r.delivery_id for r in rows])
    return [msgspec.structs.replace(r, history=attempts.get(r.delivery_id, [])) for r in rows]
