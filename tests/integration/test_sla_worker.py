"""The SLA worker against real servers: alerts raised at their deadline, once; met clocks stay silent; a
worker down over a deadline raises on restart, once; escalation reaches the manager; a rebuild agrees."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import psycopg
import pytest
from nats.js import JetStreamContext

from events.config import NatsSettings
from events.store import EventStore
from events.subjects import Naming
from events.types import AlertEscalated, AlertRaised, LeadAssigned, LeadCaptured, TouchpointLogged
from projections.business_time import Calendar
from projections.sla import Timer, timer_id
from projections.sla_rules import Policy, SlaRules, Team
from projections.sla_store import SlaProjection, alerts, read_state
from tests.builders import envelope
from tests.projection_fixtures import FAST, running, wait_caught_up
from tests.waiting import eventually
from workers.engine import ProjectionEngine
from workers.sla import AlertScheduler

pytestmark = pytest.mark.integration

SECONDS = 1 / 60  # within_minutes of one second

RULES = SlaRules(
    policies=[
        Policy(
            name="speed",
            kind="first_touch",
            within_minutes=3 * SECONDS,
            business_hours=False,
            escalate_after_minutes=2 * SECONDS,
        ),
    ],
    teams={"inside": Team(members=["ana"], manager="maria", calendar=Calendar())},
    manager="boss",
)


@contextlib.asynccontextmanager
async def sla_worker(nats_settings: NatsSettings, dsn: str, rules: SlaRules = RULES) -> AsyncIterator[AlertScheduler]:
    projection = SlaProjection(rules)
    engine = ProjectionEngine(projection, nats_settings, dsn, settings=FAST)
    scheduler = AlertScheduler(engine, nats_settings, dsn, poll=0.1)
    stop = asyncio.Event()
    task = asyncio.gather(engine.run(stop), scheduler.run(stop))
    try:
        yield scheduler
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def capture(store: EventStore, lead_id: str, at: dt.datetime) -> str:
    env = envelope(
        LeadCaptured(email=f"{lead_id}@example.com"), aggregate_type="lead", aggregate_id=lead_id, occurred_at=at
    )
    await store.append([env], expected_version=0)
    return timer_id("speed", "lead", lead_id, "first_touch", env.event_id)


async def add(store: EventStore, lead_id: str, data: Any, at: dt.datetime) -> None:
    await store.append([envelope(data, aggregate_type="lead", aggregate_id=lead_id, occurred_at=at)], None)


async def alert_events(store: EventStore, alert_id: str) -> list[Any]:
    return [e.envelope for e in await store.read("alert", alert_id)]


async def raised_in_log(store: EventStore, alert_id: str) -> bool:
    return any(isinstance(e.data, AlertRaised) for e in await alert_events(store, alert_id))


async def polls_after(scheduler: AlertScheduler, n: int = 3) -> None:
    """Let the scheduler poll ``n`` more times (each poll would raise anything due)."""
    target = scheduler.ticks + n

    async def polled() -> bool:
        return scheduler.ticks >= target

    await eventually(polled)


async def timers(dsn: str, build: str) -> dict[str, Timer]:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        return (await read_state(conn, build)).timers


async def test_an_untouched_lead_is_alerted_after_its_deadline_once_and_a_touched_one_never(
    store: EventStore,
    nats_conn: tuple[Any, JetStreamContext],
    nats_settings: NatsSettings,
    naming: Naming,
    pg_dsn: str,
) -> None:
    _, js = nats_conn
    now = dt.datetime.now(dt.UTC)
    silent = await capture(store, "lead-silent", now)
    # Business time: this lead was touched one second after its capture, well inside its three seconds.
    touched = await capture(store, "lead-touched", now)
    await add(
        store,
        "lead-touched",
        TouchpointLogged(touchpoint_id="c1", kind="call", direction="outbound"),
        now + dt.timedelta(seconds=1),
    )
    async with sla_worker(nats_settings, pg_dsn) as scheduler:
        await eventually(lambda: raised_in_log(store, silent))
        [raised] = await alert_events(store, silent)
        assert isinstance(raised.data, AlertRaised)
        assert raised.occurred_at == raised.data.deadline == now + dt.timedelta(seconds=3)
        assert raised.recorded_at >= raised.data.deadline  # none early
        assert raised.data.subject_id == "lead-silent" and raised.data.kind == "first_touch"
        await wait_caught_up(js, pg_dsn, naming, scheduler.projection)
        await polls_after(scheduler)
        assert len([e for e in await alert_events(store, silent) if isinstance(e.data, AlertRaised)]) == 1
        assert await alert_events(store, touched) == []
        async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
            [alert] = await alerts(conn, scheduler.projection.build, status="open")
        assert alert.timer_id == silent and alert.raised_at == raised.recorded_at
    assert (await timers(pg_dsn, scheduler.projection.build))[touched].state == "met"


async def test_a_worker_down_over_a_deadline_raises_on_restart_once_and_escalation_reaches_the_manager(
    store: EventStore,
    nats_conn: tuple[Any, JetStreamContext],
    nats_settings: NatsSettings,
    naming: Naming,
    pg_dsn: str,
) -> None:
    _, js = nats_conn
    captured_at = dt.datetime.now(dt.UTC)
    alert_id = await capture(store, "lead-1", captured_at)
    await add(store, "lead-1", LeadAssigned(owner="ana"), captured_at)
    deadline = captured_at + dt.timedelta(seconds=3)
    async with sla_worker(nats_settings, pg_dsn) as scheduler:
        await wait_caught_up(js, pg_dsn, naming, scheduler.projection)
        build = scheduler.projection.build
        pending = (await timers(pg_dsn, build))[alert_id]
        assert pending.state == "pending" and pending.deadline == deadline and pending.rep == "ana"
        if dt.datetime.now(dt.UTC) < deadline:
            assert await alert_events(store, alert_id) == []
    # Down over the deadline.
    await asyncio.sleep(max(0.0, (deadline - dt.datetime.now(dt.UTC)).total_seconds()) + 0.5)
    assert await alert_events(store, alert_id) == []
    async with sla_worker(nats_settings, pg_dsn) as scheduler:
        await eventually(lambda: raised_in_log(store, alert_id))

        async def escalated() -> bool:
            return any(isinstance(e.data, AlertEscalated) for e in await alert_events(store, alert_id))

        await eventually(escalated)
        raised, escalation = await alert_events(store, alert_id)
        assert isinstance(raised.data, AlertRaised) and raised.data.rep == "ana"
        assert isinstance(escalation.data, AlertEscalated) and escalation.data.manager == "maria"
        assert escalation.occurred_at == deadline + dt.timedelta(seconds=2)
        await wait_caught_up(js, pg_dsn, naming, scheduler.projection)
        await polls_after(scheduler)
    async with sla_worker(nats_settings, pg_dsn) as scheduler:
        await wait_caught_up(js, pg_dsn, naming, scheduler.projection)
        await polls_after(scheduler)
    assert len(await alert_events(store, alert_id)) == 2
    live = await timers(pg_dsn, SlaProjection(RULES).build)
    assert live[alert_id].escalated_to == "maria" and live[alert_id].resolved_at is None

    # A rebuild from the log alone ends with the very same timers.
    rebuild = SlaProjection(RULES, "rebuild")
    async with running(ProjectionEngine(rebuild, nats_settings, pg_dsn, settings=FAST)):
        await wait_caught_up(js, pg_dsn, naming, rebuild)
    assert await timers(pg_dsn, rebuild.build) == live


async def test_history_older_than_the_horizon_is_recorded_breached_and_never_alerted(
    store: EventStore,
    nats_conn: tuple[Any, JetStreamContext],
    nats_settings: NatsSettings,
    naming: Naming,
    pg_dsn: str,
) -> None:
    _, js = nats_conn
    now = dt.datetime.now(dt.UTC)
    rules = msgspec.structs.replace(RULES, history_horizon_minutes=5.0)
    # An import: captured a month ago in business time, recorded now; its deadline is far past the horizon.
    imported = envelope(
        LeadCaptured(email="old@example.com"), aggregate_type="lead", aggregate_id="lead-old", occurred_at=now
    )
    imported = msgspec.structs.replace(imported, occurred_at=now - dt.timedelta(days=30), recorded_at=now)
    await store.append([imported], expected_version=0)
    old = timer_id("speed", "lead", "lead-old", "first_touch", imported.event_id)
    fresh = await capture(store, "lead-new", now)
    async with sla_worker(nats_settings, pg_dsn, rules) as scheduler:
        await eventually(lambda: raised_in_log(store, fresh))
        await wait_caught_up(js, pg_dsn, naming, scheduler.projection)
        await polls_after(scheduler)
        assert await alert_events(store, old) == []
    stored = (await timers(pg_dsn, scheduler.projection.build))[old]
    assert stored.state == "lapsed" and stored.deadline == imported.occurred_at + dt.timedelta(seconds=3)
