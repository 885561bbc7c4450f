"""Notification deliveries in PostgreSQL: an outbox the notify worker drains, with every attempt recorded.

The projection writes one row per delivery an event calls for, in the engine's transaction, so each is
asked for exactly once; ``notify_deliveries`` and ``notify_attempts`` are shared by every build of the
projection (a rebuild must not send anything twice). They are operational records, not a read model: they
say what was sent, to whom, when and with what answer, and are queryable at ``GET /v1/notifications``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, Literal

import msgspec
from psycopg import AsyncConnection

from events.envelope import AggregateType, StoredEvent
from events.types import AlertEscalated, AlertRaised, LeadAssigned, LeadQualified
from projections.notify import Message, NotifyRules, deliveries
from projections.versions import build_name

VERSION = 1
DeliveryState = Literal["pending", "delivered", "failed"]


def attempts_table(table: str, deliveries: str) -> str:
    """The attempts of a deliveries table, one row per try: notices' and subscriptions' alike."""
    return f"""
    CREATE TABLE IF NOT EXISTS {table} (
        delivery_id text NOT NULL REFERENCES {deliveries},
        n integer NOT NULL,
        at timestamptz NOT NULL,
        ok boolean NOT NULL,
        status integer,
        error text,
        duration_ms double precision NOT NULL,
        PRIMARY KEY (delivery_id, n)
    )
    """


DDL = (
    """
    CREATE TABLE IF NOT EXISTS notify_deliveries (
        delivery_id text PRIMARY KEY,
        event_id text NOT NULL,
        recipient text NOT NULL,
        channel text NOT NULL,
        target text NOT NULL,
        message jsonb NOT NULL,
        state text NOT NULL DEFAULT 'pending',
        attempts integer NOT NULL DEFAULT 0,
        next_attempt_at timestamptz NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        delivered_at timestamptz,
        last_error text
    )
    """,
    "CREATE INDEX IF NOT EXISTS notify_deliveries_due ON notify_deliveries (next_attempt_at) WHERE state = 'pending'",
    "CREATE INDEX IF NOT EXISTS notify_deliveries_recipient ON notify_deliveries (recipient, created_at DESC)",
    attempts_table("notify_attempts", "notify_deliveries"),
)


class Attempt(msgspec.Struct, frozen=True, kw_only=True):
    n: int
    at: dt.datetime
    ok: bool
    status: int | None
    error: str | None
    duration_ms: float


class DeliveryRow(msgspec.Struct, frozen=True, kw_only=True):
    delivery_id: str
    event_id: str
    recipient: str
    channel: str
    target: str
    message: Message
    state: DeliveryState
    attempts: int
    next_attempt_at: dt.datetime
    created_at: dt.datetime
    delivered_at: dt.datetime | None
    last_error: str | None
    history: list[Attempt] = []


_COLUMNS = (
    "delivery_id, event_id, recipient, channel, target, message::text, state, attempts, next_attempt_at, "
    "created_at, delivered_at, last_error"
)
_message_decoder = msgspec.json.Decoder(Message)


def _row(r: Sequence[Any]) -> DeliveryRow:
    return DeliveryRow(
        delivery_id=r[0],
        event_id=r[1],
        recipient=r[2],
        channel=r[3],
        target=r[4],
        message=_message_decoder.decode(r[5]),
        state=r[6],
        attempts=r[7],
        next_attempt_at=r[8],
        created_at=r[9],
        delivered_at=r[10],
        last_error=r[11],
    )


class NotifyProjection:
    """Asks for the deliveries of alert and qualification events; knows each lead's owner to address them."""

    name = "notify"
    version = VERSION
    partitioned: tuple[AggregateType, ...] = ("lead", "alert")
    broadcast: tuple[AggregateType, ...] = ()

    def __init__(self, rules: NotifyRules, instance: str = "") -> None:
        self.rules = rules
        self.build = build_name(self.name, self.version, instance)
        self.owners = f"{self.build}_owners"

    def ddl(self) -> Sequence[str]:
        return (
            *DDL,
            f"CREATE TABLE IF NOT EXISTS {self.owners} (lead_id text PRIMARY KEY, owner text NOT NULL)",
        )

    async def apply_batch(self, conn: AsyncConnection[Any], events: Sequence[StoredEvent]) -> None:
        leads = sorted({e.envelope.aggregate_id for e in events if e.envelope.aggregate_type == "lead"})
        owners: dict[str, str] = {}
        async with conn.cursor() as cur:
            if leads:
                await cur.execute(f"SELECT lead_id, owner FROM {self.owners} WHERE lead_id = ANY(%s)", (leads,))  # noqa: S608
                owners = {lead_id: owner for lead_id, owner in await cur.fetchall()}
        changed: dict[str, str] = {}
        rows: list[tuple[Any, ...]] = []
        now = dt.datetime.now(dt.UTC)
        oldest = now - dt.timedelta(hours=self.rules.max_age_hours)
        for event in events:
            env = event.envelope
            data = env.data
            if isinstance(data, LeadAssigned):
                owners[env.aggregate_id] = changed[env.aggregate_id] = data.owner
            elif isinstance(data, AlertRaised | AlertEscalated | LeadQualified) and env.recorded_at >= oldest:
                for d in deliveries(self.rules, env, owners.get(env.aggregate_id)):
                    rows.append(
                        (
                            d.delivery_id,
                            d.event_id,
                            d.recipient,
                            d.channel,
                            d.target,
                            msgspec.json.encode(d.message).decode(),
                            now,
                        )
                    )
        async with conn.cursor() as cur:
            if changed:
                await cur.executemany(
                    f"INSERT INTO {self.owners} (lead_id, owner) VALUES (%s, %s) "  # noqa: S608
                    "ON CONFLICT (lead_id) DO UPDATE SET owner = EXCLUDED.owner",
                    sorted(changed.items()),
                )
            if rows:
                await cur.executemany(
                    "INSERT INTO notify_deliveries (delivery_id, event_id, recipient, channel, target, message, "
                    "next_attempt_at) VALUES (%s, %s, %s, %s, %s, %s::jsonb, %s) ON CONFLICT DO NOTHING",
                    rows,
                )


async def due_deliveries(conn: AsyncConnection[Any], now: dt.datetime, limit: int = 50) -> list[DeliveryRow]:
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM notify_deliveries WHERE state = 'pending' AND next_attempt_at <= %s "  # noqa: S608
        "ORDER BY next_attempt_at, delivery_id LIMIT %s",
        (now, limit),
    )
    return [_row(r) for r in await cur.fetchall()]


async def record_attempt(
    conn: AsyncConnection[Any],
    delivery: DeliveryRow,
    attempt: Attempt,
    state: DeliveryState,
    next_attempt_at: dt.datetime,
) -> None:
    """The attempt and the delivery's new state, together."""
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO notify_attempts (delivery_id, n, at, ok, status, error, duration_ms) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (
                delivery.delivery_id,
                attempt.n,
                attempt.at,
                attempt.ok,
                attempt.status,
                attempt.error,
                attempt.duration_ms,
            ),
        )
        await conn.execute(
            "UPDATE notify_deliveries SET state = %s, attempts = %s, next_attempt_at = %s, last_error = %s, "
            "delivered_at = CASE WHEN %s THEN %s ELSE delivered_at END WHERE delivery_id = %s",
            (state, attempt.n, next_attempt_at, attempt.error, attempt.ok, attempt.at, delivery.delivery_id),
        )


async def defer(conn: AsyncConnection[Any], delivery_id: str, until: dt.datetime) -> None:
    await conn.execute("UPDATE notify_deliveries SET next_attempt_at = %s WHERE delivery_id = %s", (until, delivery_id))


async def list_deliveries(
    conn: AsyncConnection[Any],
    recipient: str | None = None,
    state: DeliveryState | None = None,
    event_id: str | None = None,
    limit: int = 50,
) -> list[DeliveryRow]:
    """Deliveries newest first, each with its attempts."""
    where, params = ["true"], []
    for column, value in (("recipient", recipient), ("state", state), ("event_id", event_id)):
        if value is not None:
            where.append(f"{column} = %s")
            params.append(value)
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM notify_deliveries WHERE {' AND '.join(where)} "  # noqa: S608
        "ORDER BY created_at DESC, delivery_id LIMIT %s",
        (*params, limit),
    )
    rows = [_row(r) for r in await cur.fetchall()]
    if not rows:
        return rows
    attempts = await attempts_of(conn, "notify_attempts", [r.delivery_id for r in rows])
    return [msgspec.structs.replace(r, history=attempts.get(r.delivery_id, [])) for r in rows]


async def attempts_of(
    conn: AsyncConnection[Any], table: Literal["notify_attempts", "webhook_attempts"], delivery_ids: list[str]
) -> dict[str, list[Attempt]]:
    """Every attempt of the given deliveries, in order, by delivery: notices' and subscriptions' alike."""
    cur = await conn.execute(
        f"SELECT delivery_id, n, at, ok, status, error, duration_ms FROM {table} "  # noqa: S608 - one of two names
        "WHERE delivery_id = ANY(%s) ORDER BY delivery_id, n",
        (delivery_ids,),
    )
    attempts: dict[str, list[Attempt]] = {}
    for d, n, at, ok, status, error, ms in await cur.fetchall():
        attempts.setdefault(d, []).append(Attempt(n=n, at=at, ok=ok, status=status, error=error, duration_ms=ms))
    return attempts
