"""Who may see and move which leads and deals: a user's role, their team from the rules file, and ``[access]``.

Pure: the API asks it with the signed-in user and the owner of what they reach for. API keys are not users:
their scopes alone decide (integrations act for the whole installation).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import msgspec

from events.types import UserRole
from projections.sla_rules import Team

RepsSee = Literal["own", "team", "all"]


class AccessRules(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``[access]`` of the rules file: whose leads and deals a rep sees and moves (``own``, their ``team``'s or
    ``all``). Managers see their team's, admins and auditors everyone's (auditors only read history)."""

    reps_see: RepsSee = "team"


class Viewer(msgspec.Struct, frozen=True):
    """A signed-in user as access decisions need them; ``team``: their record's team, else None."""

    username: str
    role: UserRole
    team: str | None = None


def team_of(teams: Mapping[str, Team], viewer: Viewer) -> str | None:
    """The viewer's team: the one their record names, else the team listing them (a member, or its manager)."""
    if viewer.team is not None:
        return viewer.team
    listed = [name for name, t in sorted(teams.items()) if viewer.username in t.members]
    managed = [name for name, t in sorted(teams.items()) if t.manager == viewer.username]
    found = listed if viewer.role == "rep" else managed or listed
    return found[0] if found else None


def visible_owners(teams: Mapping[str, Team], rules: AccessRules, viewer: Viewer) -> frozenset[str] | None:
    """The owners whose leads and deals the viewer sees and moves; None: everyone's (and the unowned)."""
    if viewer.role in ("admin", "auditor") or (viewer.role == "rep" and rules.reps_see == "all"):
        return None
    if viewer.role == "rep" and rules.reps_see == "own":
        return frozenset({viewer.username})
    team = teams.get(team_of(teams, viewer) or "")
    if viewer.role == "manager":
        # A manager may manage several teams; their record's team counts as one of them.
        managed = [t for t in teams.values() if t.manager == viewer.username] + ([team] if team else [])
        return frozenset({viewer.username, *(m for t in managed for m in (*t.members, t.manager))})
    return frozenset({viewer.username, *(team.members if team else ())})


def may_reach(teams: Mapping[str, Team], rules: AccessRules, viewer: Viewer, owner: str | None) -> bool:
    """Whether the viewer may see (and, with the scope, move) a lead or deal owned by ``owner``. Unowned ones
    are for managers (to hand them out) and whoever sees everyone's."""
    owners = visible_owners(teams, rules, viewer)
    if owners is None:
        return True
    if owner is None:
        return viewer.role == "manager"
    return owner in owners
