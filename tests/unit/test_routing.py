"""Lead routing rules without a server."""

from __future__ import annotations

from pathlib import Path

import pytest

from projections.routing import RoutingRule, RoutingRules, route
from projections.rules import sales_rules_from_toml
from projections.sla_rules import Team

TEAMS = {"inside": Team(members=["ana", "bo"], manager="maria"), "ent": Team(members=["chen"], manager="li")}
RULES = RoutingRules(
    rules=[
        RoutingRule(name="big", min_score=60, team="ent"),
        RoutingRule(name="dach", countries=["DE", "AT", "CH"], owner="bo"),
        RoutingRule(name="ads", sources=["meta", "typeform"], team="inside"),
    ],
    fallback="sales-lead",
    teams=TEAMS,
)


def test_the_first_matching_rule_wins() -> None:
    assert route(RULES, "meta", "DE", 80, {}).owner == "chen"
    assert route(RULES, "meta", "DE", 10, {}).owner == "bo"
    assert route(RULES, "web_form", "PL", 10, {}).rule == "fallback"


def test_a_team_takes_turns() -> None:
    owners = []
    turns: dict[str, int] = {}
    for _ in range(5):
        decision = route(RULES, "meta", "PL", 0, turns)
        assert decision.team == "inside"
        turns["inside"] = turns.get("inside", 0) + 1
        owners.append(decision.owner)
    assert owners == ["ana", "bo", "ana", "bo", "ana"]


def test_no_rule_and_no_fallback_leaves_the_lead_unrouted() -> None:
    assert route(RoutingRules(), "meta", None, 0, {}).owner is None


def test_bad_rules_say_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="exactly one of owner and team"):
        RoutingRule(name="x", owner="a", team="b")
    with pytest.raises(ValueError, match="no team"):
        RoutingRules(rules=[RoutingRule(name="x", team="ghosts")])
    with pytest.raises(ValueError, match="routing"):
        sales_rules_from_toml('[[routing.rules]]\nname = "x"\n')


def test_the_example_file_routes() -> None:
    rules = sales_rules_from_toml((Path(__file__).parents[2] / "deploy" / "sales.toml").read_text()).routing
    assert rules.fallback and route(rules, "meta", "PL", 0, {}).owner in rules.teams["inside-sales"].members
