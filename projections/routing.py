"""Lead routing: who owns a new lead, by rules in the ``[routing]`` table of the rules file.

Rules are tried in order; the first whose conditions all hold (source, country, a minimum fit score) names
an owner, or a team whose members take turns (round-robin, counted per team from the log, so a rebuild
makes the same choices). No rule matching means the fallback owner. A manual assignment always wins: the
routing worker only assigns a lead that has no owner when its decision is appended (see workers/routing.py).
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from events.types import ShortText as Name
from projections.sla_rules import Team


class RoutingRule(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Conditions (all must hold; an empty list holds for everyone) and a target: ``owner`` or ``team``."""

    name: Name
    sources: list[str] = []
    countries: list[str] = []
    min_score: float | None = None
    owner: Name | None = None
    team: Name | None = None

    def __post_init__(self) -> None:
        if (self.owner is None) == (self.team is None):
            raise ValueError(f"routing rule {self.name!r}: give exactly one of owner and team")

    def matches(self, source: str, country: str | None, fit_score: float) -> bool:
        if self.sources and source not in self.sources:
            return False
        if self.countries and (country or "") not in self.countries:
            return False
        return self.min_score is None or fit_score >= self.min_score


class RoutingRules(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    rules: list[RoutingRule] = []
    fallback: Name | None = None
    teams: dict[str, Team] = {}

    def __post_init__(self) -> None:
        for rule in self.rules:
            if rule.team is not None and rule.team not in self.teams:
                raise ValueError(f"routing rule {rule.name!r}: no team {rule.team!r} in [teams]")
            if rule.team is not None and not self.teams[rule.team].members:
                raise ValueError(f"routing rule {rule.name!r}: team {rule.team!r} has no members")


class Decision(msgspec.Struct, frozen=True):
    owner: str | None
    rule: str | None
    team: str | None = None


def route(
    rules: RoutingRules, source: str, country: str | None, fit_score: float, turns: Mapping[str, int]
) -> Decision:
    """The owner for a new lead. ``turns``: how many leads each team has been given so far."""
    for rule in rules.rules:
        if not rule.matches(source, country, fit_score):
            continue
        if rule.owner is not None:
            return Decision(rule.owner, rule.name)
        assert rule.team is not None
        members = rules.teams[rule.team].members
        return Decision(members[turns.get(rule.team, 0) % len(members)], rule.name, rule.team)
    return Decision(rules.fallback, "fallback" if rules.fallback else None)
