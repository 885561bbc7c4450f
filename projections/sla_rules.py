"""Follow-up SLA policies and the teams they measure: which clock starts on what, how long it runs, who is told.

Decoded from the ``[sla]`` table of the rules file and its shared ``[teams]`` (see ``projections/rules.py``).
Deadlines are computed from these rules when the events are folded, so changing a policy means bumping
``version``: the SLA worker then rebuilds its timers from the log under the new rules beside the old ones,
and switches over when caught up.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

import msgspec

from events.types import ShortText as Name
from events.types import SlaKind
from projections.business_time import Calendar, add_business_time

Minutes = Annotated[float, msgspec.Meta(gt=0, le=525_600)]


class Policy(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One SLA. ``first_touch``: a lead must be touched within ``within_minutes`` of its capture (business
    time). ``next_touch``: an open lead or deal must be touched again within ``within_minutes`` of the last
    touch. ``task_due``: a task must be completed by its due time. ``deal_rotting``: a deal must move stage
    within its stage's rotting days. ``sources``/``pipelines`` narrow a policy; the first match applies."""

    name: Name
    kind: SlaKind
    within_minutes: Minutes | None = None
    applies_to: tuple[Literal["lead", "deal"], ...] = ("lead", "deal")
    sources: list[str] = []
    pipelines: list[str] = []
    business_hours: bool = True
    escalate_after_minutes: Minutes | None = None

    def __post_init__(self) -> None:
        if self.kind in ("first_touch", "next_touch") and self.within_minutes is None:
            raise ValueError(f"policy {self.name!r}: {self.kind} needs within_minutes")


class Team(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    members: list[Name]
    manager: Name
    calendar: Calendar = Calendar()


class SlaRules(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``calendar`` and ``manager`` apply to reps in no team (and to unassigned leads and deals)."""

    version: Annotated[int, msgspec.Meta(ge=1, le=99)] = 1
    policies: list[Policy] = []
    teams: dict[str, Team] = {}
    calendar: Calendar = Calendar()
    manager: Name | None = None
    history_horizon_minutes: Minutes | None = None
    """A clock whose deadline lies further than this before the moment its event was recorded is history (an
    import, a backfill): it is recorded as breached (``lapsed``) and never raised or escalated. None: no horizon."""

    def policy(
        self, kind: SlaKind, subject: Literal["lead", "deal"], source: str | None, pipeline: str | None
    ) -> Policy | None:
        for p in self.policies:
            if p.kind != kind or subject not in p.applies_to:
                continue
            if p.sources and source not in p.sources:
                continue
            if p.pipelines and (subject != "deal" or pipeline not in p.pipelines):
                continue
            return p
        return None

    def named(self, name: str) -> Policy | None:
        """The policy called ``name`` (a timer records the name of the policy that started it)."""
        return next((p for p in self.policies if p.name == name), None)

    def team_of(self, rep: str | None) -> Team | None:
        if rep is not None:
            for team in self.teams.values():
                if rep in team.members:
                    return team
        return None

    def calendar_of(self, rep: str | None) -> Calendar:
        team = self.team_of(rep)
        return team.calendar if team else self.calendar

    def manager_of(self, rep: str | None) -> str | None:
        team = self.team_of(rep)
        return team.manager if team else self.manager

    def after(self, policy: Policy, start: dt.datetime, minutes: float, rep: str | None) -> dt.datetime:
        """``minutes`` after ``start``: counted in the rep's working hours when the policy says so."""
        span = dt.timedelta(minutes=minutes)
        if policy.business_hours:
            return add_business_time(start, span, self.calendar_of(rep))
        return (start + span).astimezone(dt.UTC)
