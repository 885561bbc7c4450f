"""Request bodies of the command endpoints. Field constraints come from the event types."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Annotated

import msgspec

from events.types import (
    CurrencyCode,
    Direction,
    LongText,
    Ref,
    ShortText,
    Stages,
    TouchpointKind,
    check_amounts,
)


class _Body(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Every command may carry its business time; it defaults to the moment the request arrives."""

    occurred_at: dt.datetime | None = None

    def __post_init__(self) -> None:
        check_amounts(self)


class AssignLead(_Body, frozen=True):
    owner: ShortText


class LogTouchpoint(_Body, frozen=True):
    kind: TouchpointKind
    direction: Direction
    touchpoint_id: Ref | None = None
    outcome: ShortText | None = None
    subject: ShortText | None = None
    notes: LongText | None = None
    duration_seconds: Annotated[int, msgspec.Meta(ge=0, le=86_400)] | None = None


class QualifyLead(_Body, frozen=True):
    reason: LongText | None = None
    score: float | None = None


class DisqualifyLead(_Body, frozen=True):
    reason: ShortText


class EraseLead(_Body, frozen=True):
    reason: ShortText | None = None


class OpenDeal(_Body, frozen=True):
    name: ShortText
    pipeline_id: Ref
    amount: Decimal
    currency: CurrencyCode
    deal_id: Ref | None = None
    stage: Ref | None = None
    owner: ShortText | None = None
    expected_close_date: dt.date | None = None
    lead_id: Ref | None = None


class MoveStage(_Body, frozen=True):
    to_stage: Ref


class ChangeAmount(_Body, frozen=True):
    amount: Decimal
    currency: CurrencyCode | None = None


class WinDeal(_Body, frozen=True):
    amount: Decimal | None = None


class LoseDeal(_Body, frozen=True):
    reason: ShortText


class ScheduleTask(_Body, frozen=True):
    title: ShortText
    due_at: dt.datetime
    task_id: Ref | None = None
    owner: ShortText | None = None


class CompleteTask(_Body, frozen=True):
    outcome: ShortText | None = None


class DefinePipeline(_Body, frozen=True):
    name: ShortText
    stages: Stages
