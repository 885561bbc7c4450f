"""Shared by the board and engine tests: event builders, a scripted sales scenario, engine helpers."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
from collections.abc import AsyncIterator, Sequence
from decimal import Decimal

import psycopg
from nats.js import JetStreamContext

from events.config import NatsSettings
from events.envelope import AggregateType, Envelope, StoredEvent
from events.store import EventStore
from events.subjects import Naming
from events.types import (
    DealAmountChanged,
    DealLost,
    DealOpened,
    DealStageChanged,
    DealWon,
    Event,
    PipelineDefined,
    StageDefinition,
    TaskCompleted,
    TaskScheduled,
    TouchpointLogged,
)
from projections.board import DealRow, Status
from projections.board_store import BoardProjection
from projections.contract import Projection, Shard
from tests.builders import T0, envelope
from workers.engine import EngineSettings, ProjectionEngine
from workers.lag import Lag, measure_lag

DAY = dt.timedelta(days=1)

SALES = PipelineDefined(
    name="Sales",
    stages=[
        StageDefinition(id="new", name="New", probability=0.1, rotting_days=7),
        StageDefinition(id="qualified", name="Qualified", probability=0.3, rotting_days=10),
        StageDefinition(id="proposal", name="Proposal", probability=0.6, rotting_days=14),
        StageDefinition(id="negotiation", name="Negotiation", probability=0.8),
    ],
)


def stored(
    seq: int, data: Event, aggregate_id: str = "d1", at: dt.datetime = T0, aggregate_type: AggregateType = "deal"
) -> StoredEvent:
    env = envelope(data, aggregate_type=aggregate_type, aggregate_id=aggregate_id, occurred_at=at)
    return StoredEvent(sequence=seq, subject=f"t.evt.{aggregate_type}.0.{aggregate_id}", envelope=env)


def opened(
    name: str = "Acme",
    stage: str = "new",
    amount: str = "1000",
    currency: str = "EUR",
    owner: str | None = "ana",
    pipeline_id: str = "sales",
) -> DealOpened:
    return DealOpened(
        name=name, pipeline_id=pipeline_id, stage=stage, amount=Decimal(amount), currency=currency, owner=owner
    )


def moved(a: str, b: str) -> DealStageChanged:
    return DealStageChanged(from_stage=a, to_stage=b)


def touch(n: int = 1) -> TouchpointLogged:
    return TouchpointLogged(touchpoint_id=f"tp{n}", kind="call", direction="outbound")


def task(task_id: str, due: dt.datetime) -> TaskScheduled:
    return TaskScheduled(task_id=task_id, title="Follow up", due_at=due)


def done(task_id: str) -> TaskCompleted:
    return TaskCompleted(task_id=task_id)


def amount(a: str, b: str, currency: str = "EUR") -> DealAmountChanged:
    return DealAmountChanged(from_amount=Decimal(a), to_amount=Decimal(b), currency=currency)


def won(stage: str, value: str = "1000", currency: str = "EUR") -> DealWon:
    return DealWon(stage=stage, amount=Decimal(value), currency=currency)


def lost(stage: str, reason: str = "price") -> DealLost:
    return DealLost(stage=stage, reason=reason)


# The scripted scenario: (aggregate type, aggregate id, event, business time), in append order.
Script = list[tuple[AggregateType, str, Event, dt.datetime]]


def sales_script() -> Script:
    return [
        ("pipeline", "sales", SALES, T0),
        ("deal", "acme", opened("Acme", amount="1000"), T0),
        ("deal", "acme", touch(1), T0 + DAY),
        ("deal", "acme", moved("new", "qualified"), T0 + 2 * DAY),
        ("deal", "acme", task("t1", T0 + 30 * DAY), T0 + 3 * DAY),
        ("deal", "acme", task("t2", T0 + 20 * DAY), T0 + 3 * DAY),
        ("deal", "acme", done("t2"), T0 + 4 * DAY),
        ("deal", "globex", opened("Globex", amount="250.50", owner="bo"), T0 + DAY),
        ("deal", "globex", amount("250.50", "300", "USD"), T0 + 2 * DAY),
        ("deal", "initech", opened("Initech", amount="5000"), T0),
        ("deal", "initech", moved("new", "proposal"), T0 + DAY),
        ("deal", "initech", won("proposal", "5200"), T0 + 5 * DAY),
        ("deal", "umbrella", opened("Umbrella", amount="700", owner="bo"), T0),
        ("deal", "umbrella", lost("new", "no budget"), T0 + 3 * DAY),
        ("deal", "hooli", opened("Hooli", stage="pilot", amount="90"), T0 + DAY),
        ("deal", "ghost", touch(9), T0),  # before any DealOpened: not on the board
    ]


def row(
    deal_id: str,
    stage: str,
    name: str,
    value: int,
    currency: str,
    owner: str,
    status: Status,
    entered: dt.datetime,
    opened_at: dt.datetime,
    version: int,
    closed_at: dt.datetime | None = None,
    lost_reason: str | None = None,
    tasks: tuple[tuple[str, dt.datetime], ...] = (),
) -> DealRow:
    return DealRow(
        deal_id=deal_id,
        pipeline_id="sales",
        stage=stage,
        name=name,
        amount=Decimal(value),
        currency=currency,
        owner=owner,
        status=status,
        stage_entered_at=entered,
        last_activity_at=entered,
        next_task_due_at=min((due for _, due in tasks), default=None),
        opened_at=opened_at,
        closed_at=closed_at,
        lost_reason=lost_reason,
        open_tasks=tasks,
        version=version,
    )


def expected_rows() -> dict[str, DealRow]:
    """The rows the scripted scenario must produce (sequences 1..16 in append order)."""
    rows = [
        row(
            "acme", "qualified", "Acme", 1000, "EUR", "ana", "open", T0 + 2 * DAY, T0, 7, tasks=(("t1", T0 + 30 * DAY),)
        ),
        row("globex", "new", "Globex", 300, "USD", "bo", "open", T0 + DAY, T0 + DAY, 9),
        row("initech", "proposal", "Initech", 5200, "EUR", "ana", "won", T0 + DAY, T0, 12, closed_at=T0 + 5 * DAY),
        row(
            "umbrella",
            "new",
            "Umbrella",
            700,
            "EUR",
            "bo",
            "lost",
            T0,
            T0,
            14,
            closed_at=T0 + 3 * DAY,
            lost_reason="no budget",
        ),
        row("hooli", "pilot", "Hooli", 90, "EUR", "ana", "open", T0 + DAY, T0 + DAY, 15),
    ]
    return {r.deal_id: r for r in rows}


async def append_script(store: EventStore, script: Script) -> list[StoredEvent]:
    """Append each event with its aggregate's expected version; return them as stored."""
    versions: dict[tuple[str, str], int] = {}
    out: list[StoredEvent] = []
    for aggregate_type, aggregate_id, data, at in script:
        env = envelope(data, aggregate_type=aggregate_type, aggregate_id=aggregate_id, occurred_at=at)
        key = (aggregate_type, aggregate_id)
        [appended] = await store.append([env], expected_version=versions.get(key, 0))
        versions[key] = appended.sequence
        out.append(
            StoredEvent(
                sequence=appended.sequence,
                subject=store.naming.aggregate_subject(aggregate_type, aggregate_id),
                envelope=env,
            )
        )
    return out


async def append_concurrently(store: EventStore, script: Script, window: int = 64) -> None:
    """Append a script fast: each aggregate's events in order, up to ``window`` aggregates at a time."""
    by_aggregate: dict[tuple[AggregateType, str], list[Envelope]] = {}
    for aggregate_type, aggregate_id, data, at in script:
        by_aggregate.setdefault((aggregate_type, aggregate_id), []).append(
            envelope(data, aggregate_type=aggregate_type, aggregate_id=aggregate_id, occurred_at=at)
        )
    groups = list(by_aggregate.values())
    for i in range(0, len(groups), window):
        # No version check: a later workload may redefine the pipeline, which is a legitimate event.
        await asyncio.gather(*(store.append(g, expected_version=None) for g in groups[i : i + window]))


def workload(deals: int, seed: int = 7) -> Script:
    """A deterministic mix: a pipeline, then deals opened, touched, moved, tasked, won or lost."""
    rng = random.Random(seed)
    stages = [s.id for s in SALES.stages]
    script: Script = [("pipeline", "sales", SALES, T0)]
    for i in range(deals):
        deal_id = f"w{seed}-{i}"
        at = T0 + dt.timedelta(hours=rng.randrange(0, 2000))
        stage = rng.choice(stages)
        script.append(
            (
                "deal",
                deal_id,
                opened(
                    f"Deal {i}",
                    stage=stage,
                    amount=str(rng.randrange(0, 100_000)),
                    owner=rng.choice(["ana", "bo", None]),
                ),
                at,
            )
        )
        for n in range(rng.randrange(0, 6)):
            at += dt.timedelta(hours=rng.randrange(1, 200))
            roll = rng.random()
            if roll < 0.3:
                nxt = rng.choice(stages)
                script.append(("deal", deal_id, moved(stage, nxt), at))
                stage = nxt
            elif roll < 0.6:
                script.append(("deal", deal_id, touch(n), at))
            elif roll < 0.8:
                script.append(("deal", deal_id, task(f"t{n}", at + dt.timedelta(days=rng.randrange(1, 30))), at))
            elif roll < 0.9:
                script.append(("deal", deal_id, done(f"t{n - 1}"), at))
            else:
                script.append(("deal", deal_id, amount("0", str(rng.randrange(0, 100_000))), at))
        if rng.random() < 0.2:
            script.append(("deal", deal_id, won(stage) if rng.random() < 0.5 else lost(stage), at))
    return script


def script_events(script: Script) -> list[StoredEvent]:
    """The script as a log, without a server: sequences 1, 2, 3..."""
    return [
        stored(i + 1, data, aggregate_id, at, aggregate_type)
        for i, (aggregate_type, aggregate_id, data, at) in enumerate(script)
    ]


# --- engine helpers ---------------------------------------------------------------------------------------

FAST = EngineSettings(batch_size=100, fetch_timeout=0.2, lag_interval=3600.0, backoff_initial=0.05, backoff_max=0.5)


def board_engine(
    nats_settings: NatsSettings,
    database_url: str,
    shard: Shard | None = None,
    settings: EngineSettings | None = None,
    instance: str = "",
) -> ProjectionEngine:
    """The board projection behind the projection engine, as the board worker runs it."""
    return ProjectionEngine(BoardProjection(instance), nats_settings, database_url, shard, settings)


@contextlib.asynccontextmanager
async def running(engine: ProjectionEngine) -> AsyncIterator[ProjectionEngine]:
    """Run an engine as a task; stop it gracefully on exit."""
    stop = asyncio.Event()
    task = asyncio.create_task(engine.run(stop))
    try:
        yield engine
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def lags(
    js: JetStreamContext, dsn: str, naming: Naming, projection: Projection, shards: Sequence[Shard]
) -> list[Lag]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        try:
            return [await measure_lag(js, conn, naming, projection, s) for s in shards]
        except psycopg.errors.UndefinedTable:
            return []


async def wait_caught_up(
    js: JetStreamContext,
    dsn: str,
    naming: Naming,
    projection: Projection,
    shards: Sequence[Shard] = (Shard(),),
    within: float = 60.0,
) -> list[Lag]:
    """Poll until no event in any shard's consumer filter lies past that shard's checkpoint."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        current = await lags(js, dsn, naming, projection, shards)
        if len(current) == len(shards) and all(lag.caught_up for lag in current):
            return current
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"projection not caught up after {within}s: {current}")
        await asyncio.sleep(0.05)


def settings_for(nats_url: str, naming: Naming) -> NatsSettings:
    return NatsSettings(servers=(nats_url,), naming=naming)
