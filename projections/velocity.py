"""Velocity facts: the fold from events to time-stamped facts, and those facts as of a past instant. Pure: no
I/O, no clock. The figures over the facts are in :mod:`projections.velocity_report`, calendar periods in
:mod:`projections.velocity_periods` and the elementary formulas in :mod:`projections.stats`.

The fold keeps, per deal, its opening, its stage visits (``entered_at``/``left_at``), its amount history and
its close; per lead, its capture, qualification, disqualification and owner assignments; per pipeline, every
definition. Every fact carries its business time (``occurred_at``), so a figure "as of" a past instant is the
same formula over the facts known by then (:func:`deal_at`, :func:`lead_at`, :func:`pipeline_at`).

Conventions shared by the fold and every formula over its facts:

- A period is ``[start, end)`` in UTC instants (see :func:`projections.velocity_periods.period`); a fact at
  ``t`` is *known* when ``t <= as_of``.
- Within one deal (or lead) business times are made non-decreasing in log order: an event dated before the
  previous one is taken at the previous one's time, so visits never have negative length and "as of" always
  cuts a prefix of the history.
- A closed deal is final (the decisions reject changes to it) but for a lost deal's reopening: later events
  of that deal are ignored, as is a second ``DealOpened``, and a lead's events before its ``LeadCaptured``, or
  a deal's before its ``DealOpened``.
- A reopened deal counts lost only while it is lost: its outcome is its latest close, and as of a time
  between a loss and its reopening it is the lost deal it was then (:class:`ReopenFact`). So a deal lost,
  reopened and lost again counts one loss, at the latest; one reopened and won counts one win and no loss.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

import msgspec

from events.envelope import StoredEvent
from events.types import (
    DealAmountChanged,
    DealLost,
    DealOpened,
    DealReassigned,
    DealReopened,
    DealStageChanged,
    DealWon,
    LeadAssigned,
    LeadCaptured,
    LeadDisqualified,
    LeadQualified,
    PipelineDefined,
    lead_source,
)
from projections.folding import fold_into

Outcome = Literal["won", "lost"]

# --- facts ---------------------------------------------------------------------------------------------------


class StageVisit(msgspec.Struct, frozen=True, kw_only=True):
    """One stay of a deal in a stage; ``left_at`` is None while the deal is still there."""

    stage: str
    entered_at: dt.datetime
    left_at: dt.datetime | None = None


class AmountFact(msgspec.Struct, frozen=True, kw_only=True):
    """The deal's amount from ``at`` on (its opening amount, then each change)."""

    sequence: int
    at: dt.datetime
    amount: Decimal
    currency: str


class OwnerFact(msgspec.Struct, frozen=True, kw_only=True):
    sequence: int
    at: dt.datetime
    owner: str


class ReopenFact(msgspec.Struct, frozen=True, kw_only=True):
    """A loss undone: the deal was lost at ``lost_at`` and back in play from ``at``."""

    sequence: int
    at: dt.datetime
    lost_at: dt.datetime
    lost_reason: str


class DealFacts(msgspec.Struct, frozen=True, kw_only=True):
    deal_id: str
    pipeline_id: str
    owner: str | None
    lead_source: str | None
    opened_at: dt.datetime
    expected_close_date: dt.date | None
    outcome: Outcome | None = None
    closed_at: dt.datetime | None = None
    won_amount: Decimal | None = None
    won_currency: str | None = None
    lost_reason: str | None = None
    visits: tuple[StageVisit, ...] = ()
    amounts: tuple[AmountFact, ...] = ()
    reopens: tuple[ReopenFact, ...] = ()
    # Handed to another rep: ``owner`` stays the opening owner, :func:`deal_owner` is the one known at a moment.
    reassignments: tuple[OwnerFact, ...] = ()
    # The business time of the last applied event (times are clamped to it) and its stream sequence.
    last_at: dt.datetime
    version: int


class LeadFacts(msgspec.Struct, frozen=True, kw_only=True):
    lead_id: str
    source: str
    campaign: str | None = None
    captured_at: dt.datetime
    qualified_at: dt.datetime | None = None
    disqualified_at: dt.datetime | None = None
    disqualified_reason: str | None = None
    owners: tuple[OwnerFact, ...] = ()
    last_at: dt.datetime
    version: int


class StageDef(msgspec.Struct, frozen=True):
    id: str
    probability: float


class PipelineVersion(msgspec.Struct, frozen=True, kw_only=True):
    """One ``PipelineDefined``: stages in pipeline order, valid from ``defined_at`` until the next one."""

    pipeline_id: str
    sequence: int
    defined_at: dt.datetime
    stages: tuple[StageDef, ...]


@dataclass
class VelocityState:
    """Facts by id. ``apply`` replaces facts (they are frozen) and mutates these dicts in place."""

    deals: dict[str, DealFacts] = field(default_factory=dict)
    leads: dict[str, LeadFacts] = field(default_factory=dict)
    pipelines: dict[str, tuple[PipelineVersion, ...]] = field(default_factory=dict)

    def copy(self) -> VelocityState:
        return VelocityState(dict(self.deals), dict(self.leads), dict(self.pipelines))


# --- the fold ------------------------------------------------------------------------------------------------


def apply(state: VelocityState, event: StoredEvent) -> VelocityState:
    """Fold one event into ``state`` (in place) and return it.

    Idempotent per sequence: an event at or below the fact's ``version`` (or, for a pipeline, its latest
    definition's sequence) changes nothing. Events that no figure uses (touchpoints, tasks) change nothing
    either, so they cost no write.
    """
    kind = event.envelope.aggregate_type
    if kind == "deal":
        _apply_deal(state, event)
    elif kind == "lead":
        _apply_lead(state, event)
    else:
        _apply_pipeline(state, event)
    return state


def fold(events: Iterable[StoredEvent], state: VelocityState | None = None) -> VelocityState:
    return fold_into(VelocityState() if state is None else state, events, apply)


def _apply_pipeline(state: VelocityState, event: StoredEvent) -> None:
    data = event.envelope.data
    pipeline_id = event.envelope.aggregate_id
    versions = state.pipelines.get(pipeline_id, ())
    if not isinstance(data, PipelineDefined) or (versions and event.sequence <= versions[-1].sequence):
        return
    version = PipelineVersion(
        pipeline_id=pipeline_id,
        sequence=event.sequence,
        defined_at=event.envelope.occurred_at,
        stages=tuple(StageDef(s.id, s.probability) for s in data.stages),
    )
    state.pipelines[pipeline_id] = (*versions, version)


def _close_last(visits: tuple[StageVisit, ...], at: dt.datetime) -> tuple[StageVisit, ...]:
    if not visits or visits[-1].left_at is not None:
        return visits
    return (*visits[:-1], msgspec.structs.replace(visits[-1], left_at=at))


def _apply_deal(state: VelocityState, event: StoredEvent) -> None:
    envelope = event.envelope
    data = envelope.data
    seq = event.sequence
    deal_id = envelope.aggregate_id
    deal = state.deals.get(deal_id)
    if deal is None:
        if isinstance(data, DealOpened):
            at = envelope.occurred_at
            state.deals[deal_id] = DealFacts(
                deal_id=deal_id,
                pipeline_id=data.pipeline_id,
                owner=data.owner,
                lead_source=data.lead_source,
                opened_at=at,
                expected_close_date=data.expected_close_date,
                visits=(StageVisit(stage=data.stage, entered_at=at),),
                amounts=(AmountFact(sequence=seq, at=at, amount=data.amount, currency=data.currency),),
                last_at=at,
                version=seq,
            )
        return
    reopened = isinstance(data, DealReopened) and deal.outcome == "lost"
    if seq <= deal.version or (deal.outcome is not None and not reopened):
        return
    at = max(envelope.occurred_at, deal.last_at)
    replace = msgspec.structs.replace
    visits = deal.visits
    current = visits[-1].stage
    if isinstance(data, DealStageChanged):
        # ``to_stage`` is what the deal entered; a moved-to-the-same-stage event is no stay at all.
        if data.to_stage == current:
            return
        visits = (*_close_last(visits, at), StageVisit(stage=data.to_stage, entered_at=at))
        deal = replace(deal, visits=visits)
    elif isinstance(data, DealAmountChanged):
        fact = AmountFact(sequence=seq, at=at, amount=data.to_amount, currency=data.currency)
        deal = replace(deal, amounts=(*deal.amounts, fact))
    elif isinstance(data, DealReassigned):
        moved = OwnerFact(sequence=seq, at=at, owner=data.owner)
        deal = replace(deal, reassignments=(*deal.reassignments, moved))
    elif isinstance(data, DealReopened) and reopened:
        # The loss is undone, not forgotten: as of a time between it and the reopening the deal was lost.
        assert deal.closed_at is not None
        undone = ReopenFact(sequence=seq, at=at, lost_at=deal.closed_at, lost_reason=deal.lost_reason or "")
        visits = (*visits, StageVisit(stage=data.stage, entered_at=at))
        deal = replace(
            deal, visits=visits, outcome=None, closed_at=None, lost_reason=None, reopens=(*deal.reopens, undone)
        )
    elif isinstance(data, DealWon | DealLost):
        # Closed in another stage than the current one: the deal reached that stage at the close, for no time.
        visits = _close_last(visits, at)
        if data.stage != current:
            visits = (*visits, StageVisit(stage=data.stage, entered_at=at, left_at=at))
        if isinstance(data, DealWon):
            deal = replace(
                deal, visits=visits, outcome="won", closed_at=at, won_amount=data.amount, won_currency=data.currency
            )
        else:
            deal = replace(deal, visits=visits, outcome="lost", closed_at=at, lost_reason=data.reason)
    else:
        return
    state.deals[deal_id] = replace(deal, last_at=at, version=seq)


def _apply_lead(state: VelocityState, event: StoredEvent) -> None:
    envelope = event.envelope
    data = envelope.data
    seq = event.sequence
    lead_id = envelope.aggregate_id
    lead = state.leads.get(lead_id)
    if lead is None:
        if isinstance(data, LeadCaptured):
            at = envelope.occurred_at
            state.leads[lead_id] = LeadFacts(
                lead_id=lead_id,
                source=lead_source(data, envelope.source),
                campaign=data.utm_campaign,
                captured_at=at,
                last_at=at,
                version=seq,
            )
        return
    if seq <= lead.version:
        return
    at = max(envelope.occurred_at, lead.last_at)
    replace = msgspec.structs.replace
    if isinstance(data, LeadAssigned):
        lead = replace(lead, owners=(*lead.owners, OwnerFact(sequence=seq, at=at, owner=data.owner)))
    elif isinstance(data, LeadQualified) and lead.qualified_at is None:
        lead = replace(lead, qualified_at=at)
    elif isinstance(data, LeadDisqualified) and lead.disqualified_at is None:
        lead = replace(lead, disqualified_at=at, disqualified_reason=data.reason)
    else:
        return
    state.leads[lead_id] = replace(lead, last_at=at, version=seq)


# --- as of a past instant ------------------------------------------------------------------------------------


def deal_at(deal: DealFacts, as_of: dt.datetime) -> DealFacts | None:
    """The deal as known at ``as_of``: only facts with business time <= ``as_of`` (None if not yet opened)."""
    if deal.opened_at > as_of:
        return None
    if deal.last_at <= as_of:
        return deal
    visits = tuple(
        v if v.left_at is None or v.left_at <= as_of else msgspec.structs.replace(v, left_at=None)
        for v in deal.visits
        if v.entered_at <= as_of
    )
    amounts = tuple(a for a in deal.amounts if a.at <= as_of)
    closed = deal.closed_at is not None and deal.closed_at <= as_of
    reopens = tuple(r for r in deal.reopens if r.at <= as_of)
    reassignments = tuple(o for o in deal.reassignments if o.at <= as_of)
    undone = next((r for r in deal.reopens if r.lost_at <= as_of < r.at), None)
    if undone is not None:
        # Lost then, and reopened only later.
        return msgspec.structs.replace(
            deal,
            visits=visits,
            amounts=amounts,
            reopens=reopens,
            reassignments=reassignments,
            outcome="lost",
            closed_at=undone.lost_at,
            won_amount=None,
            won_currency=None,
            lost_reason=undone.lost_reason,
        )
    return msgspec.structs.replace(
        deal,
        visits=visits,
        amounts=amounts,
        reopens=reopens,
        reassignments=reassignments,
        outcome=deal.outcome if closed else None,
        closed_at=deal.closed_at if closed else None,
        won_amount=deal.won_amount if closed else None,
        won_currency=deal.won_currency if closed else None,
        lost_reason=deal.lost_reason if closed else None,
    )


def lead_at(lead: LeadFacts, as_of: dt.datetime) -> LeadFacts | None:
    """The lead as known at ``as_of`` (None if not yet captured)."""
    if lead.captured_at > as_of:
        return None
    if lead.last_at <= as_of:
        return lead
    disqualified = lead.disqualified_at is not None and lead.disqualified_at <= as_of
    return msgspec.structs.replace(
        lead,
        qualified_at=lead.qualified_at if lead.qualified_at is not None and lead.qualified_at <= as_of else None,
        disqualified_at=lead.disqualified_at if disqualified else None,
        disqualified_reason=lead.disqualified_reason if disqualified else None,
        owners=tuple(o for o in lead.owners if o.at <= as_of),
    )


def pipeline_at(versions: Sequence[PipelineVersion], as_of: dt.datetime) -> PipelineVersion | None:
    """The definition in force at ``as_of``: of those defined at or before it (business time), the one defined
    last, then the latest in log order. An imported history's definitions weigh its deals with the stages in
    force then, whatever order they were appended in."""
    known = [v for v in versions if v.defined_at <= as_of]
    return max(known, key=lambda v: (v.defined_at, v.sequence)) if known else None


def current_amount(deal: DealFacts) -> AmountFact:
    """The last known amount and currency."""
    return deal.amounts[-1]


def deal_owner(deal: DealFacts) -> str | None:
    """The deal's owner: the last reassignment's, else the opening one (cut ``deal_at`` first for a moment)."""
    return deal.reassignments[-1].owner if deal.reassignments else deal.owner


def lead_owner(lead: LeadFacts) -> str | None:
    return lead.owners[-1].owner if lead.owners else None
