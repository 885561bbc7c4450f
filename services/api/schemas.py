"""Request bodies of the command endpoints. Field constraints come from the event types; ids are checked by the one
id check (``events.ids.check_id``)."""

from __future__ import annotations

import datetime as dt
import functools
from decimal import Decimal
from typing import Annotated

import msgspec

from events.ids import ID_MAX_LENGTH, check_id
from events.types import (
    ContactRole,
    CountryCode,
    CurrencyCode,
    Direction,
    Domain,
    Email,
    LongText,
    Phone,
    ShortText,
    Stages,
    TouchpointKind,
    check_amounts,
)

Id = Annotated[
    str, msgspec.Meta(description=f"an id: 1 to {ID_MAX_LENGTH} letters, digits, '-' or '_' (checked by check_id)")
]
"""A body field that names a lead, deal, pipeline, stage, task or touchpoint."""


@functools.cache
def id_fields(body: type[msgspec.Struct]) -> tuple[str, ...]:
    """The fields of a body declared as ``Id``: each goes through the id check when the body is decoded."""
    return tuple(f.name for f in msgspec.structs.fields(body) if f.type in (Id, Id | None))


class Body(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Every command may carry its business time; it defaults to the moment the request arrives."""

    occurred_at: dt.datetime | None = None

    def __post_init__(self) -> None:
        check_amounts(self)
        for name in id_fields(type(self)):
            if (value := getattr(self, name)) is not None:
                check_id(value, name)


class AssignLead(Body, frozen=True):
    owner: ShortText


class LogTouchpoint(Body, frozen=True):
    kind: TouchpointKind
    direction: Direction
    touchpoint_id: Id | None = None
    outcome: ShortText | None = None
    subject: ShortText | None = None
    notes: LongText | None = None
    duration_seconds: Annotated[int, msgspec.Meta(ge=0, le=86_400)] | None = None


class QualifyLead(Body, frozen=True):
    reason: LongText | None = None
    score: float | None = None


class DisqualifyLead(Body, frozen=True):
    reason: ShortText


class EraseLead(Body, frozen=True):
    reason: ShortText | None = None


class OpenDeal(Body, frozen=True):
    name: ShortText
    pipeline_id: Id
    amount: Decimal
    currency: CurrencyCode
    deal_id: Id | None = None
    stage: Id | None = None
    owner: ShortText | None = None
    expected_close_date: dt.date | None = None
    lead_id: Id | None = None


class MoveStage(Body, frozen=True):
    to_stage: Id


class ChangeAmount(Body, frozen=True):
    amount: Decimal
    currency: CurrencyCode | None = None


class WinDeal(Body, frozen=True):
    amount: Decimal | None = None


class LoseDeal(Body, frozen=True):
    reason: ShortText


class ScheduleTask(Body, frozen=True):
    title: ShortText
    due_at: dt.datetime
    task_id: Id | None = None
    owner: ShortText | None = None


class CompleteTask(Body, frozen=True):
    outcome: ShortText | None = None


class DefinePipeline(Body, frozen=True):
    name: ShortText
    stages: Stages

    def __post_init__(self) -> None:
        super().__post_init__()
        for n, stage in enumerate(self.stages):
            check_id(stage.id, f"stages.{n}.id")


class CorrectLead(Body, frozen=True):
    """The fields to correct: each one given (``null`` clears it) is listed as changed; those left out stay."""

    email: Email | msgspec.UnsetType | None = msgspec.UNSET
    phone: Phone | msgspec.UnsetType | None = msgspec.UNSET
    first_name: ShortText | msgspec.UnsetType | None = msgspec.UNSET
    last_name: ShortText | msgspec.UnsetType | None = msgspec.UNSET
    full_name: ShortText | msgspec.UnsetType | None = msgspec.UNSET
    company: ShortText | msgspec.UnsetType | None = msgspec.UNSET
    job_title: ShortText | msgspec.UnsetType | None = msgspec.UNSET
    country: CountryCode | msgspec.UnsetType | None = msgspec.UNSET


class MergeLead(Body, frozen=True):
    into: Id


class CreateOrganisation(Body, frozen=True):
    name: ShortText
    organisation_id: Id | None = None
    domain: Domain | None = None
    country: CountryCode | None = None


class CreateContact(Body, frozen=True):
    name: ShortText
    contact_id: Id | None = None
    email: Email | None = None
    phone: Phone | None = None
    job_title: ShortText | None = None
    organisation_id: Id | None = None


class LinkContact(Body, frozen=True):
    contact_id: Id
    role: ContactRole


class EraseContact(Body, frozen=True):
    reason: ShortText | None = None


class ConvertLead(Body, frozen=True):
    """The deal to open and, optionally, what to use instead of the lead's own fields (or an existing
    ``organisation_id`` / ``contact_id`` to link)."""

    pipeline_id: Id
    amount: Decimal
    currency: CurrencyCode
    stage: Id | None = None
    deal_name: ShortText | None = None
    owner: ShortText | None = None
    expected_close_date: dt.date | None = None
    role: ContactRole = "champion"
    organisation_id: Id | None = None
    organisation_name: ShortText | None = None
    domain: Domain | None = None
    country: CountryCode | None = None
    contact_id: Id | None = None
    name: ShortText | None = None
    email: Email | None = None
    phone: Phone | None = None
    job_title: ShortText | None = None


class PatchDeal(Body, frozen=True):
    """The fields to change; a field left out stays as it is, ``null`` clears the expected close date or the
    next step. The owner changes alone (its own event, which the SLA clocks and notifications follow)."""

    owner: ShortText | msgspec.UnsetType = msgspec.UNSET
    name: ShortText | msgspec.UnsetType = msgspec.UNSET
    expected_close_date: dt.date | msgspec.UnsetType | None = msgspec.UNSET
    next_step: ShortText | msgspec.UnsetType | None = msgspec.UNSET


class ReopenDeal(Body, frozen=True):
    stage: Id | None = None
