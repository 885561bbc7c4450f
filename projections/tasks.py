"""The tasks fold: every follow-up task on a lead or a deal, with whose it is and when it is due. Pure: no I/O.

A task's owner is the one it was scheduled for, else its lead's or deal's owner, following that owner's changes
(``lead.assigned.v1``, ``deal.reassigned.v1``) while the task names none of its own. Idempotent per event
sequence: an event at or below a row's ``version`` changes nothing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

import msgspec

from events.envelope import StoredEvent
from events.types import (
    DealOpened,
    DealReassigned,
    LeadAssigned,
    LeadCaptured,
    TaskCompleted,
    TaskScheduled,
)
from projections.folding import fold_into

SubjectType = Literal["lead", "deal"]
SEALED_TITLE = "[sealed]"


class TaskSubject(msgspec.Struct, frozen=True, kw_only=True):
    """A lead or deal tasks hang on: its owner, and the lead whose key its text is sealed with (for erasure)."""

    subject_type: SubjectType
    subject_id: str
    owner: str | None
    lead_id: str | None
    version: int


class TaskRow(msgspec.Struct, frozen=True, kw_only=True):
    """One task. ``owner`` is the effective one; ``own_owner`` the one the task named, if any."""

    subject_type: SubjectType
    subject_id: str
    task_id: str
    title: str
    due_at: dt.datetime
    scheduled_at: dt.datetime
    own_owner: str | None
    owner: str | None
    lead_id: str | None
    completed_at: dt.datetime | None = None
    version: int


TaskKey = tuple[str, str, str]
"""(subject type, subject id, task id): a task id is unique within its lead or deal."""


@dataclass
class TasksState:
    subjects: dict[tuple[str, str], TaskSubject] = field(default_factory=dict)
    tasks: dict[TaskKey, TaskRow] = field(default_factory=dict)

    def copy(self) -> TasksState:
        return TasksState(dict(self.subjects), dict(self.tasks))


def apply(state: TasksState, event: StoredEvent) -> TasksState:
    """Fold one event into ``state`` (in place) and return it."""
    envelope = event.envelope
    kind = envelope.aggregate_type
    if kind not in ("lead", "deal"):
        return state
    key = (kind, envelope.aggregate_id)
    subject = state.subjects.get(key)
    if subject is not None and event.sequence <= subject.version:
        return state
    data, seq = envelope.data, event.sequence
    replace = msgspec.structs.replace
    if isinstance(data, LeadCaptured | DealOpened) and subject is None:
        owner = data.owner if isinstance(data, DealOpened) else None
        lead = data.lead_id if isinstance(data, DealOpened) else envelope.aggregate_id
        state.subjects[key] = TaskSubject(subject_type=kind, subject_id=key[1], owner=owner, lead_id=lead, version=seq)
        return state
    if subject is None:
        return state  # nothing to hang it on: a deterministic skip, so a rebuild agrees
    if isinstance(data, LeadAssigned | DealReassigned):
        state.subjects[key] = replace(subject, owner=data.owner, version=seq)
        for task_key, held in list(state.tasks.items()):
            if task_key[:2] == key and held.own_owner is None:
                state.tasks[task_key] = replace(held, owner=data.owner, version=seq)
        return state
    state.subjects[key] = replace(subject, version=seq)
    if isinstance(data, TaskScheduled):
        state.tasks[(kind, key[1], data.task_id)] = TaskRow(
            subject_type=kind,
            subject_id=key[1],
            task_id=data.task_id,
            # The worker reads the title opened with its lead's key; a fold without the vault never sees it.
            title=data.title or SEALED_TITLE,
            due_at=data.due_at,
            scheduled_at=envelope.occurred_at,
            own_owner=data.owner,
            owner=data.owner or subject.owner,
            lead_id=subject.lead_id,
            version=seq,
        )
    elif isinstance(data, TaskCompleted):
        task_key = (kind, key[1], data.task_id)
        task = state.tasks.get(task_key)
        if task is not None and task.completed_at is None:
            state.tasks[task_key] = replace(task, completed_at=envelope.occurred_at, version=seq)
    return state


def fold(events: Iterable[StoredEvent], state: TasksState | None = None) -> TasksState:
    return fold_into(TasksState() if state is None else state, events, apply)
