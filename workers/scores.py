"""The scores worker's actor: appends ``lead.qualified.v1`` for every lead whose score reached the threshold.

It checks the lead's own history first (already qualified or disqualified by anyone: nothing to do) and
appends expecting the lead's current version, so one crossing qualifies the lead once, whatever the
redeliveries, restarts or a rebuild under new rules.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg

from events import aggregates
from events.envelope import Envelope
from events.ids import derived_id
from events.personal import Vault, seal_text
from events.store import ConcurrencyError, EventStore
from events.types import LeadQualified
from projections.scores_store import ScoresProjection, pending_qualifications
from projections.scoring import Score, explain
from workers.actor import Actor


class QualificationActor(Actor):
    async def tick(self, conn: psycopg.AsyncConnection[Any], store: EventStore) -> None:
        projection = self.engine.projection
        assert isinstance(projection, ScoresProjection)
        for lead in await pending_qualifications(conn, projection.build):
            history = await store.read("lead", lead.lead_id)
            if not history or aggregates.fold_lead([e.envelope for e in history]).status != "open":
                continue  # decided meanwhile: the projection sees it when it folds that event
            assert lead.crossed_at is not None
            explanation = Score(
                total=lead.score,
                fit=lead.fit,
                engagement=lead.engagement,
                qualified=True,
                rules_version=projection.rules.version,
                contributions=list(lead.contributions),
            )
            envelope = Envelope(
                event_id=derived_id("scores", projection.build, lead.lead_id, str(lead.crossed_sequence)),
                aggregate_type="lead",
                aggregate_id=lead.lead_id,
                occurred_at=lead.crossed_at,
                recorded_at=dt.datetime.now(dt.UTC),
                actor="scores-worker",
                source="system",
                correlation_id=history[0].envelope.correlation_id,
                data=LeadQualified(score=lead.score, reason=explain(explanation)[:10_000]),
            )
            # The explanation quotes what the lead answered: it is sealed with the lead's key like the answers.
            found = await Vault(store.js, store.naming).text_key(envelope, lead.lead_id, [h.envelope for h in history])
            if found is None:
                continue  # erased meanwhile: the projection sees it when it folds that event
            envelope = seal_text(envelope, found[2], found[0], found[1])
            try:
                await store.append([envelope], expected_version=history[-1].sequence)
            except ConcurrencyError:
                continue
            self.log.info("scores.qualified", lead_id=lead.lead_id, score=lead.score, owner=lead.owner)
