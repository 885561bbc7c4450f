"""The scores worker's actor: appends ``lead.qualified.v1`` for every lead whose score reached the threshold.

It checks the lead's own history first (already qualified or disqualified by anyone: nothing to do) and
appends expecting the lead's current version, so one crossing qualifies the lead once, whatever the
redeliveries, restarts or a rebuild under new rules.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg

from events.aggregates import Rejected
from events.commands import QualifyOnScore
from events.handlers import qualify_on_score
from events.ledger import Ledger
from events.store import ConcurrencyError
from projections.scores_store import ScoresProjection, pending_qualifications
from projections.scoring import Score, explain
from workers.actor import Actor


class QualificationActor(Actor):
    name = "scores-worker"

    async def tick(self, conn: psycopg.AsyncConnection[Any], ledger: Ledger) -> None:
        projection = self.engine.projection
        assert isinstance(projection, ScoresProjection)
        for lead in await pending_qualifications(conn, projection.build):
            assert lead.crossed_at is not None and lead.crossed_sequence is not None
            explanation = Score(
                total=lead.score,
                fit=lead.fit,
                engagement=lead.engagement,
                qualified=True,
                rules_version=projection.rules.version,
                contributions=list(lead.contributions),
            )
            # The explanation quotes what the lead answered: the ledger seals it with the lead's key like the answers.
            command = QualifyOnScore(
                lead_id=lead.lead_id,
                score=lead.score,
                reason=explain(explanation)[:10_000],
                build=projection.build,
                crossed_sequence=lead.crossed_sequence,
                occurred_at=lead.crossed_at,
            )
            try:
                await qualify_on_score(ledger, self.context(dt.datetime.now(dt.UTC), lead.lead_id), command)
            except Rejected:
                continue  # decided or erased meanwhile: the projection sees it when it folds that event
            except ConcurrencyError:
                continue
            self.log.info("scores.qualified", lead_id=lead.lead_id, score=lead.score, owner=lead.owner)
