"""Commands: what an entry point (HTTP, the NATS intake, an actor, the CLI, the benchmark) asks the log to record.

Each is checked for shape by its entry point before it is built, and decided on the aggregate's state by its
one handler in ``events/handlers.py``. ``occurred_at`` is the business time (the request's time when None);
``if_match`` pins the aggregate version the caller saw.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Literal

import msgspec

from events.envelope import RawPayload
from events.types import (
    AlertRaised,
    ContactRole,
    DealField,
    LeadCaptured,
    LeadCorrected,
    LeadDetailsFetched,
    StageDefinition,
    TaskScheduled,
    TouchpointLogged,
    UserRole,
)

Target = Literal["lead", "deal"]
"""What touchpoints and tasks are logged on."""


class Command(msgspec.Struct, frozen=True, kw_only=True):
    occurred_at: dt.datetime | None = None
    if_match: int | None = None


class NewLead(msgspec.Struct, frozen=True):
    """One lead to capture: its id (derived from the source's own id where it has one) and what came in."""

    lead_id: str
    lead: LeadCaptured
    occurred_at: dt.datetime
    raw: RawPayload | None = None


class CaptureLeads(Command, frozen=True, kw_only=True):
    """Capture leads together; a lead that already exists answers with its first capture."""

    leads: list[NewLead]


class AssignLead(Command, frozen=True, kw_only=True):
    lead_id: str
    owner: str


class RouteLead(Command, frozen=True, kw_only=True):
    """The owner routing rules chose for a new lead, appended by the routing worker unless someone was first."""

    lead_id: str
    owner: str


class RecordLeadDetails(Command, frozen=True, kw_only=True):
    """What a source's API answered for a lead it announced with ids only (the Meta fetcher): recorded once."""

    lead_id: str
    details: LeadDetailsFetched


class QualifyLead(Command, frozen=True, kw_only=True):
    lead_id: str
    reason: str | None = None
    score: float | None = None


class QualifyOnScore(Command, frozen=True, kw_only=True):
    """A lead whose score crossed the threshold in ``build``'s fold at ``crossed_sequence``: qualified once."""

    lead_id: str
    score: float
    reason: str
    build: str
    crossed_sequence: int


class DisqualifyLead(Command, frozen=True, kw_only=True):
    lead_id: str
    reason: str | None = None


class EraseLead(Command, frozen=True, kw_only=True):
    lead_id: str
    reason: str | None = None


class LogTouchpoint(Command, frozen=True, kw_only=True):
    on: Target
    aggregate_id: str
    touchpoint: TouchpointLogged


class ScheduleTask(Command, frozen=True, kw_only=True):
    on: Target
    aggregate_id: str
    task: TaskScheduled


class CompleteTask(Command, frozen=True, kw_only=True):
    on: Target
    aggregate_id: str
    task_id: str
    outcome: str | None = None


class OpenDeal(Command, frozen=True, kw_only=True):
    """Open a deal; without ``deal_id`` it is derived from the idempotency key (or new), without ``stage`` the
    pipeline's first stage."""

    deal_id: str | None = None
    name: str | None = None
    pipeline_id: str
    stage: str | None = None
    amount: Decimal
    currency: str
    owner: str | None = None
    expected_close_date: dt.date | None = None
    lead_id: str | None = None


class MoveStage(Command, frozen=True, kw_only=True):
    deal_id: str
    to_stage: str


class ChangeAmount(Command, frozen=True, kw_only=True):
    deal_id: str
    amount: Decimal
    currency: str | None = None


class WinDeal(Command, frozen=True, kw_only=True):
    deal_id: str
    amount: Decimal | None = None


class LoseDeal(Command, frozen=True, kw_only=True):
    deal_id: str
    reason: str


class DefinePipeline(Command, frozen=True, kw_only=True):
    pipeline_id: str
    name: str
    stages: list[StageDefinition]


class RaiseAlert(Command, frozen=True, kw_only=True):
    """A timer past its deadline: the alert whose id is the timer's, raised once."""

    alert_id: str
    alert: AlertRaised


class EscalateAlert(Command, frozen=True, kw_only=True):
    alert_id: str
    manager: str
    rep: str | None = None


class CorrectLead(Command, frozen=True, kw_only=True):
    """Correct a lead's profile: ``correction`` lists the changed fields and carries their new values."""

    lead_id: str
    correction: LeadCorrected


class MergeLeads(Command, frozen=True, kw_only=True):
    """Merge lead ``lead_id`` (a duplicate) into lead ``into``, which survives."""

    lead_id: str
    into: str


class CreateUser(Command, frozen=True, kw_only=True):
    """A user named ``username`` (their aggregate id, and the name deals and leads are owned by)."""

    username: str
    role: UserRole
    team: str | None = None


class ChangeUserRole(Command, frozen=True, kw_only=True):
    user_id: str
    role: UserRole
    team: str | None = None


class DeactivateUser(Command, frozen=True, kw_only=True):
    user_id: str
    reason: str | None = None


class ReactivateUser(Command, frozen=True, kw_only=True):
    user_id: str


class RecordPasswordSet(Command, frozen=True, kw_only=True):
    """That a password was set: the hash itself is written by the caller beside the log, never into it."""

    user_id: str
    by: Literal["admin", "self"] = "admin"


class CreateOrganisation(Command, frozen=True, kw_only=True):
    organisation_id: str
    name: str
    domain: str | None = None
    country: str | None = None


class CreateContact(Command, frozen=True, kw_only=True):
    """A contact on its own (not from a lead): its personal fields get a key of its own."""

    contact_id: str
    name: str
    email: str | None = None
    phone: str | None = None
    job_title: str | None = None
    organisation_id: str | None = None


class LinkContact(Command, frozen=True, kw_only=True):
    """Give a contact a role in a deal: a link if it has none there yet, else a role change."""

    contact_id: str
    deal_id: str
    role: ContactRole


class UnlinkContact(Command, frozen=True, kw_only=True):
    contact_id: str
    deal_id: str


class EraseContact(Command, frozen=True, kw_only=True):
    contact_id: str
    reason: str | None = None


class ConvertLead(Command, frozen=True, kw_only=True):
    """Turn a qualified lead into its organisation, contact and deal (see ``events/conversion.py``). The
    organisation's and the contact's fields default to the lead's; ``*_id`` names an existing one to link."""

    lead_id: str
    pipeline_id: str
    amount: Decimal
    currency: str
    stage: str | None = None
    deal_name: str | None = None
    owner: str | None = None
    expected_close_date: dt.date | None = None
    role: ContactRole = "champion"
    organisation_id: str | None = None
    organisation_name: str | None = None
    domain: str | None = None
    country: str | None = None
    contact_id: str | None = None
    name: str | None = None
    email: str | None = None
    phone: str | None = None
    job_title: str | None = None


class ReassignDeal(Command, frozen=True, kw_only=True):
    deal_id: str
    owner: str


class UpdateDeal(Command, frozen=True, kw_only=True):
    """Set the fields ``changed`` names to the values given (None clears one; the name cannot be cleared)."""

    deal_id: str
    changed: tuple[DealField, ...]
    name: str | None = None
    expected_close_date: dt.date | None = None
    next_step: str | None = None


class ReopenDeal(Command, frozen=True, kw_only=True):
    """A lost deal back in play, in ``stage`` (default: the stage it was lost in)."""

    deal_id: str
    stage: str | None = None
