"""The SLA worker's scheduler: raises an alert for every timer past its deadline, escalates the unanswered.

It runs beside the timers projection (:class:`projections.sla_store.SlaProjection`) in the same process, for
the same shard, and acts only while that build serves: a build still rebuilding never raises anything.
It reads due timers from PostgreSQL and appends to the log; the projection then folds the alert back in.
An alert is appended to a new aggregate (expected version 0) whose id is the timer's, and an escalation
only onto an alert holding just its ``AlertRaised``, so retries, restarts and replays raise each alert and
escalate it once. A worker down over a deadline raises the alert on its first poll after it is back: never
before the deadline, since the deadline is compared with the clock at the moment of the poll.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg
import structlog

from events.config import NatsSettings
from events.envelope import Envelope
from events.ids import derived_id
from events.store import ConcurrencyError, EventStore
from events.types import AlertEscalated, AlertRaised
from projections.sla import Timer
from projections.sla_store import SlaProjection, due_escalations, due_timers
from workers.actor import Actor
from workers.engine import ProjectionEngine

log = structlog.get_logger("dealstream.sla")


def _envelope(timer: Timer, data: AlertRaised | AlertEscalated, at: dt.datetime, now: dt.datetime) -> Envelope:
    kind = "raised" if isinstance(data, AlertRaised) else "escalated"
    return Envelope(
        event_id=derived_id("alert", kind, timer.timer_id),
        aggregate_type="alert",
        aggregate_id=timer.timer_id,
        occurred_at=at,
        recorded_at=now,
        actor="sla-worker",
        source="system",
        correlation_id=timer.timer_id,
        data=data,
    )


class AlertScheduler(Actor):
    """Raises due alerts and escalates unanswered ones, every ``poll`` seconds while the build serves."""

    def __init__(
        self, engine: ProjectionEngine, nats_settings: NatsSettings, database_url: str, poll: float = 0.25
    ) -> None:
        super().__init__(engine, nats_settings, database_url, poll)
        assert isinstance(engine.projection, SlaProjection)
        self.projection = engine.projection
        self.raised = 0
        self.escalated = 0
        # Appended but not yet folded back by the projection: skip them instead of re-appending each poll.
        self._in_flight: set[str] = set()

    async def tick(self, conn: psycopg.AsyncConnection[Any], store: EventStore) -> None:
        """Raise what fell due, escalate what went unanswered."""
        now = dt.datetime.now(dt.UTC)
        build, partitions = self.projection.build, self.engine.shard.partitions
        due = await due_timers(conn, build, partitions, now)
        pending = await due_escalations(conn, build, partitions, now)
        self._in_flight &= {t.timer_id for t in due} | {f"e:{t.timer_id}" for t in pending}
        for timer in due:
            if timer.timer_id not in self._in_flight:
                await self._raise(store, timer, now)
        for timer in pending:
            if f"e:{timer.timer_id}" not in self._in_flight:
                await self._escalate(store, timer, now)

    async def _raise(self, store: EventStore, timer: Timer, now: dt.datetime) -> None:
        data = AlertRaised(
            kind=timer.kind,
            policy=timer.policy,
            subject_type=timer.subject_type,
            subject_id=timer.subject_id,
            deadline=timer.deadline,
            rep=timer.rep,
            task_id=timer.task_id,
            stage=timer.stage,
        )
        self._in_flight.add(timer.timer_id)
        try:
            [appended] = await store.append([_envelope(timer, data, timer.deadline, now)], expected_version=0)
        except ConcurrencyError:
            return  # raised before (by an earlier run): the projection has not folded it back yet
        self.raised += 1
        self.log.info(
            "sla.alert.raised",
            alert_id=timer.timer_id,
            kind=timer.kind,
            subject=f"{timer.subject_type}/{timer.subject_id}",
            rep=timer.rep,
            deadline=timer.deadline.isoformat(),
            late_seconds=round((now - timer.deadline).total_seconds(), 3),
            sequence=appended.sequence,
        )

    async def _escalate(self, store: EventStore, timer: Timer, now: dt.datetime) -> None:
        key = f"e:{timer.timer_id}"
        self._in_flight.add(key)
        manager = self.projection.rules.manager_of(timer.rep)
        if manager is None:
            self.log.warning("sla.escalation.nobody", alert_id=timer.timer_id, rep=timer.rep)
            return
        history = await store.read("alert", timer.timer_id)
        if len(history) != 1:
            return  # escalated already, or not raised yet: nothing to do
        data = AlertEscalated(manager=manager, rep=timer.rep)
        assert timer.escalate_at is not None
        try:
            await store.append([_envelope(timer, data, timer.escalate_at, now)], expected_version=history[0].sequence)
        except ConcurrencyError:
            return
        self.escalated += 1
        self.log.info("sla.alert.escalated", alert_id=timer.timer_id, manager=manager, rep=timer.rep)
