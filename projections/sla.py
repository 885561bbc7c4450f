"""Follow-up SLA timers folded from the log: which clocks run, when each falls due, what met or cancelled it,
and the alerts raised and escalated on them. Pure: no clock is read here.

A timer is created by the event that starts its clock (a capture, a touch, a deal opened or moved, a task
scheduled) with a deadline computed from that event's business time, so a rebuild computes the same
deadlines. The worker raises an ``AlertRaised`` for a pending timer once its deadline has passed; the fold
marks the timer raised when that event comes back from the log. A timer's id is its alert's aggregate id.

What counts as a touch: an outbound call, email, meeting or SMS, or an inbound call or meeting (a
conversation happened). Notes and internal entries do not. A touch after the deadline of a pending timer
does not cancel it: the breach is still raised, and its alert is resolved at once (``met_late``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

import msgspec

from events.envelope import StoredEvent
from events.ids import derived_id
from events.types import (
    AlertEscalated,
    AlertRaised,
    DealLost,
    DealOpened,
    DealReassigned,
    DealReopened,
    DealStageChanged,
    DealWon,
    LeadAssigned,
    LeadCaptured,
    LeadDisqualified,
    PipelineDefined,
    SlaKind,
    TaskCompleted,
    TaskScheduled,
    TouchpointLogged,
)
from projections.folding import fold_into
from projections.sla_rules import Policy, SlaRules

SubjectType = Literal["lead", "deal"]
TimerState = Literal["pending", "met", "cancelled", "raised", "lapsed"]
Resolution = Literal["touched", "met_late", "task_completed", "stage_moved", "closed"]


class Subject(msgspec.Struct, frozen=True, kw_only=True):
    """A lead or deal whose follow-up is measured."""

    subject_type: SubjectType
    subject_id: str
    owner: str | None
    source: str | None
    pipeline_id: str | None = None
    stage: str | None = None
    open: bool = True
    version: int


class Timer(msgspec.Struct, frozen=True, kw_only=True):
    """One SLA clock, and the alert it became if it ran out."""

    timer_id: str
    subject_type: SubjectType
    subject_id: str
    kind: SlaKind
    policy: str
    rep: str | None
    started_at: dt.datetime
    deadline: dt.datetime
    state: TimerState = "pending"
    met_at: dt.datetime | None = None
    task_id: str | None = None
    stage: str | None = None
    escalate_at: dt.datetime | None = None
    raised_at: dt.datetime | None = None
    escalated_to: str | None = None
    escalated_at: dt.datetime | None = None
    resolved_at: dt.datetime | None = None
    resolution: Resolution | None = None
    version: int

    @property
    def due(self) -> bool:
        """Pending and not met in time: raise it once the deadline has passed."""
        return self.state == "pending" and (self.met_at is None or self.met_at > self.deadline)


class Timers(dict[str, Timer]):
    """Timers by id, with each subject's timer ids in the order they first appeared: every event asks for
    its subject's open timers, and scanning all of a batch's timers for each made a batch quadratic."""

    def __init__(self, items: dict[str, Timer] | None = None) -> None:
        super().__init__()
        self.by_subject: dict[tuple[str, str], dict[str, None]] = {}
        for key, value in (items or {}).items():
            self[key] = value

    def __setitem__(self, key: str, value: Timer) -> None:
        super().__setitem__(key, value)
        self.by_subject.setdefault((value.subject_type, value.subject_id), {})[key] = None


@dataclass(slots=True)
class SlaState:
    subjects: dict[tuple[SubjectType, str], Subject] = field(default_factory=dict)
    timers: Timers = field(default_factory=Timers)
    # Stage id -> rotting days, per pipeline (only the latest definition counts).
    pipelines: dict[str, dict[str, int | None]] = field(default_factory=dict)
    pipeline_versions: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.timers, Timers):
            self.timers = Timers(self.timers)

    def copy(self) -> SlaState:
        return SlaState(dict(self.subjects), Timers(self.timers), dict(self.pipelines), dict(self.pipeline_versions))

    def open_timers(self, subject_type: SubjectType, subject_id: str) -> list[Timer]:
        ids = self.timers.by_subject.get((subject_type, subject_id), {})
        return [
            t
            for t in map(self.timers.__getitem__, ids)
            if t.state == "pending"
            or (t.state == "raised" and t.resolved_at is None)
            or (t.state == "lapsed" and t.met_at is None)
        ]


def timer_id(policy: str, subject_type: str, subject_id: str, kind: str, anchor: str) -> str:
    """The timer's (and its alert's) id: the same for the same clock on every replay."""
    return derived_id("sla", policy, subject_type, subject_id, kind, anchor)


def is_touch(data: TouchpointLogged) -> bool:
    if data.kind == "note" or data.direction == "internal":
        return False
    return data.direction == "outbound" or data.kind in ("call", "meeting")


def apply(state: SlaState, event: StoredEvent, rules: SlaRules) -> SlaState:
    """Fold one event into the timers (events at or below a row's version are ignored: replays are no-ops)."""
    envelope = event.envelope
    if envelope.aggregate_type == "pipeline":
        _apply_pipeline(state, event)
    elif envelope.aggregate_type == "alert":
        _apply_alert(state, event)
    elif envelope.aggregate_type in ("lead", "deal"):
        _apply_subject(state, event, rules)
    return state


def fold(events: Iterable[StoredEvent], rules: SlaRules, state: SlaState | None = None) -> SlaState:
    return fold_into(SlaState() if state is None else state, events, lambda s, event: apply(s, event, rules))


def _apply_pipeline(state: SlaState, event: StoredEvent) -> None:
    data = event.envelope.data
    pipeline_id = event.envelope.aggregate_id
    if not isinstance(data, PipelineDefined) or event.sequence <= state.pipeline_versions.get(pipeline_id, 0):
        return
    state.pipelines[pipeline_id] = {s.id: s.rotting_days for s in data.stages}
    state.pipeline_versions[pipeline_id] = event.sequence


def _apply_alert(state: SlaState, event: StoredEvent) -> None:
    timer = state.timers.get(event.envelope.aggregate_id)
    if timer is None or event.sequence <= timer.version:
        return  # a timer another shard owns
    data = event.envelope.data
    seq = event.sequence
    if isinstance(data, AlertRaised) and timer.state != "raised":
        late_met = timer.met_at if timer.met_at is not None and timer.state == "pending" else None
        state.timers[timer.timer_id] = msgspec.structs.replace(
            timer,
            state="raised",
            raised_at=event.envelope.recorded_at,
            resolved_at=late_met,
            resolution="met_late" if late_met else None,
            version=seq,
        )
    elif isinstance(data, AlertEscalated) and timer.escalated_at is None:
        state.timers[timer.timer_id] = msgspec.structs.replace(
            timer, escalated_to=data.manager, escalated_at=event.envelope.occurred_at, version=seq
        )


def _start(
    state: SlaState,
    rules: SlaRules,
    policy: Policy | None,
    subject: Subject,
    kind: SlaKind,
    anchor: str,
    start: dt.datetime,
    deadline: dt.datetime | None,
    event: StoredEvent,
    rep: str | None = None,
    task_id: str | None = None,
) -> None:
    if policy is None:
        return
    seq = event.sequence
    rep = subject.owner if rep is None else rep
    if deadline is None:
        assert policy.within_minutes is not None
        deadline = rules.after(policy, start, policy.within_minutes, rep)
    escalate_at = _escalation(rules, policy, deadline, rep)
    tid = timer_id(policy.name, subject.subject_type, subject.subject_id, kind, anchor)
    horizon = rules.history_horizon_minutes
    # Record time, not a clock: a rebuild finds the same clocks lapsed as the first fold did.
    lapsed = horizon is not None and deadline < event.envelope.recorded_at - dt.timedelta(minutes=horizon)
    state.timers[tid] = Timer(
        timer_id=tid,
        subject_type=subject.subject_type,
        subject_id=subject.subject_id,
        kind=kind,
        policy=policy.name,
        rep=rep,
        started_at=start.astimezone(dt.UTC),
        deadline=deadline.astimezone(dt.UTC),
        task_id=task_id,
        stage=subject.stage if kind == "deal_rotting" else None,
        escalate_at=escalate_at,
        state="lapsed" if lapsed else "pending",
        version=seq,
    )


def _escalation(rules: SlaRules, policy: Policy, deadline: dt.datetime, rep: str | None) -> dt.datetime | None:
    if policy.escalate_after_minutes is None:
        return None
    return rules.after(policy, deadline, policy.escalate_after_minutes, rep)


def _reassign(state: SlaState, rules: SlaRules, timer: Timer, owner: str | None, seq: int) -> None:
    """A pending clock follows its subject's new owner: the rep, and a touch deadline counted again from the
    same start in the new owner's working hours (a task's clock keeps its own owner and due time)."""
    policy = rules.named(timer.policy)
    deadline = timer.deadline
    if timer.kind in ("first_touch", "next_touch") and policy is not None and policy.within_minutes is not None:
        deadline = rules.after(policy, timer.started_at, policy.within_minutes, owner).astimezone(dt.UTC)
    escalate_at = _escalation(rules, policy, deadline, owner) if policy is not None else timer.escalate_at
    state.timers[timer.timer_id] = msgspec.structs.replace(
        timer, rep=owner, deadline=deadline, escalate_at=escalate_at, version=seq
    )


def _meet(state: SlaState, timer: Timer, at: dt.datetime, seq: int, resolution: Resolution) -> None:
    """``at`` answered this clock: in time it is met; late, the breach still stands and its alert resolves."""
    if timer.state == "lapsed":
        # History: met in time it was never breached; late, it stays breached with when it was answered.
        new = msgspec.structs.replace(timer, state="met" if at <= timer.deadline else "lapsed", met_at=at, version=seq)
    elif timer.state == "pending":
        if at <= timer.deadline:
            new = msgspec.structs.replace(timer, state="met", met_at=at, version=seq)
        elif timer.met_at is None:
            new = msgspec.structs.replace(timer, met_at=at, version=seq)
        else:
            return
    elif timer.state == "raised" and timer.resolved_at is None:
        new = msgspec.structs.replace(timer, resolved_at=at, resolution=resolution, version=seq)
    else:
        return
    state.timers[timer.timer_id] = new


def _close(state: SlaState, subject: Subject, at: dt.datetime, seq: int) -> None:
    for timer in state.open_timers(subject.subject_type, subject.subject_id):
        if timer.state == "lapsed":
            continue  # breached long before it closed: it stays breached
        if timer.state == "pending":
            state.timers[timer.timer_id] = msgspec.structs.replace(timer, state="cancelled", met_at=at, version=seq)
        else:
            _meet(state, timer, at, seq, "closed")


def _rotting(state: SlaState, rules: SlaRules, subject: Subject, event: StoredEvent) -> None:
    policy = rules.policy("deal_rotting", "deal", subject.source, subject.pipeline_id)
    days = state.pipelines.get(subject.pipeline_id or "", {}).get(subject.stage or "")
    if policy is None or not days:
        return
    at = event.envelope.occurred_at
    deadline = at + dt.timedelta(days=days)
    _start(state, rules, policy, subject, "deal_rotting", event.envelope.event_id, at, deadline, event)


def _apply_subject(state: SlaState, event: StoredEvent, rules: SlaRules) -> None:
    envelope = event.envelope
    data = envelope.data
    kind: SubjectType = "lead" if envelope.aggregate_type == "lead" else "deal"
    key = (kind, envelope.aggregate_id)
    at = envelope.occurred_at.astimezone(dt.UTC)
    seq = event.sequence
    subject = state.subjects.get(key)
    if subject is not None and seq <= subject.version:
        return
    if isinstance(data, LeadCaptured):
        subject = Subject(subject_type="lead", subject_id=key[1], owner=None, source=envelope.source, version=seq)
        state.subjects[key] = subject
        policy = rules.policy("first_touch", "lead", subject.source, None)
        _start(state, rules, policy, subject, "first_touch", envelope.event_id, at, None, event)
        return
    if isinstance(data, DealOpened):
        subject = Subject(
            subject_type="deal",
            subject_id=key[1],
            owner=data.owner,
            source=data.lead_source or envelope.source,
            pipeline_id=data.pipeline_id,
            stage=data.stage,
            version=seq,
        )
        state.subjects[key] = subject
        policy = rules.policy("next_touch", "deal", subject.source, subject.pipeline_id)
        _start(state, rules, policy, subject, "next_touch", envelope.event_id, at, None, event)
        _rotting(state, rules, subject, event)
        return
    if subject is None:
        return  # activity on a subject captured before this projection's rules existed for it
    subject = msgspec.structs.replace(subject, version=seq)
    state.subjects[key] = subject
    timers = state.open_timers(kind, key[1])
    if isinstance(data, LeadAssigned | DealReassigned):
        state.subjects[key] = subject = msgspec.structs.replace(subject, owner=data.owner)
        for t in timers:
            if t.state == "pending" and t.task_id is None:
                _reassign(state, rules, t, data.owner, seq)
    elif isinstance(data, TouchpointLogged):
        if not is_touch(data):
            return
        for t in timers:
            if t.kind in ("first_touch", "next_touch"):
                _meet(state, t, at, seq, "touched")
        if subject.open:
            policy = rules.policy("next_touch", kind, subject.source, subject.pipeline_id)
            _start(state, rules, policy, subject, "next_touch", envelope.event_id, at, None, event)
    elif isinstance(data, TaskScheduled):
        policy = rules.policy("task_due", kind, subject.source, subject.pipeline_id)
        _start(
            state, rules, policy, subject, "task_due", data.task_id, at, data.due_at, event, data.owner, data.task_id
        )
    elif isinstance(data, TaskCompleted):
        for t in timers:
            if t.kind == "task_due" and t.task_id == data.task_id:
                _meet(state, t, at, seq, "task_completed")
    elif isinstance(data, DealStageChanged):
        state.subjects[key] = subject = msgspec.structs.replace(subject, stage=data.to_stage)
        for t in timers:
            if t.kind == "deal_rotting":
                _meet(state, t, at, seq, "stage_moved")
        _rotting(state, rules, subject, event)
    elif isinstance(data, DealWon | DealLost | LeadDisqualified):
        state.subjects[key] = subject = msgspec.structs.replace(subject, open=False)
        _close(state, subject, at, seq)
    elif isinstance(data, DealReopened) and not subject.open:
        # Back in play: its clocks start again as at an opening, in the stage it reopens in.
        state.subjects[key] = subject = msgspec.structs.replace(subject, open=True, stage=data.stage)
        policy = rules.policy("next_touch", "deal", subject.source, subject.pipeline_id)
        _start(state, rules, policy, subject, "next_touch", envelope.event_id, at, None, event)
        _rotting(state, rules, subject, event)
