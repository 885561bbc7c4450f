"""The routing worker's actor: appends the owner the rules chose for each new lead, unless someone was first.

The assignment is appended with the lead's current version as the expected one, after checking in the
lead's own history that it still has no owner; so a manual assignment, even one racing this append,
always wins, and a retried or replayed decision assigns once.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg

from events import aggregates
from events.envelope import Envelope
from events.ids import derived_id
from events.store import ConcurrencyError, EventStore
from events.types import LeadAssigned
from projections.routing_store import RoutingProjection, pending_routes
from workers.actor import Actor


class RoutingActor(Actor):
    async def tick(self, conn: psycopg.AsyncConnection[Any], store: EventStore) -> None:
        projection = self.engine.projection
        assert isinstance(projection, RoutingProjection)
        for route in await pending_routes(conn, projection.build):
            assert route.decided_owner is not None
            history = await store.read("lead", route.lead_id)
            if not history or aggregates.fold_lead([e.envelope for e in history]).owner is not None:
                continue  # assigned meanwhile: the projection marks it when it folds that event
            captured = history[0].envelope
            envelope = Envelope(
                event_id=derived_id("routing", route.lead_id),
                aggregate_type="lead",
                aggregate_id=route.lead_id,
                # Owned from the first minute: the assignment's business time is the lead's capture.
                occurred_at=captured.occurred_at,
                recorded_at=dt.datetime.now(dt.UTC),
                actor="routing-worker",
                source="system",
                correlation_id=captured.correlation_id,
                causation_id=captured.event_id,
                data=LeadAssigned(owner=route.decided_owner, reason="rule"),
            )
            try:
                await store.append([envelope], expected_version=history[-1].sequence)
            except ConcurrencyError:
                continue  # the lead moved on: the next poll decides again on its new history
            self.log.info("routing.assigned", lead_id=route.lead_id, owner=route.decided_owner, rule=route.rule)
