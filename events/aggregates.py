"""Aggregate state folded from an aggregate's own events, and the decisions commands make on it.

Decisions are pure: given the current state and a request, they return the events to append or raise
``Rejected``. The caller appends with the version the state was folded at, so a decision made on stale
state never lands.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

import msgspec

from events.envelope import Envelope
from events.types import (
    CORRECTABLE,
    AlertEscalated,
    AlertRaised,
    DealAmountChanged,
    DealField,
    DealLost,
    DealOpened,
    DealReassigned,
    DealReopened,
    DealStageChanged,
    DealUpdated,
    DealWon,
    LeadAssigned,
    LeadCaptured,
    LeadConverted,
    LeadCorrected,
    LeadDetailsFetched,
    LeadDisqualified,
    LeadErased,
    LeadMerged,
    LeadQualified,
    PipelineDefined,
    StageDefinition,
    TaskCompleted,
    TaskScheduled,
    TouchpointLogged,
    UserCreated,
    UserDeactivated,
    UserPasswordSet,
    UserReactivated,
    UserRole,
    UserRoleChanged,
    lead_source,
)


class Rejected(Exception):
    """A command the current state does not allow: 409 for a state conflict, 422 for a bad value, 404 missing."""

    def __init__(self, field: str, reason: str, status: int = 409) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason
        self.status = status


@dataclass(slots=True)
class Activity:
    """What leads and deals share: touchpoints and follow-up tasks."""

    exists: bool = False
    open_tasks: set[str] = field(default_factory=set)
    done_tasks: set[str] = field(default_factory=set)
    touchpoints: set[str] = field(default_factory=set)

    def apply_activity(self, data: object) -> None:
        match data:
            case TouchpointLogged(touchpoint_id=tid):
                self.touchpoints.add(tid)
            case TaskScheduled(task_id=tid):
                self.open_tasks.add(tid)
            case TaskCompleted(task_id=tid):
                self.open_tasks.discard(tid)
                self.done_tasks.add(tid)


@dataclass(slots=True)
class LeadState(Activity):
    status: Literal["open", "qualified", "disqualified"] = "open"
    owner: str | None = None
    source: str | None = None
    erased: bool = False
    details_fetched: bool = False
    merged_into: str | None = None
    converted: LeadConverted | None = None


@dataclass(slots=True)
class DealState(Activity):
    status: Literal["open", "won", "lost"] = "open"
    pipeline_id: str = ""
    stage: str = ""
    amount: Decimal = Decimal(0)
    currency: str = ""
    owner: str | None = None
    lost_stage: str = ""
    lost_reason: str = ""


@dataclass(slots=True)
class PipelineState:
    exists: bool = False
    name: str = ""
    stages: list[StageDefinition] = field(default_factory=list)

    def has_stage(self, stage: str) -> bool:
        return any(s.id == stage for s in self.stages)


@dataclass(slots=True)
class AlertState:
    raised: bool = False
    escalated: bool = False


def fold_lead(history: Iterable[Envelope]) -> LeadState:
    state = LeadState()
    for envelope in history:
        match envelope.data:
            case LeadCaptured():
                state.exists = True
                state.source = lead_source(envelope.data, envelope.source)
            case LeadAssigned(owner=owner):
                state.owner = owner
            case LeadDetailsFetched():
                state.details_fetched = True
            case LeadQualified():
                state.status = "qualified"
            case LeadDisqualified():
                state.status = "disqualified"
            case LeadErased():
                state.erased = True
            case LeadMerged(into=into):
                state.merged_into = into
            case LeadConverted() as converted:
                state.converted = converted
            case other:
                state.apply_activity(other)
    return state


def fold_deal(history: Iterable[Envelope]) -> DealState:
    state = DealState()
    for envelope in history:
        match envelope.data:
            case DealOpened() as opened:
                state.exists = True
                state.pipeline_id, state.stage = opened.pipeline_id, opened.stage
                state.amount, state.currency, state.owner = opened.amount, opened.currency, opened.owner
            case DealStageChanged(to_stage=stage):
                state.stage = stage
            case DealAmountChanged(to_amount=amount, currency=currency):
                state.amount, state.currency = amount, currency
            case DealWon():
                state.status = "won"
            case DealLost(stage=stage, reason=reason):
                state.status, state.lost_stage, state.lost_reason = "lost", stage, reason
            case DealReassigned(owner=owner):
                state.owner = owner
            case DealReopened(stage=stage):
                state.status, state.stage = "open", stage
            case other:
                state.apply_activity(other)
    return state


def fold_pipeline(history: Iterable[Envelope]) -> PipelineState:
    state = PipelineState()
    for envelope in history:
        if isinstance(envelope.data, PipelineDefined):
            state.exists, state.name, state.stages = True, envelope.data.name, list(envelope.data.stages)
    return state


def fold_alert(history: Iterable[Envelope]) -> AlertState:
    state = AlertState()
    for envelope in history:
        match envelope.data:
            case AlertRaised():
                state.raised = True
            case AlertEscalated():
                state.escalated = True
    return state


def _require_lead(state: LeadState) -> None:
    if not state.exists:
        raise Rejected("lead_id", "no such lead", 404)


def _require_open_deal(state: DealState) -> None:
    if not state.exists:
        raise Rejected("deal_id", "no such deal", 404)
    if state.status != "open":
        raise Rejected("status", f"the deal is {state.status}; closed deals cannot change")


def assign_lead(state: LeadState, owner: str) -> LeadAssigned:
    _require_lead(state)
    return LeadAssigned(owner=owner, previous_owner=state.owner, reason="manual")


def route_lead(state: LeadState, owner: str) -> LeadAssigned:
    """The owner routing rules chose, only for a lead nobody owns yet: a manual assignment always wins."""
    _require_lead(state)
    if state.owner is not None:
        raise Rejected("owner", f"the lead is already assigned to {state.owner!r}")
    return LeadAssigned(owner=owner, reason="rule")


def record_details(state: LeadState, event: LeadDetailsFetched) -> LeadDetailsFetched:
    """A source's answer for a lead it announced with ids only: once, and never for an erased lead."""
    _require_lead(state)
    if state.erased:
        raise Rejected("lead_id", "the lead's personal data is erased: nothing about them can be kept", 409)
    if state.details_fetched:
        raise Rejected("lead_id", "the lead's details are already fetched")
    return event


def qualify_lead(state: LeadState, event: LeadQualified) -> LeadQualified:
    _require_lead(state)
    if state.status != "open":
        raise Rejected("status", f"the lead is already {state.status}")
    return event


def erase_lead(state: LeadState, event: LeadErased) -> LeadErased:
    _require_lead(state)
    if state.erased:
        raise Rejected("lead_id", "the lead's personal data is already erased")
    return event


def disqualify_lead(state: LeadState, event: LeadDisqualified) -> LeadDisqualified:
    _require_lead(state)
    if state.status == "disqualified":
        raise Rejected("status", "the lead is already disqualified")
    return event


def _require_exists(state: Activity) -> None:
    if not state.exists:
        raise Rejected("id", "no such lead or deal", 404)


def log_touchpoint(state: Activity, event: TouchpointLogged) -> TouchpointLogged:
    _require_exists(state)
    if event.touchpoint_id in state.touchpoints:
        raise Rejected("touchpoint_id", "a touchpoint with this id is already logged")
    return event


def schedule_task(state: Activity, event: TaskScheduled) -> TaskScheduled:
    _require_exists(state)
    if event.task_id in state.open_tasks or event.task_id in state.done_tasks:
        raise Rejected("task_id", "a task with this id already exists")
    return event


def complete_task(state: Activity, event: TaskCompleted) -> TaskCompleted:
    _require_exists(state)
    if event.task_id in state.done_tasks:
        raise Rejected("task_id", "the task is already completed")
    if event.task_id not in state.open_tasks:
        raise Rejected("task_id", "no such task", 404)
    return event


def open_deal(state: DealState, pipeline: PipelineState, event: DealOpened) -> DealOpened:
    if state.exists:
        raise Rejected("deal_id", "a deal with this id already exists")
    if not pipeline.exists:
        raise Rejected("pipeline_id", f"no pipeline {event.pipeline_id!r}", 422)
    if not pipeline.has_stage(event.stage):
        raise Rejected("stage", f"pipeline {event.pipeline_id!r} has no stage {event.stage!r}", 422)
    return event


def move_stage(state: DealState, pipeline: PipelineState, to_stage: str) -> DealStageChanged:
    _require_open_deal(state)
    if not pipeline.has_stage(to_stage):
        raise Rejected("to_stage", f"pipeline {state.pipeline_id!r} has no stage {to_stage!r}", 422)
    if to_stage == state.stage:
        raise Rejected("to_stage", f"the deal is already in stage {to_stage!r}", 422)
    return DealStageChanged(from_stage=state.stage, to_stage=to_stage)


def change_amount(state: DealState, amount: Decimal, currency: str | None) -> DealAmountChanged:
    _require_open_deal(state)
    return DealAmountChanged(from_amount=state.amount, to_amount=amount, currency=currency or state.currency)


def win_deal(state: DealState, amount: Decimal | None) -> DealWon:
    _require_open_deal(state)
    return DealWon(stage=state.stage, amount=state.amount if amount is None else amount, currency=state.currency)


def lose_deal(state: DealState, reason: str) -> DealLost:
    _require_open_deal(state)
    return DealLost(stage=state.stage, reason=reason)


def reassign_deal(state: DealState, owner: str) -> DealReassigned:
    """Hand an open deal to another rep (its own event: SLA clocks and notifications follow the owner)."""
    _require_open_deal(state)
    if owner == state.owner:
        raise Rejected("owner", f"the deal is already owned by {owner!r}", 422)
    return DealReassigned(owner=owner, previous_owner=state.owner)


def update_deal(state: DealState, event: DealUpdated) -> DealUpdated:
    """Correct an open deal's name, expected close date or next step; the name cannot be cleared."""
    _require_open_deal(state)
    if "name" in event.changed and event.name is None:
        raise Rejected("name", "a deal keeps a name: it cannot be cleared", 422)
    return event


def reopen_deal(state: DealState, pipeline: PipelineState, stage: str | None) -> DealReopened:
    """A lost deal back in play, in ``stage`` (default: the stage it was lost in). A won deal stays won."""
    if not state.exists:
        raise Rejected("deal_id", "no such deal", 404)
    if state.status != "lost":
        raise Rejected("status", f"the deal is {state.status}; only a lost deal can be reopened")
    to_stage = stage or state.lost_stage
    if not pipeline.has_stage(to_stage):
        raise Rejected("stage", f"pipeline {state.pipeline_id!r} has no stage {to_stage!r}", 422)
    return DealReopened(stage=to_stage, lost_stage=state.lost_stage, lost_reason=state.lost_reason)


DEAL_FIELDS: tuple[DealField, ...] = ("name", "expected_close_date", "next_step")


def define_pipeline(event: PipelineDefined) -> PipelineDefined:
    ids = [s.id for s in event.stages]
    if len(set(ids)) != len(ids):
        raise Rejected("stages", "stage ids must be unique", 422)
    return event


def raise_alert(state: AlertState, event: AlertRaised) -> AlertRaised:
    """One breach raises one alert: only onto an alert with no events yet."""
    if state.raised or state.escalated:
        raise Rejected("alert_id", "the alert is already raised")
    return event


def escalate_alert(state: AlertState, manager: str, rep: str | None) -> AlertEscalated:
    """An unanswered alert goes to the rep's manager once: only onto an alert holding just its raise."""
    if not state.raised:
        raise Rejected("alert_id", "no such alert", 404)
    if state.escalated:
        raise Rejected("alert_id", "the alert is already escalated")
    return AlertEscalated(manager=manager, rep=rep)


def _require_live_lead(state: LeadState, field: str = "lead_id") -> None:
    """A lead that exists, is not erased and was not merged into another."""
    if not state.exists:
        raise Rejected(field, "no such lead", 404)
    if state.erased:
        raise Rejected(field, "the lead's personal data is erased", 409)
    if state.merged_into is not None:
        raise Rejected(field, f"the lead was merged into {state.merged_into!r}", 409)


def lead_profile(history: Iterable[Envelope]) -> dict[str, object]:
    """The correctable fields of a lead as its history, opened with the lead's key, gives them: the capture, the
    fields a source's API answered, then each correction."""
    profile: dict[str, object] = {}
    for envelope in history:
        data = envelope.data
        if isinstance(data, LeadCaptured):
            profile = {f: getattr(data, f) for f in CORRECTABLE}
        elif isinstance(data, LeadDetailsFetched):
            profile |= {f: v for f in CORRECTABLE if (v := getattr(data, f, None)) is not None}
        elif isinstance(data, LeadCorrected):
            profile |= {f: getattr(data, f) for f in data.fields}
    return profile


def correct_lead(state: LeadState, event: LeadCorrected, current: Mapping[str, object] | None = None) -> LeadCorrected:
    """A correction of a live lead's profile (an erased lead has nothing left to correct), listing only the fields
    that change from ``current`` (the lead's profile, when the caller could open it)."""
    _require_live_lead(state)
    if current is None:
        return event
    changed = tuple(f for f in event.fields if getattr(event, f) != current.get(f))
    if not changed:
        raise Rejected("body", "every field given already holds that value: nothing to correct", 422)
    kept = {f: None for f in event.fields if f not in changed}
    return msgspec.structs.replace(event, fields=changed, **kept)


def merge_leads(absorbed: LeadState, survivor: LeadState, absorbed_id: str, into: str) -> LeadMerged:
    """Merge a duplicate into the lead that survives: two distinct live leads."""
    if absorbed_id == into:
        raise Rejected("into", "a lead cannot be merged into itself", 422)
    _require_live_lead(absorbed)
    _require_live_lead(survivor, "into")
    return LeadMerged(into=into)


@dataclass(slots=True)
class UserState:
    """A user as their events left them; ``password_set``: a password was set at least once."""

    exists: bool = False
    role: UserRole = "rep"
    team: str | None = None
    active: bool = False
    password_set: bool = False


def fold_user(history: Iterable[Envelope]) -> UserState:
    state = UserState()
    for envelope in history:
        match envelope.data:
            case UserCreated(role=role, team=team):
                state.exists, state.active, state.role, state.team = True, True, role, team
            case UserRoleChanged(role=role, team=team):
                state.role, state.team = role, team
            case UserDeactivated():
                state.active = False
            case UserReactivated():
                state.active = True
            case UserPasswordSet():
                state.password_set = True
    return state


def _require_user(state: UserState) -> None:
    if not state.exists:
        raise Rejected("user_id", "no such user", 404)


def create_user(state: UserState, event: UserCreated) -> UserCreated:
    if state.exists:
        raise Rejected("username", "a user with this name already exists")
    return event


def change_role(state: UserState, role: UserRole, team: str | None) -> UserRoleChanged:
    _require_user(state)
    if (role, team) == (state.role, state.team):
        raise Rejected("role", f"the user already has role {role!r} and team {team!r}", 422)
    return UserRoleChanged(role=role, team=team, previous_role=state.role)


def deactivate_user(state: UserState, reason: str | None) -> UserDeactivated:
    _require_user(state)
    if not state.active:
        raise Rejected("active", "the user is already deactivated")
    return UserDeactivated(reason=reason)


def reactivate_user(state: UserState) -> UserReactivated:
    _require_user(state)
    if state.active:
        raise Rejected("active", "the user is already active")
    return UserReactivated()


def set_password(state: UserState, by: Literal["admin", "self"]) -> UserPasswordSet:
    _require_user(state)
    if not state.active:
        raise Rejected("user_id", "the user is deactivated: reactivate them first")
    return UserPasswordSet(by=by)
