"""The routing worker's actor: appends the owner the rules chose for each new lead, unless someone was first.

The assignment is appended with the lead's current version as the expected one, after checking in the
lead's own history that it still has no owner; so a manual assignment, even one racing this append,
always wins, and a retried or replayed decision assigns once.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg

from events.aggregates import Rejected
from events.commands import RouteLead
from events.handlers import route_lead
from events.ledger import Ledger
from events.store import ConcurrencyError
from projections.routing_store import RoutingProjection, pending_routes
from workers.actor import Actor


class RoutingActor(Actor):
    name = "routing-worker"

    async def tick(self, conn: psycopg.AsyncConnection[Any], ledger: Ledger) -> None:
        projection = self.engine.projection
        assert isinstance(projection, RoutingProjection)
        for route in await pending_routes(conn, projection.build):
            assert route.decided_owner is not None
            command = RouteLead(lead_id=route.lead_id, owner=route.decided_owner)
            try:
                # The correlation is the lead's: the handler takes it from the capture.
                await route_lead(ledger, self.context(dt.datetime.now(dt.UTC), route.lead_id), command)
            except Rejected:
                continue  # assigned meanwhile: the projection marks it when it folds that event
            except ConcurrencyError:
                continue  # the lead kept moving: the next poll decides again on its new history
            self.log.info("routing.assigned", lead_id=route.lead_id, owner=route.decided_owner, rule=route.rule)
