"""Each lead's route folded from the log: who the routing rules chose at its capture (taking the teams' turns)
and whether the log has an owner for it yet. Pure."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

import msgspec

from events.envelope import StoredEvent
from events.types import LeadAssigned, LeadCaptured
from projections.folding import fold_into
from projections.routing import RoutingRules, route

RoutingState = Literal["pending", "assigned", "manual", "unrouted"]

FitScore = Callable[[LeadCaptured, str], float]
"""A lead's fit score at capture (from the scoring rules), for rules with ``min_score``."""


class LeadRoute(msgspec.Struct, frozen=True, kw_only=True):
    """``pending``: the rules chose ``decided_owner`` and the log has no owner yet (the worker appends the
    assignment); ``assigned``: the rules' choice is in the log; ``manual``: someone assigned it first;
    ``unrouted``: no rule and no fallback."""

    lead_id: str
    decided_owner: str | None
    rule: str | None
    team: str | None
    fit_score: float
    owner: str | None
    state: RoutingState
    version: int


@dataclass
class RoutingTable:
    """Routes by lead and the round-robin turns taken per team."""

    leads: dict[str, LeadRoute] = field(default_factory=dict)
    turns: dict[str, int] = field(default_factory=dict)

    def copy(self) -> RoutingTable:
        return RoutingTable(dict(self.leads), dict(self.turns))


def apply(state: RoutingTable, event: StoredEvent, rules: RoutingRules, fit_score: FitScore) -> None:
    """Fold one lead event (events at or below the route's version are ignored)."""
    env, seq = event.envelope, event.sequence
    row = state.leads.get(env.aggregate_id)
    if row is not None and seq <= row.version:
        return
    data = env.data
    if isinstance(data, LeadCaptured) and row is None:
        fit = fit_score(data, env.source)
        decision = route(rules, env.source, data.country, fit, state.turns)
        if decision.team is not None:
            state.turns[decision.team] = state.turns.get(decision.team, 0) + 1
        row = LeadRoute(
            lead_id=env.aggregate_id,
            decided_owner=decision.owner,
            rule=decision.rule,
            team=decision.team,
            fit_score=fit,
            owner=None,
            state="pending" if decision.owner else "unrouted",
            version=seq,
        )
    elif isinstance(data, LeadAssigned) and row is not None:
        by_rules = data.reason == "rule" and row.state == "pending"
        routing: RoutingState = "assigned" if by_rules else "manual" if row.state == "pending" else row.state
        row = msgspec.structs.replace(row, owner=data.owner, state=routing, version=seq)
    else:
        return
    state.leads[row.lead_id] = row


def fold(
    events: Iterable[StoredEvent], rules: RoutingRules, fit_score: FitScore, state: RoutingTable | None = None
) -> RoutingTable:
    return fold_into(RoutingTable() if state is None else state, events, lambda s, e: apply(s, e, rules, fit_score))
