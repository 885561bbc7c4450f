"""Lead scores folded from the log: each lead's profile, touchpoints and score, and the moment its score first
reached the threshold (a qualification the scores worker then appends, once). Pure.

Whether a lead is qualified is the log's word (a ``lead.qualified.v1`` by anyone); a build only proposes a
qualification (``crossed_at``) for a lead the log does not hold as qualified or disqualified yet. That is
what lets a new rules version re-score the whole log beside the old one without qualifying anyone twice.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Literal

import msgspec

from events.envelope import StoredEvent
from events.types import (
    LeadAssigned,
    LeadCaptured,
    LeadCorrected,
    LeadDetailsFetched,
    LeadDisqualified,
    LeadErased,
    LeadQualified,
    TouchpointLogged,
)
from projections.folding import fold_into
from projections.scoring import (
    ERASED,
    Contribution,
    LeadProfile,
    ScoringRules,
    Touch,
    corrected,
    profile_from,
    score,
    scrubbed,
    with_details,
)

LeadStatus = Literal["open", "qualified", "disqualified"]


class LeadScore(msgspec.Struct, frozen=True, kw_only=True):
    """``score`` and its explanation are as of ``scored_at`` (the business time of the lead's last event);
    readers recompute it as of now with :func:`projections.scoring.score`, since engagement fades."""

    lead_id: str
    profile: LeadProfile
    touches: tuple[Touch, ...] = ()
    owner: str | None = None
    status: LeadStatus = "open"
    score: float = 0.0
    fit: float = 0.0
    engagement: float = 0.0
    contributions: tuple[Contribution, ...] = ()
    scored_at: dt.datetime
    crossed_at: dt.datetime | None = None
    crossed_sequence: int | None = None
    erased: bool = False
    version: int

    @property
    def pending_qualification(self) -> bool:
        return self.status == "open" and self.crossed_sequence is not None


def apply(leads: dict[str, LeadScore], event: StoredEvent, rules: ScoringRules) -> None:
    """Fold one lead event (events at or below the row's version are ignored)."""
    env = event.envelope
    if env.aggregate_type != "lead":
        return
    row = before = leads.get(env.aggregate_id)
    if row is not None and event.sequence <= row.version:
        return
    data, at, seq = env.data, env.occurred_at.astimezone(dt.UTC), event.sequence
    if isinstance(data, LeadCaptured):
        row = LeadScore(lead_id=env.aggregate_id, profile=profile_from(data, env.source), scored_at=at, version=seq)
    elif row is None:
        return
    elif isinstance(data, TouchpointLogged):
        outcome = None if data.outcome == ERASED else data.outcome
        touch = Touch(at=at, kind=data.kind, direction=data.direction, outcome=outcome)
        row = msgspec.structs.replace(row, touches=(*row.touches, touch))
    elif isinstance(data, LeadDetailsFetched):
        row = msgspec.structs.replace(row, profile=with_details(row.profile, data))
    elif isinstance(data, LeadCorrected):
        # A corrected company or title is scored from then on, as if the capture had said it.
        row = msgspec.structs.replace(row, profile=corrected(row.profile, data))
    elif isinstance(data, LeadAssigned):
        row = msgspec.structs.replace(row, owner=data.owner)
    elif isinstance(data, LeadQualified):
        row = msgspec.structs.replace(row, status="qualified")
    elif isinstance(data, LeadDisqualified):
        row = msgspec.structs.replace(row, status="disqualified")
    elif isinstance(data, LeadErased):
        # Nothing read from the lead's sealed fields stays: the profile keeps the clear allow-list, touches
        # their kind and time, and the score is taken again on that, as a rebuild after the erasure would.
        touches = tuple(msgspec.structs.replace(t, outcome=None) for t in row.touches)
        row = msgspec.structs.replace(row, erased=True, profile=scrubbed(row.profile), touches=touches)
    else:
        row = msgspec.structs.replace(row)
    # Scored at the latest business time seen, so an event recorded late never turns the clock back.
    scored_at = max(row.scored_at, at)
    # Fit looks at the profile alone: a touch, an owner or a decision keeps the row's fit contributions (made under
    # these very rules: a build scores with its own), and only a new profile is matched against the rules again.
    fit = None
    if before is not None and row.profile is before.profile:
        fit = [c for c in before.contributions if c.kind == "fit"]
    s = score(rules, row.profile, row.touches, scored_at, fit)
    crossed = row.crossed_at is None and row.status == "open" and s.qualified
    leads[row.lead_id] = msgspec.structs.replace(
        row,
        score=s.total,
        fit=s.fit,
        engagement=s.engagement,
        contributions=tuple(s.contributions),
        scored_at=scored_at,
        crossed_at=scored_at if crossed else row.crossed_at,
        crossed_sequence=seq if crossed else row.crossed_sequence,
        version=seq,
    )


def fold(
    events: Iterable[StoredEvent], rules: ScoringRules, leads: dict[str, LeadScore] | None = None
) -> dict[str, LeadScore]:
    return fold_into({} if leads is None else leads, events, lambda state, event: apply(state, event, rules))


class ScoreChange(msgspec.Struct, frozen=True, kw_only=True):
    lead_id: str
    old_score: float | None
    new_score: float | None
    old_qualifies: bool
    new_qualifies: bool


class ScoreDiff(msgspec.Struct, frozen=True, kw_only=True):
    """How a new rules build scores the leads differently from the serving one."""

    leads: int
    changed: int
    newly_qualifying: int
    no_longer_qualifying: int
    mean_delta: float
    largest: list[ScoreChange]


def diff(old: dict[str, LeadScore], new: dict[str, LeadScore], top: int = 20) -> ScoreDiff:
    """Compare two builds' stored scores lead by lead (a lead qualifies when its build crossed or the log says
    so); ``largest``: the ``top`` biggest score changes."""
    changes: list[ScoreChange] = []
    ids = sorted(set(old) | set(new))
    deltas = []
    for lead_id in ids:
        a, b = old.get(lead_id), new.get(lead_id)
        qa = a is not None and (a.crossed_at is not None or a.status == "qualified")
        qb = b is not None and (b.crossed_at is not None or b.status == "qualified")
        sa, sb = (a.score if a else None), (b.score if b else None)
        if sa != sb or qa != qb:
            changes.append(ScoreChange(lead_id=lead_id, old_score=sa, new_score=sb, old_qualifies=qa, new_qualifies=qb))
            deltas.append((sb or 0.0) - (sa or 0.0))
    largest = sorted(changes, key=lambda c: (-abs((c.new_score or 0.0) - (c.old_score or 0.0)), c.lead_id))[:top]
    return ScoreDiff(
        leads=len(ids),
        changed=len(changes),
        newly_qualifying=sum(1 for c in changes if c.new_qualifies and not c.old_qualifies),
        no_longer_qualifying=sum(1 for c in changes if c.old_qualifies and not c.new_qualifies),
        mean_delta=round(sum(deltas) / len(deltas), 2) if deltas else 0.0,
        largest=largest,
    )
