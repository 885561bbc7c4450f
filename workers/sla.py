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

from events.aggregates import Rejected
from events.commands import EscalateAlert, RaiseAlert
from events.config import NatsSettings
from events.handlers import escalate_alert, raise_alert
from events.ledger import Ledger
from events.store import ConcurrencyError
from events.types import AlertRaised
from projections.sla import Timer
from projections.sla_store import SlaProjection, due_escalations, due_timers
from workers.actor import Actor
from workers.engine import ProjectionEngine

log = structlog.get_logger("dealstream.sla")


class AlertScheduler(Actor):
    """Raises due alerts and escalates unanswered ones, every ``poll`` seconds while the build serves."""

    name = "sla-worker"

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

    async def tick(self, conn: psycopg.AsyncConnection[Any], ledger: Ledger) -> None:
        """Raise what fell due, escalate what went unanswered."""
        now = dt.datetime.now(dt.UTC)
        build, partitions = self.projection.build, self.engine.shard.partitions
        due = await due_timers(conn, build, partitions, now)
        pending = await due_escalations(conn, build, partitions, now)
        self._in_flight &= {t.timer_id for t in due} | {f"e:{t.timer_id}" for t in pending}
        for timer in due:
            if timer.timer_id not in self._in_flight:
                await self._raise(ledger, timer, now)
        for timer in pending:
            if f"e:{timer.timer_id}" not in self._in_flight:
                await self._escalate(ledger, timer, now)

    async def _raise(self, ledger: Ledger, timer: Timer, now: dt.datetime) -> None:
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
        command = RaiseAlert(alert_id=timer.timer_id, alert=data, occurred_at=timer.deadline)
        try:
            appended = await raise_alert(ledger, self.context(now, timer.timer_id), command)
        except (Rejected, ConcurrencyError):
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

    async def _escalate(self, ledger: Ledger, timer: Timer, now: dt.datetime) -> None:
        key = f"e:{timer.timer_id}"
        self._in_flight.add(key)
        manager = self.projection.rules.manager_of(timer.rep)
        if manager is None:
            self.log.warning("sla.escalation.nobody", alert_id=timer.timer_id, rep=timer.rep)
            return
        assert timer.escalate_at is not None
        command = EscalateAlert(alert_id=timer.timer_id, manager=manager, rep=timer.rep, occurred_at=timer.escalate_at)
        try:
            await escalate_alert(ledger, self.context(now, timer.timer_id), command)
        except (Rejected, ConcurrencyError):
            return  # escalated already, or not raised yet: nothing to do
        self.escalated += 1
        self.log.info("sla.alert.escalated", alert_id=timer.timer_id, manager=manager, rep=timer.rep)
