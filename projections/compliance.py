"""First-touch SLA compliance facts: per lead a first-touch policy applies to, its capture, deadline, owners
before its first touch, that touch and its disqualification; and those facts as of a past instant. Pure: no
I/O, no clock. The figures over the facts are in :mod:`projections.compliance_report`.

Its own fold, apart from the SLA timers (:mod:`projections.sla`): those drive alerts and may be rebuilt under
other clock rules, while these only measure, and are cut at any business time like the velocity facts.

- The policy is the first ``first_touch`` policy of the SLA rules matching the lead's channel (as the SLA
  clocks pick it); a lead no policy applies to is not measured and has no facts.
- The deadline is the policy's ``within_minutes`` after the capture, counted in the working hours of the
  calendar of the lead's owner (:meth:`projections.sla_rules.SlaRules.after`): the default calendar while
  unassigned, and computed again from the capture at each assignment before the first touch.
- A touch is what meets an SLA clock (:func:`projections.sla.is_touch`). The first one fixes the outcome, the rep
  credited with it (the owner then) and the time to it; later assignments, touches and disqualifications are not
  facts. A disqualification before any touch fixes it too.
- Within one lead business times are made non-decreasing in log order (an event dated before the previous
  applied one is taken at its time), so "as of" always cuts a prefix of the lead's history.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

import msgspec

from events.envelope import StoredEvent
from events.types import LeadAssigned, LeadCaptured, LeadDisqualified, TouchpointLogged, lead_source
from projections.business_time import business_duration
from projections.folding import fold_into
from projections.sla import is_touch
from projections.sla_rules import Policy, SlaRules

Outcome = Literal["met", "late", "breached", "within", "cancelled"]
OUTCOMES: tuple[Outcome, ...] = ("met", "late", "breached", "within", "cancelled")


class OwnerSpan(msgspec.Struct, frozen=True, kw_only=True):
    """An assignment before the first touch: the owner, their team, and the deadline from then on."""

    sequence: int
    at: dt.datetime
    owner: str
    team: str | None
    deadline: dt.datetime


class FirstTouchFacts(msgspec.Struct, frozen=True, kw_only=True):
    """One measured lead. ``deadline`` holds while it is unassigned; ``business_seconds`` is the working time from
    capture to first touch in the calendar of the rep credited with it."""

    lead_id: str
    channel: str
    source: str
    policy: str
    captured_at: dt.datetime
    deadline: dt.datetime
    owners: tuple[OwnerSpan, ...] = ()
    touched_at: dt.datetime | None = None
    business_seconds: float | None = None
    disqualified_at: dt.datetime | None = None
    last_at: dt.datetime
    version: int

    @property
    def final(self) -> bool:
        """Touched or disqualified: nothing later changes the lead's outcome."""
        return self.touched_at is not None or self.disqualified_at is not None

    @property
    def assignment(self) -> OwnerSpan | None:
        """The latest assignment (None while unassigned)."""
        return self.owners[-1] if self.owners else None

    @property
    def due(self) -> dt.datetime:
        """The deadline in force: the latest assignment's, else the unassigned one."""
        return self.owners[-1].deadline if self.owners else self.deadline


@dataclass
class ComplianceState:
    """Facts by lead id. ``apply`` replaces facts (they are frozen) and mutates this dict in place."""

    leads: dict[str, FirstTouchFacts] = field(default_factory=dict)

    def copy(self) -> ComplianceState:
        return ComplianceState(dict(self.leads))


def team_name(rules: SlaRules, rep: str | None) -> str | None:
    """The name of the team ``rep`` is a member of (the first, as :meth:`SlaRules.team_of` picks it)."""
    return next((name for name, team in rules.teams.items() if rep is not None and rep in team.members), None)


def _deadline(rules: SlaRules, policy: Policy, captured_at: dt.datetime, rep: str | None) -> dt.datetime:
    assert policy.within_minutes is not None  # a first_touch policy has one (checked when the rules load)
    return rules.after(policy, captured_at, policy.within_minutes, rep)


def apply(state: ComplianceState, event: StoredEvent, rules: SlaRules) -> ComplianceState:
    """Fold one event into ``state`` (in place) and return it. Idempotent per sequence: an event at or below the
    lead's ``version`` changes nothing; so does any event no fact records (it costs no write)."""
    envelope = event.envelope
    if envelope.aggregate_type != "lead":
        return state
    data, seq, lead_id = envelope.data, event.sequence, envelope.aggregate_id
    lead = state.leads.get(lead_id)
    if lead is None:
        if isinstance(data, LeadCaptured):
            policy = rules.policy("first_touch", "lead", envelope.source, None)
            if policy is not None:
                at = envelope.occurred_at.astimezone(dt.UTC)
                state.leads[lead_id] = FirstTouchFacts(
                    lead_id=lead_id,
                    channel=envelope.source,
                    source=lead_source(data, envelope.source),
                    policy=policy.name,
                    captured_at=at,
                    deadline=_deadline(rules, policy, at, None),
                    last_at=at,
                    version=seq,
                )
        return state
    if seq <= lead.version or lead.final:
        return state
    at = max(envelope.occurred_at.astimezone(dt.UTC), lead.last_at)
    replace = msgspec.structs.replace
    if isinstance(data, LeadAssigned):
        policy = next((p for p in rules.policies if p.name == lead.policy), None)
        if policy is None:
            return state  # unreachable under the rules that captured it: a build keeps one set of rules
        span = OwnerSpan(
            sequence=seq,
            at=at,
            owner=data.owner,
            team=team_name(rules, data.owner),
            deadline=_deadline(rules, policy, lead.captured_at, data.owner),
        )
        lead = replace(lead, owners=(*lead.owners, span))
    elif isinstance(data, TouchpointLogged) and is_touch(data):
        rep = lead.assignment.owner if lead.assignment else None
        worked = business_duration(lead.captured_at, at, rules.calendar_of(rep))
        lead = replace(lead, touched_at=at, business_seconds=worked.total_seconds())
    elif isinstance(data, LeadDisqualified):
        lead = replace(lead, disqualified_at=at)
    else:
        return state
    state.leads[lead_id] = replace(lead, last_at=at, version=seq)
    return state


def fold(events: Iterable[StoredEvent], rules: SlaRules, state: ComplianceState | None = None) -> ComplianceState:
    return fold_into(ComplianceState() if state is None else state, events, lambda s, e: apply(s, e, rules))


def lead_at(lead: FirstTouchFacts, as_of: dt.datetime) -> FirstTouchFacts | None:
    """The lead as known at ``as_of``: only facts with business time <= ``as_of`` (None if not yet captured)."""
    if lead.captured_at > as_of:
        return None
    if lead.last_at <= as_of:
        return lead
    touched = lead.touched_at is not None and lead.touched_at <= as_of
    return msgspec.structs.replace(
        lead,
        owners=tuple(o for o in lead.owners if o.at <= as_of),
        touched_at=lead.touched_at if touched else None,
        business_seconds=lead.business_seconds if touched else None,
        disqualified_at=lead.disqualified_at if lead.disqualified_at and lead.disqualified_at <= as_of else None,
    )


def outcome(lead: FirstTouchFacts, as_of: dt.datetime) -> Outcome:
    """The outcome of a lead already cut at ``as_of`` (:func:`lead_at`): ``met`` (first touch at or before the
    deadline), ``late`` (after it), ``breached`` (no touch, and the deadline passed before ``as_of`` and before any
    disqualification), ``within`` (open, no touch, not yet due) or ``cancelled`` (disqualified untouched by its
    deadline: the clock stopped, as the SLA timer is cancelled)."""
    due = lead.due
    if lead.touched_at is not None:
        return "met" if lead.touched_at <= due else "late"
    if lead.disqualified_at is not None:
        return "cancelled" if lead.disqualified_at <= due else "breached"
    return "breached" if as_of > due else "within"
