"""Whose leads and deals a signed-in user reaches (projections/access.py), and the user aggregate's decisions."""

from __future__ import annotations

import datetime as dt

import pytest

from events import aggregates as agg
from events.envelope import Envelope
from events.types import Event, UserCreated, UserDeactivated, UserPasswordSet, UserRoleChanged
from projections.access import AccessRules, Viewer, may_reach, team_of, visible_owners
from projections.rules import sales_rules_from_toml

RULES = sales_rules_from_toml(
    '[teams.inside]\nmembers = ["ana", "bo"]\nmanager = "maria"\n'
    '[teams.enterprise]\nmembers = ["chen"]\nmanager = "li"\n[access]\nreps_see = "own"\n'
)
TEAMS = RULES.routing.teams


def test_the_rules_file_names_whose_deals_a_rep_sees() -> None:
    assert RULES.access.reps_see == "own"
    assert sales_rules_from_toml("").access == AccessRules(reps_see="team")
    with pytest.raises(ValueError, match="access"):
        sales_rules_from_toml('[access]\nreps_see = "everyone"\n')


@pytest.mark.parametrize(
    ("reps_see", "owner", "reached"),
    [
        ("own", "ana", True),
        ("own", "bo", False),
        ("team", "bo", True),
        ("team", "chen", False),
        ("team", None, False),
        ("all", "chen", True),
        ("all", None, True),
    ],
)
def test_a_rep_reaches_as_the_rules_say(reps_see: str, owner: str | None, reached: bool) -> None:
    rules = AccessRules(reps_see=reps_see)  # type: ignore[arg-type]
    assert may_reach(TEAMS, rules, Viewer("ana", "rep"), owner) is reached


def test_a_manager_reaches_their_team_and_the_unowned_an_admin_and_auditor_everyone() -> None:
    rules = AccessRules(reps_see="own")
    maria = Viewer("maria", "manager")
    assert team_of(TEAMS, maria) == "inside"
    assert visible_owners(TEAMS, rules, maria) == {"ana", "bo", "maria"}
    assert may_reach(TEAMS, rules, maria, None) and not may_reach(TEAMS, rules, maria, "chen")
    for role in ("admin", "auditor"):
        assert may_reach(TEAMS, rules, Viewer("x", role), "chen")  # type: ignore[arg-type]


def test_a_users_own_team_wins_over_the_rules_file() -> None:
    moved = Viewer("ana", "rep", team="enterprise")
    assert team_of(TEAMS, moved) == "enterprise"
    assert may_reach(TEAMS, AccessRules(reps_see="team"), moved, "chen")
    assert not may_reach(TEAMS, AccessRules(reps_see="team"), moved, "bo")


def _history(*events: Event) -> list[Envelope]:
    now = dt.datetime(2026, 11, 23, tzinfo=dt.UTC)
    return [
        Envelope(
            event_id=str(n),
            aggregate_type="user",
            aggregate_id="ana",
            occurred_at=now,
            recorded_at=now,
            actor="admin",
            source="api",
            correlation_id="c",
            data=e,
        )
        for n, e in enumerate(events)
    ]


def test_the_user_aggregate_decides() -> None:
    state = agg.fold_user(_history(UserCreated(role="rep"), UserPasswordSet()))
    assert state.exists and state.active and state.password_set and state.role == "rep"
    with pytest.raises(agg.Rejected):
        agg.create_user(state, UserCreated(role="admin"))
    with pytest.raises(agg.Rejected):
        agg.change_role(state, "rep", None)  # nothing would change
    assert agg.change_role(state, "manager", None) == UserRoleChanged(role="manager", previous_role="rep")
    gone = agg.fold_user(_history(UserCreated(role="rep"), UserDeactivated()))
    assert not gone.active
    with pytest.raises(agg.Rejected, match="deactivated"):
        agg.set_password(gone, "admin")
    with pytest.raises(agg.Rejected) as missing:
        agg.deactivate_user(agg.UserState(), None)
    assert missing.value.status == 404
