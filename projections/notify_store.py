"""Notices and their deliveries in PostgreSQL: an outbox the notify worker drains, with every attempt recorded.

The projection writes one notice per alert or qualification event, in the engine's transaction, and keeps
each lead's and deal's owner, name and company (``<build>_subjects``, scrubbed on erasure), each task's owner
and each raised alert. The worker addresses a waiting notice to the subject's owner when it sends it, writing
its deliveries in the same transaction that marks it addressed, so each is asked for exactly once.
``notify_notices``, ``notify_deliveries`` and ``notify_attempts`` are shared by every build of the projection
(a rebuild must not send anything twice). They say what was sent, to whom, why, when and with what answer,
and are queryable at ``GET /v1/notices`` and ``GET /v1/notifications``; the texts naming an erased lead are
replaced.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import msgspec
from psycopg import AsyncConnection

from events.envelope import AggregateType, Envelope, StoredEvent
from events.types import (
    AlertEscalated,
    AlertRaised,
    DealOpened,
    Event,
    LeadAssigned,
    LeadCaptured,
    LeadDetailsFetched,
    LeadErased,
    LeadQualified,
    TaskScheduled,
)
from projections.notices import Address, Notice, Subject, notice_of, person
from projections.notify import Delivery, Message, NotifyRules
from projections.versions import build_name

VERSION = 2
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
    "CREATE INDEX IF NOT EXISTS notify_deliveries_event ON notify_deliveries (event_id)",
    attempts_table("notify_attempts", "notify_deliveries"),
    # The lead a delivery names, so that its text is scrubbed when the lead is erased.
    "ALTER TABLE notify_deliveries ADD COLUMN IF NOT EXISTS lead_id text",
    "CREATE INDEX IF NOT EXISTS notify_deliveries_lead ON notify_deliveries (lead_id) WHERE lead_id IS NOT NULL",
    """
    CREATE TABLE IF NOT EXISTS notify_notices (
        event_id text PRIMARY KEY,
        lead_id text,
        notice jsonb NOT NULL,
        state text NOT NULL DEFAULT 'waiting',
        recipient text,
        why text,
        created_at timestamptz NOT NULL,
        addressed_at timestamptz
    )
    """,
    "CREATE INDEX IF NOT EXISTS notify_notices_waiting ON notify_notices (created_at) WHERE state = 'waiting'",
    "CREATE INDEX IF NOT EXISTS notify_notices_lead ON notify_notices (lead_id) WHERE lead_id IS NOT NULL",
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
_notices = msgspec.json.Encoder()
_notice_decoder = msgspec.json.Decoder(Notice)
_raised = msgspec.json.Decoder(AlertRaised)


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
    """Asks for a notice of each alert and qualification event, and knows each lead's and deal's owner, name and
    company (opened with the vault, scrubbed on erasure) to address and write it when it is sent."""

    name = "notify"
    version = VERSION
    partitioned: tuple[AggregateType, ...] = ("lead", "deal", "alert")
    broadcast: tuple[AggregateType, ...] = ()
    reads_personal: tuple[type[Event], ...] = (LeadCaptured, LeadDetailsFetched, LeadQualified, DealOpened)

    def __init__(self, rules: NotifyRules, instance: str = "") -> None:
        self.rules = rules
        self.build = build_name(self.name, self.version, instance)
        self.subjects = f"{self.build}_subjects"
        self.alerts = f"{self.build}_alerts"
        self.tasks = f"{self.build}_tasks"

    def ddl(self) -> Sequence[str]:
        return (
            *DDL,
            f"CREATE TABLE IF NOT EXISTS {self.subjects} (subject_type text NOT NULL, subject_id text NOT NULL, "
            "lead_id text, owner text, name text, company text, PRIMARY KEY (subject_type, subject_id))",
            f"CREATE INDEX IF NOT EXISTS {self.subjects}_lead ON {self.subjects} (lead_id)",
            f"CREATE TABLE IF NOT EXISTS {self.alerts} (alert_id text PRIMARY KEY, raised jsonb NOT NULL)",
            f"CREATE TABLE IF NOT EXISTS {self.tasks} (subject_type text NOT NULL, subject_id text NOT NULL, "
            "task_id text NOT NULL, owner text NOT NULL, PRIMARY KEY (subject_type, subject_id, task_id))",
        )

    async def apply_batch(self, conn: AsyncConnection[Any], events: Sequence[StoredEvent]) -> None:
        alerts = await self._alerts(conn, events)
        subjects = await self._subjects(conn, events, alerts.values())
        changed: set[tuple[str, str]] = set()
        raised: dict[str, AlertRaised] = {}
        notices: list[tuple[str, str | None, str]] = []
        tasks: dict[tuple[str, str, str], str] = {}
        erased: list[str] = []
        now = dt.datetime.now(dt.UTC)
        oldest = now - dt.timedelta(hours=self.rules.max_age_hours)
        for event in events:
            env = event.envelope
            data = env.data
            key = (env.aggregate_type, env.aggregate_id)
            if isinstance(data, LeadErased):
                erased.append(env.aggregate_id)
                for k, row in subjects.items():
                    if row.lead_id == env.aggregate_id:
                        subjects[k] = msgspec.structs.replace(row, name=None, company=None)
                        changed.add(k)
            elif (folded := fold_subject(subjects.get(key), env)) is not None:
                subjects[key] = folded
                changed.add(key)
            if isinstance(data, AlertRaised):
                alerts[env.aggregate_id] = raised[env.aggregate_id] = data
            elif isinstance(data, TaskScheduled) and data.owner is not None:
                tasks[(*key, data.task_id)] = data.owner
            notice = notice_of(env, alerts.get(env.aggregate_id))
            if notice is not None and env.recorded_at >= oldest:
                about = subjects.get((notice.subject_type, notice.subject_id))
                lead = notice.subject_id if notice.subject_type == "lead" else about.lead_id if about else None
                notices.append((notice.event_id, lead, _notices.encode(notice).decode()))
        async with conn.cursor() as cur:
            if changed:
                await cur.executemany(
                    f"INSERT INTO {self.subjects} (subject_type, subject_id, lead_id, owner, name, company) "  # noqa: S608
                    "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (subject_type, subject_id) DO UPDATE SET "
                    "lead_id = EXCLUDED.lead_id, owner = EXCLUDED.owner, name = EXCLUDED.name, "
                    "company = EXCLUDED.company",
                    [
                        (*k, r.lead_id, r.owner, r.name, r.company)
                        for k, r in ((k, subjects[k]) for k in sorted(changed))
                    ],
                )
            if tasks:
                await cur.executemany(
                    f"INSERT INTO {self.tasks} (subject_type, subject_id, task_id, owner) "  # noqa: S608
                    "VALUES (%s, %s, %s, %s) ON CONFLICT (subject_type, subject_id, task_id) DO UPDATE SET "
                    "owner = EXCLUDED.owner",
                    [(*k, owner) for k, owner in sorted(tasks.items())],
                )
            if raised:
                await cur.executemany(
                    f"INSERT INTO {self.alerts} (alert_id, raised) VALUES (%s, %s::jsonb) "  # noqa: S608
                    "ON CONFLICT DO NOTHING",
                    [(a, msgspec.json.encode(r).decode()) for a, r in sorted(raised.items())],
                )
            if notices:
                # Shared by every build: a notice asked for once is addressed and sent once. An event a build
                # before notices (notify_v1) sent deliveries for was announced already.
                await cur.executemany(
                    "INSERT INTO notify_notices (event_id, lead_id, notice, created_at) "
                    "SELECT %s, %s, %s::jsonb, %s WHERE NOT EXISTS "
                    "(SELECT 1 FROM notify_deliveries WHERE event_id = %s) ON CONFLICT DO NOTHING",
                    [(*n, now, n[0]) for n in notices],
                )
            if erased:
                await scrub(conn, erased)

    async def _subjects(
        self, conn: AsyncConnection[Any], events: Sequence[StoredEvent], escalated: Iterable[AlertRaised]
    ) -> dict[tuple[str, str], SubjectRow]:
        """The rows of the batch's leads and deals, of its alerts' subjects, and of the deals of its erased leads."""
        raised = [e.envelope.data for e in events if isinstance(e.envelope.data, AlertRaised)]
        keys = sorted(
            {(e.envelope.aggregate_type, e.envelope.aggregate_id) for e in events}
            | {(a.subject_type, a.subject_id) for a in (*raised, *escalated)}
        )
        erased = sorted({e.envelope.aggregate_id for e in events if isinstance(e.envelope.data, LeadErased)})
        select = f"SELECT subject_type, subject_id, lead_id, owner, name, company FROM {self.subjects} "  # noqa: S608
        cur = await conn.execute(
            select + "WHERE (subject_type, subject_id) IN (SELECT * FROM unnest(%s::text[], %s::text[]))",  # noqa: S608
            ([t for t, _ in keys], [i for _, i in keys]),
        )
        rows = await cur.fetchall()
        if erased:  # their deals too: a deal's name is sealed with its lead's key
            rows += await (await conn.execute(select + "WHERE lead_id = ANY(%s)", (erased,))).fetchall()
        return {(r[0], r[1]): SubjectRow(lead_id=r[2], owner=r[3], name=r[4], company=r[5]) for r in rows}

    async def _alerts(self, conn: AsyncConnection[Any], events: Sequence[StoredEvent]) -> dict[str, AlertRaised]:
        """The raised alerts the batch escalates."""
        ids = sorted({e.envelope.aggregate_id for e in events if isinstance(e.envelope.data, AlertEscalated)})
        if not ids:
            return {}
        cur = await conn.execute(
            f"SELECT alert_id, raised::text FROM {self.alerts} WHERE alert_id = ANY(%s)",  # noqa: S608
            (ids,),
        )
        return {a: _raised.decode(r) for a, r in await cur.fetchall()}


class SubjectRow(msgspec.Struct, frozen=True, kw_only=True):
    """A lead or deal as notices need it. ``name``, ``company``: opened personal data, None once erased."""

    lead_id: str | None = None
    owner: str | None = None
    name: str | None = None
    company: str | None = None


def fold_subject(row: SubjectRow | None, env: Envelope) -> SubjectRow | None:
    """The lead's or deal's row after one of its events; None when the event does not change it."""
    data = env.data
    if isinstance(data, LeadCaptured | LeadDetailsFetched):
        name, company = person(data)
        if isinstance(data, LeadDetailsFetched) and not (name or company):
            return None
        base = row or SubjectRow(lead_id=env.aggregate_id)
        return msgspec.structs.replace(base, name=name or base.name, company=company or base.company)
    if isinstance(data, LeadAssigned):
        return msgspec.structs.replace(row or SubjectRow(lead_id=env.aggregate_id), owner=data.owner)
    if isinstance(data, DealOpened):
        return SubjectRow(lead_id=data.lead_id, owner=data.owner, name=data.name)
    return None


ERASED_TEXT = "This notice named a lead whose personal data was erased."


async def scrub(conn: AsyncConnection[Any], lead_ids: list[str]) -> None:
    """Erased leads: the texts of their notices and deliveries, which name and quote them, are gone."""
    await conn.execute("UPDATE notify_notices SET notice = notice - 'reason' WHERE lead_id = ANY(%s)", (lead_ids,))
    await conn.execute(
        "UPDATE notify_deliveries SET message = jsonb_set(message, '{text}', to_jsonb(%s::text)) "
        "WHERE lead_id = ANY(%s)",
        (ERASED_TEXT, lead_ids),
    )


class Waiting(msgspec.Struct, frozen=True, kw_only=True):
    """A notice not yet addressed, with its subject as the build knows it now."""

    notice: Notice
    lead_id: str | None
    created_at: dt.datetime
    subject: Subject


async def waiting_notices(conn: AsyncConnection[Any], build: str, limit: int = 100) -> list[Waiting]:
    """Notices nobody was chosen for yet, oldest first, each with its lead's or deal's current owner and name
    (and its task's owner, for a task's alert)."""
    subjects, tasks = f"{build}_subjects", f"{build}_tasks"
    cur = await conn.execute(
        "SELECT n.notice::text, coalesce(n.lead_id, s.lead_id), n.created_at, s.owner, s.name, s.company, t.owner "  # noqa: S608
        f"FROM notify_notices n LEFT JOIN {subjects} s ON s.subject_type = n.notice->>'subject_type' "
        "AND s.subject_id = n.notice->>'subject_id' "
        f"LEFT JOIN {tasks} t ON t.subject_type = n.notice->>'subject_type' "
        "AND t.subject_id = n.notice->>'subject_id' AND t.task_id = n.notice->>'task_id' "
        "WHERE n.state = 'waiting' ORDER BY n.created_at, n.event_id LIMIT %s",
        (limit,),
    )
    return [
        Waiting(
            notice=_notice_decoder.decode(r[0]),
            lead_id=r[1],
            created_at=r[2],
            subject=Subject(owner=r[3], name=r[4], company=r[5], task_owner=r[6]),
        )
        for r in await cur.fetchall()
    ]


async def addressed(
    conn: AsyncConnection[Any], waiting: Waiting, to: Address, sends: Sequence[Delivery], now: dt.datetime
) -> bool:
    """The notice addressed and its deliveries asked for, together, once: False if it was addressed already."""
    async with conn.transaction():
        cur = await conn.execute(
            "UPDATE notify_notices SET state = 'addressed', recipient = %s, why = %s, addressed_at = %s "
            "WHERE event_id = %s AND state = 'waiting'",
            (to.recipient, to.why, now, waiting.notice.event_id),
        )
        if cur.rowcount != 1:
            return False
        async with conn.cursor() as c:
            await c.executemany(
                "INSERT INTO notify_deliveries (delivery_id, event_id, recipient, channel, target, message, "
                "next_attempt_at, lead_id) VALUES (%s, %s, %s, %s, %s, %s::jsonb, %s, %s) ON CONFLICT DO NOTHING",
                [
                    (
                        d.delivery_id,
                        d.event_id,
                        d.recipient,
                        d.channel,
                        d.target,
                        msgspec.json.encode(d.message).decode(),
                        now,
                        waiting.lead_id,
                    )
                    for d in sends
                ],
            )
    return True


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


NoticeState = Literal["waiting", "addressed"]


class NoticeRow(msgspec.Struct, frozen=True, kw_only=True):
    """A notice as operators see it: about what, who was chosen to hear it and why (no personal text)."""

    event_id: str
    type: str
    kind: str
    subject_type: str
    subject_id: str
    state: NoticeState
    recipient: str | None
    why: str | None
    created_at: dt.datetime
    addressed_at: dt.datetime | None
    deliveries: int
    """0 once addressed: the recipient has no channel in ``[notify.recipients]`` (or nobody could be chosen)."""


async def list_notices(
    conn: AsyncConnection[Any], state: NoticeState | None = None, limit: int = 50
) -> list[NoticeRow]:
    """Notices newest first: those ``waiting`` for an owner, or ``addressed`` (to whom, why)."""
    cur = await conn.execute(
        "SELECT event_id, notice->>'type', notice->>'kind', notice->>'subject_type', notice->>'subject_id', state, "
        "recipient, why, created_at, addressed_at, "
        "(SELECT count(*) FROM notify_deliveries d WHERE d.event_id = n.event_id AND d.recipient = n.recipient) "
        "FROM notify_notices n WHERE (%s::text IS NULL OR state = %s) "
        "ORDER BY created_at DESC, event_id LIMIT %s",
        (state, state, limit),
    )
    return [
        NoticeRow(
            event_id=r[0],
            type=r[1],
            kind=r[2],
            subject_type=r[3],
            subject_id=r[4],
            state=r[5],
            recipient=r[6],
            why=r[7],
            created_at=r[8],
            addressed_at=r[9],
            deliveries=r[10],
        )
        for r in await cur.fetchall()
    ]
