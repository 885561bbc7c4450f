"""Each lead's route folded from the log: who the routing rules chose at its capture (taking the teams' turns)
and whether the log has an owner for it yet. Pure."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

import msgspec

from events.envelope import StoredEvent
from events.types import LeadAssigned, LeadCaptured, LeadDetailsFetched
from projections.folding import fold_into
from projections.routing import RoutingRules, route

RoutingState = Literal["pending", "assigned", "manual", "unrouted", "awaiting_details"]

FitScore = Callable[[LeadCaptured, str], float]
"""A lead's fit score at capture (from the scoring rules), for rules with ``min_score``."""


class LeadRoute(msgspec.Struct, frozen=True, kw_only=True):
    """``pending``: the rules chose ``decided_owner`` and the log has no owner yet (the worker appends the
    assignment); ``assigned``: the rules' choice is in the log; ``manual``: someone assigned it first;
    ``unrouted``: no rule and no fallback; ``awaiting_details``: a lead its source announced with ids only (Meta
    Lead Ads), routed when its fetched fields (``lead.details_fetched.v1``) reach the fold."""

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


def needs_details(captured: LeadCaptured, source: str) -> bool:
    """A Meta lead captured from the webhook alone: ids, no person; its fields are fetched from the Graph API."""
    names = (captured.email, captured.phone, captured.full_name, captured.first_name, captured.last_name)
    return source == "meta" and not any(names)


def _decide(
    state: RoutingTable,
    lead_id: str,
    captured: LeadCaptured,
    source: str,
    seq: int,
    rules: RoutingRules,
    fit_score: FitScore,
) -> LeadRoute:
    fit = fit_score(captured, source)
    decision = route(rules, source, captured.country, fit, state.turns)
    if decision.team is not None:
        state.turns[decision.team] = state.turns.get(decision.team, 0) + 1
    return LeadRoute(
        lead_id=lead_id,
        decided_owner=decision.owner,
        rule=decision.rule,
        team=decision.team,
        fit_score=fit,
        owner=None,
        state="pending" if decision.owner else "unrouted",
        version=seq,
    )


def _as_captured(details: LeadDetailsFetched) -> LeadCaptured:
    fields = {f: getattr(details, f) for f in LeadDetailsFetched.__struct_fields__ if f not in ("provider", "sealed")}
    return LeadCaptured(**fields)


def apply(state: RoutingTable, event: StoredEvent, rules: RoutingRules, fit_score: FitScore) -> None:
    """Fold one lead event (events at or below the route's version are ignored)."""
    env, seq = event.envelope, event.sequence
    row = state.leads.get(env.aggregate_id)
    if row is not None and seq <= row.version:
        return
    data = env.data
    if isinstance(data, LeadCaptured) and row is None:
        if needs_details(data, env.source):
            # Routed on its fields, not on an empty capture: the fetched details decide (and take the turn).
            row = LeadRoute(
                lead_id=env.aggregate_id,
                decided_owner=None,
                rule=None,
                team=None,
                fit_score=0.0,
                owner=None,
                state="awaiting_details",
                version=seq,
            )
        else:
            row = _decide(state, env.aggregate_id, data, env.source, seq, rules, fit_score)
    elif isinstance(data, LeadDetailsFetched) and row is not None and row.state == "awaiting_details":
        row = _decide(state, env.aggregate_id, _as_captured(data), data.provider, seq, rules, fit_score)
    elif isinstance(data, LeadAssigned) and row is not None:
        by_rules = data.reason == "rule" and row.state == "pending"
        waiting = row.state in ("pending", "awaiting_details")
        routing: RoutingState = "assigned" if by_rules else "manual" if waiting else row.state
        row = msgspec.structs.replace(row, owner=data.owner, state=routing, version=seq)
    else:
        return
    state.leads[row.lead_id] = row


def fold(
    events: Iterable[StoredEvent], rules: RoutingRules, fit_score: FitScore, state: RoutingTable | None = None
) -> RoutingTable:
    return fold_into(RoutingTable() if state is None else state, events, lambda s, e: apply(s, e, rules, fit_score))
