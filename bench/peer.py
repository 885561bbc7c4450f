"""The benchmark's peer row: Dealstream's sales workload on the ``eventsourcing`` library with its PostgreSQL store.

Appends go through an ``eventsourcing.application.Application`` (one save per command, each checked against the
aggregate's version); the board is built by ``eventsourcing.projection.ProjectionRunner`` into PostgreSQL tables
that commit with the projection's tracking position. Each run uses a fresh schema. Needs ``.[bench]``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from importlib.metadata import version
from typing import Any
from uuid import UUID

import msgspec
import psycopg
from eventsourcing.application import Application
from eventsourcing.dispatch import singledispatchmethod
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import Tracking
from eventsourcing.postgres import PostgresDatastore, PostgresTrackingRecorder
from eventsourcing.projection import Projection, ProjectionRunner
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

STAGES = ("lead_in", "qualified", "proposal", "negotiation", "won")
SOURCES = ("web_form", "meta_ads", "referral", "event")


class PeerReport(msgspec.Struct, frozen=True):
    """Rates are events of the whole workload over each phase's wall time."""

    events: int
    append_events_per_s: float
    append_wall_s: float
    projection_events_per_s: float
    projection_wall_s: float
    notes: str


# --- the domain model, in the library's idiom -------------------------------------------------------------


class Lead(Aggregate):
    class Captured(Aggregate.Created):
        email: str
        name: str
        company: str
        source: str

    class TouchpointLogged(Aggregate.Event):
        kind: str
        outcome: str

    @event(Captured)
    def __init__(self, email: str, name: str, company: str, source: str) -> None:
        self.email = email
        self.name = name
        self.company = company
        self.source = source
        self.touches = 0

    @event(TouchpointLogged)
    def log_touchpoint(self, kind: str, outcome: str) -> None:
        self.touches += 1


class Deal(Aggregate):
    class Opened(Aggregate.Created):
        lead_id: UUID
        name: str
        stage: str

    class StageChanged(Aggregate.Event):
        from_stage: str
        to_stage: str

    @event(Opened)
    def __init__(self, lead_id: UUID, name: str, stage: str) -> None:
        self.lead_id = lead_id
        self.name = name
        self.stage = stage

    def move_to(self, stage: str) -> None:
        if stage == self.stage:
            raise ValueError(f"deal {self.id} is already in {stage}")
        self._change_stage(self.stage, stage)

    @event(StageChanged)
    def _change_stage(self, from_stage: str, to_stage: str) -> None:
        self.stage = to_stage


class Pipeline(Application[UUID]):
    """Each command loads what it needs and saves: what a request handler in front of this library does."""

    def capture_lead(self, email: str, name: str, company: str, source: str) -> UUID:
        lead = Lead(email=email, name=name, company=company, source=source)
        self.save(lead)
        return lead.id

    def log_touchpoint(self, lead_id: UUID, kind: str, outcome: str) -> None:
        lead: Lead = self.repository.get(lead_id)
        lead.log_touchpoint(kind=kind, outcome=outcome)
        self.save(lead)

    def convert_lead(self, lead_id: UUID) -> UUID:
        lead: Lead = self.repository.get(lead_id)
        deal = Deal(lead_id=lead.id, name=f"Deal for {lead.company}", stage=STAGES[0])
        self.save(deal)
        return deal.id

    def move_deal(self, deal_id: UUID, stage: str) -> None:
        deal: Deal = self.repository.get(deal_id)
        deal.move_to(stage)
        self.save(deal)


# --- the board, as a materialised view with its tracking in the same transaction --------------------------


class PostgresBoardView(PostgresTrackingRecorder):
    """``<name>_deals`` (deal -> stage) and ``<name>_stages`` (stage -> deals) beside ``<name>_tracking``."""

    def __init__(self, datastore: PostgresDatastore, **kwargs: Any) -> None:
        super().__init__(datastore, **kwargs)
        prefix = self.tracking_table_name.removesuffix("_tracking")
        self.deals_table_name = f"{prefix}_deals"
        self.stages_table_name = f"{prefix}_stages"
        self.check_identifier_length(self.deals_table_name)
        self.check_identifier_length(self.stages_table_name)
        schema = sql.Identifier(self.datastore.schema)
        deals = sql.Identifier(self.deals_table_name)
        stages = sql.Identifier(self.stages_table_name)
        self.sql_create_statements += [
            sql.SQL("CREATE TABLE IF NOT EXISTS {}.{} (deal_id uuid PRIMARY KEY, stage text NOT NULL)").format(
                schema, deals
            ),
            sql.SQL("CREATE TABLE IF NOT EXISTS {}.{} (stage text PRIMARY KEY, deals bigint NOT NULL)").format(
                schema, stages
            ),
        ]
        self.insert_deal = sql.SQL("INSERT INTO {}.{} (deal_id, stage) VALUES (%s, %s)").format(schema, deals)
        self.update_deal = sql.SQL("UPDATE {}.{} SET stage = %s WHERE deal_id = %s").format(schema, deals)
        self.add_to_stage = sql.SQL(
            "INSERT INTO {0}.{1} (stage, deals) VALUES (%s, %s) "
            "ON CONFLICT (stage) DO UPDATE SET deals = {0}.{1}.deals + EXCLUDED.deals"
        ).format(schema, stages)
        self.select_stages = sql.SQL("SELECT stage, deals FROM {}.{} WHERE deals <> 0").format(schema, stages)

    def deal_opened(self, deal_id: UUID, stage: str, tracking: Tracking) -> None:
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(self.insert_deal, (deal_id, stage), prepare=True)
            curs.execute(self.add_to_stage, (stage, 1), prepare=True)
            self._insert_tracking(curs, tracking)

    def deal_moved(self, deal_id: UUID, from_stage: str, to_stage: str, tracking: Tracking) -> None:
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(self.update_deal, (to_stage, deal_id), prepare=True)
            curs.execute(self.add_to_stage, (from_stage, -1), prepare=True)
            curs.execute(self.add_to_stage, (to_stage, 1), prepare=True)
            self._insert_tracking(curs, tracking)

    def stage_counts(self) -> dict[str, int]:
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(self.select_stages)
            return {row["stage"]: row["deals"] for row in curs.fetchall()}


class BoardProjection(Projection[PostgresBoardView]):
    name = "board"

    @singledispatchmethod
    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        # Lead events move no card, but the position must still advance past them.
        self.view.insert_tracking(tracking)

    @process_event.register
    def _(self, domain_event: Deal.Opened, tracking: Tracking) -> None:
        self.view.deal_opened(domain_event.originator_id, domain_event.stage, tracking)

    @process_event.register
    def _(self, domain_event: Deal.StageChanged, tracking: Tracking) -> None:
        self.view.deal_moved(domain_event.originator_id, domain_event.from_stage, domain_event.to_stage, tracking)


# --- the run ----------------------------------------------------------------------------------------------


def expected_events(leads: int, touches_per_lead: int, moves_per_deal: int) -> int:
    deals = (leads + 1) // 2
    return leads * (1 + touches_per_lead) + deals * (1 + moves_per_deal)


def library_env(dsn: str, schema: str, pool_size: int) -> dict[str, str]:
    """The library reads its settings from the environment: these win over unprefixed inherited ones."""
    params = conninfo_to_dict(dsn)
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": str(params.get("dbname") or params.get("user") or "postgres"),
        "POSTGRES_HOST": str(params.get("host") or "127.0.0.1"),
        "POSTGRES_PORT": str(params.get("port") or "5432"),
        "POSTGRES_USER": str(params.get("user") or "postgres"),
        "POSTGRES_PASSWORD": str(params.get("password") or ""),
        "POSTGRES_SCHEMA": schema,
        "POSTGRES_POOL_SIZE": str(pool_size),
        "POSTGRES_MAX_OVERFLOW": "0",
    }


@contextmanager
def fresh_schema(dsn: str, schema: str, keep: bool) -> Iterator[None]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        yield
    finally:
        if not keep:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def count_rows(dsn: str, schema: str, table: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
        ).fetchone()
    return int(row[0]) if row else 0


def lead_commands(app: Pipeline, touches_per_lead: int, moves_per_deal: int) -> Callable[[int], None]:
    def one_lead(n: int) -> None:
        lead_id = app.capture_lead(
            email=f"buyer{n}@example{n % 97}.com",
            name=f"Buyer {n}",
            company=f"Company {n % 997}",
            source=SOURCES[n % len(SOURCES)],
        )
        for t in range(touches_per_lead):
            app.log_touchpoint(lead_id, kind="call" if t % 2 == 0 else "email", outcome="connected")
        if n % 2 == 0:
            deal_id = app.convert_lead(lead_id)
            for stage in STAGES[1 : 1 + moves_per_deal]:
                app.move_deal(deal_id, stage)

    return one_lead


def run_peer(
    dsn: str,
    leads: int,
    touches_per_lead: int,
    moves_per_deal: int,
    *,
    workers: int = 4,
    schema: str | None = None,
    keep_schema: bool = False,
) -> PeerReport:
    """Appends the workload with ``workers`` threads, then times the board projection over the whole log.

    Synchronous, as the library is; blocks for the whole run. ``schema`` (default: a fresh ``peer_<hex>``) is
    dropped afterwards unless ``keep_schema``.
    """
    if not 0 <= moves_per_deal < len(STAGES):
        raise ValueError(f"moves_per_deal must be within 0..{len(STAGES) - 1}")
    schema = schema or f"peer_{uuid.uuid4().hex[:12]}"
    # The runner holds two connections (listen, pull) and its view one more for writes beside our polls.
    env = library_env(dsn, schema, pool_size=workers + 2)
    events = expected_events(leads, touches_per_lead, moves_per_deal)

    with fresh_schema(dsn, schema, keep_schema):
        with Pipeline(env) as app:
            one_lead = lead_commands(app, touches_per_lead, moves_per_deal)
            started = time.perf_counter()
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="peer-append") as pool:
                for _ in pool.map(one_lead, range(leads)):
                    pass
            append_wall = time.perf_counter() - started
            last = app.recorder.max_notification_id() or 0
        stored = count_rows(dsn, schema, f"{Pipeline.name.lower()}_events")
        if stored != events:
            raise RuntimeError(f"the store holds {stored} events, the workload made {events}")

        started = time.perf_counter()
        runner = ProjectionRunner[Pipeline, PostgresBoardView](
            application_class=Pipeline, projection_class=BoardProjection, view_class=PostgresBoardView, env=env
        )
        try:
            with runner:
                # The library's own wait() backs off to 800 ms between polls, too coarse for this timing.
                while (runner.view.max_tracking_id(runner.app_name) or 0) < last:
                    runner.run_forever(timeout=0.01)
                    if runner.is_interrupted.is_set():
                        raise RuntimeError("the projection runner stopped before it caught up")
                projection_wall = time.perf_counter() - started
                board = runner.view.stage_counts()
        finally:
            runner.view.datastore.close()
        deals = (leads + 1) // 2
        if board != ({STAGES[moves_per_deal]: deals} if deals else {}):
            raise RuntimeError(f"the board shows {board} for {deals} deals moved {moves_per_deal} times")

    notes = (
        f"eventsourcing {version('eventsourcing')}, PostgreSQL store; appends: {workers} threads, one command "
        "per event (repository.get then save; version checked by the events table's primary key, inserts "
        "serialised by the library's table lock); projection: ProjectionRunner catching up from position 0, "
        "one transaction per event (view rows + tracking row)"
    )
    return PeerReport(
        events=events,
        append_events_per_s=events / append_wall,
        append_wall_s=append_wall,
        projection_events_per_s=events / projection_wall,
        projection_wall_s=projection_wall,
        notes=notes,
    )
