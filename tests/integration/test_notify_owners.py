"""Notices reach whoever owns the lead when they are sent, once, and read like a message (real servers)."""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterator
from typing import Any

import msgspec
import psycopg
import pytest
from nats.js import JetStreamContext

from events.config import NatsSettings
from events.store import EventStore
from events.subjects import Naming
from events.types import AlertRaised, Event, LeadAssigned, LeadCaptured, LeadErased, LeadQualified, TaskScheduled
from projections.notify import NotifyRules, Recipient
from projections.notify_store import ERASED_TEXT, NotifyProjection, list_deliveries
from tests.builders import deal_opened, envelope
from tests.integration.test_notify_worker import Receiver, notify_worker
from tests.projection_fixtures import wait_caught_up
from tests.waiting import eventually
from workers.notify import NotifyActor

pytestmark = pytest.mark.integration

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
MARTA = LeadCaptured(full_name="Marta Kowalska", company="Kowalski i Synowie", email="marta@example.com")


@pytest.fixture
def hooks() -> Iterator[Receiver]:
    server = Receiver(failures=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def rules_for(hooks: Receiver, wait: float = 3600.0) -> NotifyRules:
    return NotifyRules(
        recipients={"ana": Recipient(webhook=hooks.url), "boss": Recipient(webhook=hooks.url)},
        fallback="boss",
        unassigned_wait_seconds=wait,
        public_url="https://crm.example.com",
    )


async def on_lead(store: EventStore, lead_id: str, data: Event, at: dt.datetime = NOW) -> str:
    env = envelope(data, aggregate_type="lead", aggregate_id=lead_id, occurred_at=at)
    await store.append([env], None)
    return env.event_id


async def raise_alert(store: EventStore, lead_id: str, deadline: dt.datetime) -> str:
    alert = AlertRaised(kind="first_touch", policy="speed", subject_type="lead", subject_id=lead_id, deadline=deadline)
    env = envelope(alert, aggregate_type="alert", aggregate_id=f"alert-{lead_id}", occurred_at=deadline)
    await store.append([env], 0)
    return env.event_id


async def polled(actor: NotifyActor, js: JetStreamContext, dsn: str, naming: Naming, ticks: int = 3) -> None:
    """The worker has folded the log so far and looked at its notices a few times since."""
    await wait_caught_up(js, dsn, naming, actor.engine.projection)
    target = actor.ticks + ticks

    async def done() -> bool:
        return actor.ticks >= target

    await eventually(done)


def posted(hooks: Receiver, event_id: str) -> list[dict[str, Any]]:
    return [json.loads(body) for h, body, _ in hooks.requests if h["dealstream-event-id"] == event_id]


async def test_an_alert_raised_before_routing_reaches_the_owner_routing_then_chose(
    store: EventStore,
    nats_conn: tuple[Any, JetStreamContext],
    nats_settings: NatsSettings,
    naming: Naming,
    pg_dsn: str,
    hooks: Receiver,
) -> None:
    _, js = nats_conn
    # Captured with a past business time: the SLA worker raised the alert before routing had assigned it.
    await on_lead(store, "l1", MARTA, NOW - dt.timedelta(hours=2))
    alert = await raise_alert(store, "l1", NOW - dt.timedelta(hours=1))
    async with notify_worker(nats_settings, pg_dsn, rules_for(hooks)) as actor:
        await polled(actor, js, pg_dsn, naming)
        assert hooks.requests == []  # nobody owns it yet: it waits, it does not go to nobody
        await on_lead(store, "l1", LeadAssigned(owner="ana", reason="rule"))

        async def sent() -> bool:
            return actor.sent == 1

        await eventually(sent)
    [message] = posted(hooks, alert)
    assert message["recipient"] == "ana" and message["why"] == "owner"
    lines = message["text"].splitlines()
    assert lines[0].startswith("Call Marta Kowalska (Kowalski i Synowie): first touch due ")
    assert lines[1] == message["link"] == "https://crm.example.com/leads/l1"


async def test_a_lead_qualified_before_it_was_assigned_is_announced_to_its_owner_once(
    store: EventStore,
    nats_conn: tuple[Any, JetStreamContext],
    nats_settings: NatsSettings,
    naming: Naming,
    pg_dsn: str,
    hooks: Receiver,
) -> None:
    _, js = nats_conn
    rules = rules_for(hooks)
    await on_lead(store, "l2", MARTA)
    qualified = await on_lead(store, "l2", LeadQualified(score=72.5))
    async with notify_worker(nats_settings, pg_dsn, rules) as actor:
        await polled(actor, js, pg_dsn, naming)
        assert hooks.requests == []
        await on_lead(store, "l2", LeadAssigned(owner="ana", reason="rule"))

        async def sent() -> bool:
            return actor.sent == 1

        await eventually(sent)
    # Restarted, redelivered from the start as a new build, reassigned: it was announced, once.
    await on_lead(store, "l2", LeadAssigned(owner="boss", previous_owner="ana"))
    async with notify_worker(nats_settings, pg_dsn, rules) as actor:
        await polled(actor, js, pg_dsn, naming)
    async with notify_worker(nats_settings, pg_dsn, rules, "rebuild") as actor:
        await wait_caught_up(js, pg_dsn, naming, actor.engine.projection)  # acts only once it serves
    [message] = posted(hooks, qualified)
    assert message["recipient"] == "ana" and "Marta Kowalska" in message["text"]
    assert len(hooks.requests) == 1


async def test_a_notice_nobody_owns_goes_to_the_fallback_after_the_wait_and_is_scrubbed_on_erasure(
    store: EventStore,
    nats_conn: tuple[Any, JetStreamContext],
    nats_settings: NatsSettings,
    naming: Naming,
    pg_dsn: str,
    hooks: Receiver,
) -> None:
    _, js = nats_conn
    await on_lead(store, "l3", MARTA)
    qualified = await on_lead(store, "l3", LeadQualified(score=60, reason="title: Marta's own words"))
    async with notify_worker(nats_settings, pg_dsn, rules_for(hooks, wait=0)) as actor:

        async def sent() -> bool:
            return actor.sent == 1

        await eventually(sent)
        [message] = posted(hooks, qualified)
        assert message["recipient"] == "boss" and message["why"] == "unassigned"
        assert "has no owner yet (unassigned)" in message["text"] and "Marta Kowalska" in message["text"]
        await on_lead(store, "l3", LeadErased())
        await polled(actor, js, pg_dsn, naming)
    async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
        [delivery] = await list_deliveries(conn, event_id=qualified)
        assert delivery.message.text == ERASED_TEXT
        for table in ("notify_notices", "notify_deliveries", f"{actor.engine.projection.build}_subjects"):
            cur = await conn.execute(f"SELECT count(*) FROM {table} t WHERE t::text LIKE '%%Marta%%'")
            assert await cur.fetchone() == (0,), table


async def test_a_tasks_alert_reaches_the_tasks_owner_not_the_deals(
    store: EventStore,
    nats_conn: tuple[Any, JetStreamContext],
    nats_settings: NatsSettings,
    naming: Naming,
    pg_dsn: str,
    hooks: Receiver,
) -> None:
    deal = {"aggregate_type": "deal", "aggregate_id": "d1", "occurred_at": NOW}
    opened = msgspec.structs.replace(deal_opened(), owner="ana")
    task = TaskScheduled(task_id="t1", title="Send the offer", due_at=NOW, owner="boss")
    await store.append([envelope(opened, **deal), envelope(task, **deal)], 0)  # type: ignore[arg-type]
    due = AlertRaised(
        kind="task_due", policy="tasks", subject_type="deal", subject_id="d1", deadline=NOW, rep="boss", task_id="t1"
    )
    alert = envelope(due, aggregate_type="alert", aggregate_id="alert-t1", occurred_at=NOW)
    await store.append([alert], 0)
    async with notify_worker(nats_settings, pg_dsn, rules_for(hooks)) as actor:

        async def sent() -> bool:
            return actor.sent == 1

        await eventually(sent)
    [message] = posted(hooks, alert.event_id)
    assert message["recipient"] == "boss" and message["link"] == "https://crm.example.com/deals/d1"
    assert message["text"].startswith("Do the overdue task on deal Acme: task t1 was due ")


async def test_an_event_the_build_before_notices_announced_is_not_announced_again(
    store: EventStore,
    nats_conn: tuple[Any, JetStreamContext],
    nats_settings: NatsSettings,
    naming: Naming,
    pg_dsn: str,
    hooks: Receiver,
) -> None:
    _, js = nats_conn
    await on_lead(store, "l4", MARTA)
    await on_lead(store, "l4", LeadAssigned(owner="ana"))
    qualified = await on_lead(store, "l4", LeadQualified(score=70))
    rules = rules_for(hooks)
    projection = NotifyProjection(rules)
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        for statement in projection.ddl():
            await conn.execute(statement)
        # What notify_v1 left: a delivery of the event, to the owner it had then.
        await conn.execute(
            "INSERT INTO notify_deliveries (delivery_id, event_id, recipient, channel, target, message, "
            "next_attempt_at, state) VALUES ('v1', %s, 'boss', 'webhook', 'http://x', '{}', now(), 'delivered')",
            (qualified,),
        )
    async with notify_worker(nats_settings, pg_dsn, rules) as actor:
        await polled(actor, js, pg_dsn, naming)
    assert hooks.requests == []
