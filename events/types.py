"""The event types: what can happen to a lead, a deal or a pipeline, and the alerts raised on them.

One tagged union, versioned tags."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Annotated, Literal, get_args

import msgspec

SHORT_TEXT = 200
LONG_TEXT = 10_000
SEALED_MAX = 4_000_000
"""Ciphertext of everything a lead's source may send (a request is at most a few MiB), base64."""
ShortText = Annotated[str, msgspec.Meta(min_length=1, max_length=SHORT_TEXT)]
LongText = Annotated[str, msgspec.Meta(max_length=LONG_TEXT)]
Email = Annotated[str, msgspec.Meta(max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")]
Phone = Annotated[str, msgspec.Meta(max_length=40, pattern=r"^[0-9+()./ -]{3,40}$")]
CurrencyCode = Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{3}$")]
CountryCode = Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{2}$")]
Money = Decimal
MAX_AMOUNT = Decimal("1e15")
Probability = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
Ref = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
MARKETING_ID = r"^(?=[^A-Za-z]*[A-Za-z])[A-Za-z0-9][A-Za-z0-9_.:\-]{0,99}$"
MarketingId = Annotated[str, msgspec.Meta(max_length=100, pattern=MARKETING_ID)]
"""A marketing source or campaign id (``referral``, ``spring_sale-2026``): letters, digits and ``_.:-`` with at
least one letter, so it cannot hold an e-mail, a name with a blank, a sentence or a phone number, and stays in
clear in the log (see events/personal.py)."""
# Read leniently, written strictly: events in the log must decode forever, whatever limits applied when they were
# written, so entry lengths are checked where new events are made (``attribute_problems``), not on decode.
Attributes = Annotated[dict[str, str], msgspec.Meta(max_length=100)]


def attribute_problems(path: str, value: Mapping[str, object]) -> list[tuple[str, str]]:
    """What a new event's ``campaign`` or ``answers`` may not hold: (field, reason) for each entry over its limit."""
    problems: list[tuple[str, str]] = []
    for key, item in value.items():
        if len(key) > SHORT_TEXT:
            problems.append((path, f"a name is longer than {SHORT_TEXT} characters: {key[:40]!r}..."))
        elif isinstance(item, str) and len(item) > LONG_TEXT:
            problems.append((f"{path}.{key}", f"must be at most {LONG_TEXT} characters, got {len(item)}"))
    return problems


class SealedText(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """An event's free text, encrypted with the key of the person it is about (see events/personal.py).

    ``key_id`` names the key: a lead's id, or ``deal.<id>`` for a deal with no lead; ``key_ref`` the shared
    entry holding a lead's key when it was captured in a batch. The text fields themselves read None."""

    key_id: Annotated[str, msgspec.Meta(min_length=1, max_length=SHORT_TEXT)]
    key_ref: Ref | None = None
    fields: Annotated[tuple[Annotated[str, msgspec.Meta(max_length=40)], ...], msgspec.Meta(max_length=10)] = ()
    box: Annotated[str, msgspec.Meta(max_length=SEALED_MAX)]


TouchpointKind = Literal["call", "email", "meeting", "note", "sms"]
Direction = Literal["inbound", "outbound", "internal"]


def check_amounts(struct: msgspec.Struct) -> None:
    """msgspec has no numeric constraints for Decimal: every amount field is checked here, on decode and build."""
    for name in struct.__struct_fields__:
        value = getattr(struct, name)
        if isinstance(value, Decimal) and not (value.is_finite() and 0 <= value <= MAX_AMOUNT):
            raise ValueError(f"`{name}` must be a finite amount between 0 and {MAX_AMOUNT:f}")


class _Event(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, tag_field="type"):
    """Base of every event; the tag names the type and its version."""

    def __post_init__(self) -> None:
        check_amounts(self)


class LeadCaptured(_Event, frozen=True, tag="lead.captured.v1"):
    """A lead arrived from a form, an ad platform or the API. Personal fields as the source gave them."""

    email: Email | None = None
    phone: Phone | None = None
    first_name: ShortText | None = None
    last_name: ShortText | None = None
    full_name: ShortText | None = None
    company: ShortText | None = None
    job_title: ShortText | None = None
    country: CountryCode | None = None
    message: LongText | None = None
    source_ref: Ref | None = None
    form_id: Ref | None = None
    campaign: Attributes = {}
    answers: Attributes = {}
    # The marketing source the capture named (``referral``, ``event``, ``partner``, or its ``utm_source``),
    # lower-cased, and its ``utm_campaign``; the channel it came in by is the envelope's ``source``.
    source: MarketingId | None = None
    utm_campaign: MarketingId | None = None
    # Everything the source sent travels encrypted with the lead's own key (see events/personal.py): ``sealed``
    # holds it, and the fields above read None in the log, but for the clear allow-list (``country``). Events
    # written before 2026-11-23 sealed only the contact fields, and kept the e-mail's domain in clear.
    sealed: Annotated[str, msgspec.Meta(max_length=SEALED_MAX)] | None = None
    email_domain: ShortText | None = None
    has_phone: bool | None = None
    # The lead-keys entry holding this lead's key when several leads were captured together (one write for all
    # their keys); None: the entry named by the lead's own id.
    key_ref: Ref | None = None


_FROM_CAMPAIGN: Mapping[str, tuple[str, ...]] = {"source": ("source", "utm_source"), "utm_campaign": ("utm_campaign",)}


def with_marketing_ids(captured: LeadCaptured) -> LeadCaptured:
    """A new capture with its marketing ``source`` (lower-cased) and ``utm_campaign``, taken from ``campaign``'s
    ``source``/``utm_source`` and ``utm_campaign`` when the capture did not name them."""
    # Hidden fields and UTM parameters arrive in ``campaign``. One that is no marketing id (a sentence, an e-mail)
    # stays only there, sealed: a lead is never refused for a tracking parameter.
    named: dict[str, str] = {}
    for name, keys in _FROM_CAMPAIGN.items():
        if getattr(captured, name) is None:
            found = (captured.campaign.get(k) for k in keys)
            if value := next((v for v in found if v is not None and re.fullmatch(MARKETING_ID, v)), None):
                named[name] = value
    source = named.get("source", captured.source)
    if source is not None:
        named["source"] = source.lower()
    return msgspec.structs.replace(captured, **named) if named else captured


def lead_source(captured: LeadCaptured, channel: str) -> str:
    """The source metrics and rules group a lead by: the marketing source it named, else its channel."""
    return captured.source or channel


class LeadDetailsFetched(_Event, frozen=True, tag="lead.details_fetched.v1"):
    """What a source's API answered for a lead it announced with ids only (Meta Lead Ads' ``GET /{leadgen_id}``).

    The personal fields are sealed with the lead's key like a capture's (``sealed``; they read None in the log)
    and read ``[erased]`` once the key is gone; folds take them as if the capture had carried them."""

    provider: ShortText
    email: Email | None = None
    phone: Phone | None = None
    first_name: ShortText | None = None
    last_name: ShortText | None = None
    full_name: ShortText | None = None
    company: ShortText | None = None
    job_title: ShortText | None = None
    answers: Attributes = {}
    sealed: SealedText | None = None


class LeadAssigned(_Event, frozen=True, tag="lead.assigned.v1"):
    owner: ShortText
    previous_owner: ShortText | None = None
    reason: Literal["manual", "rule"] = "manual"


class TouchpointLogged(_Event, frozen=True, tag="touchpoint.logged.v1"):
    """A call, email, meeting, note or SMS with a lead or on a deal."""

    touchpoint_id: Ref
    kind: TouchpointKind
    direction: Direction
    outcome: ShortText | None = None
    subject: ShortText | None = None
    notes: LongText | None = None
    duration_seconds: Annotated[int, msgspec.Meta(ge=0, le=86_400)] | None = None
    sealed: SealedText | None = None


class LeadQualified(_Event, frozen=True, tag="lead.qualified.v1"):
    reason: LongText | None = None
    score: float | None = None
    sealed: SealedText | None = None


class LeadErased(_Event, frozen=True, tag="lead.erased.v1"):
    """The lead's personal data was erased on request: its key is destroyed, so its sealed fields are gone."""

    reason: ShortText | None = None


class LeadDisqualified(_Event, frozen=True, tag="lead.disqualified.v1"):
    reason: ShortText | None = None  # None once sealed
    sealed: SealedText | None = None


class DealOpened(_Event, frozen=True, kw_only=True, tag="deal.opened.v1"):
    """A deal entered a pipeline, from a lead or on its own."""

    name: ShortText | None = None  # None once sealed
    pipeline_id: Ref
    stage: Ref
    amount: Money
    currency: CurrencyCode
    owner: ShortText | None = None
    expected_close_date: dt.date | None = None
    lead_id: Ref | None = None
    lead_source: ShortText | None = None
    sealed: SealedText | None = None


class DealStageChanged(_Event, frozen=True, tag="deal.stage_changed.v1"):
    from_stage: Ref
    to_stage: Ref


class DealAmountChanged(_Event, frozen=True, tag="deal.amount_changed.v1"):
    from_amount: Money
    to_amount: Money
    currency: CurrencyCode


class DealWon(_Event, frozen=True, tag="deal.won.v1"):
    stage: Ref
    amount: Money
    currency: CurrencyCode


class DealLost(_Event, frozen=True, tag="deal.lost.v1"):
    stage: Ref
    reason: ShortText


DealField = Literal["name", "expected_close_date", "next_step"]
"""What ``deal.updated.v1`` may change; the owner has its own event (``deal.reassigned.v1``)."""


class DealUpdated(_Event, frozen=True, kw_only=True, tag="deal.updated.v1"):
    """A deal's details corrected: ``changed`` names the fields this event sets, and a named field at None is
    cleared (the name cannot be). ``name`` and ``next_step`` are free text, sealed like the name at opening."""

    changed: Annotated[tuple[DealField, ...], msgspec.Meta(min_length=1, max_length=3)]
    name: ShortText | None = None  # None once sealed
    expected_close_date: dt.date | None = None
    next_step: ShortText | None = None  # None once sealed
    sealed: SealedText | None = None


class DealReassigned(_Event, frozen=True, kw_only=True, tag="deal.reassigned.v1"):
    """A deal handed to another rep: its own event, because the SLA clocks and notifications follow the owner."""

    owner: ShortText
    previous_owner: ShortText | None = None


class DealReopened(_Event, frozen=True, kw_only=True, tag="deal.reopened.v1"):
    """A lost deal back in play in ``stage``. The loss stays in the history; a figure counts the deal lost only
    while it is lost, at its latest loss (see projections/velocity.py)."""

    stage: Ref
    lost_stage: Ref
    lost_reason: ShortText


class TaskScheduled(_Event, frozen=True, kw_only=True, tag="task.scheduled.v1"):
    """A follow-up task on a lead or a deal, due at a business time."""

    task_id: Ref
    title: ShortText | None = None  # None once sealed
    due_at: dt.datetime
    owner: ShortText | None = None
    sealed: SealedText | None = None


class TaskCompleted(_Event, frozen=True, tag="task.completed.v1"):
    task_id: Ref
    outcome: ShortText | None = None
    sealed: SealedText | None = None


class StageDefinition(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One stage of a pipeline: its id, display name, win probability and rotting days."""

    id: Ref
    name: ShortText
    probability: Probability
    rotting_days: Annotated[int, msgspec.Meta(ge=0, le=3650)] | None = None


Stages = Annotated[list[StageDefinition], msgspec.Meta(min_length=1, max_length=50)]


class PipelineDefined(_Event, frozen=True, tag="pipeline.defined.v1"):
    """A pipeline's stages, in order. A later definition replaces the earlier one."""

    name: ShortText
    stages: Stages


SlaKind = Literal["first_touch", "next_touch", "task_due", "deal_rotting"]
AlertKind = SlaKind | Literal["source_fetch"]
"""What an alert is about: a breached SLA, or (``source_fetch``) a lead whose fields a source would not give."""


class AlertRaised(_Event, frozen=True, tag="alert.raised.v1"):
    """A follow-up SLA was breached: what should have happened, on which lead or deal, by whom, by when.

    The alert's aggregate id derives from the SLA timer, and it is appended only to an alert with no events
    yet, so one breach raises one alert however often the worker retries or replays."""

    kind: AlertKind
    policy: ShortText
    subject_type: Literal["lead", "deal"]
    subject_id: Ref
    deadline: dt.datetime
    rep: ShortText | None = None
    task_id: Ref | None = None
    stage: Ref | None = None


class AlertEscalated(_Event, frozen=True, tag="alert.escalated.v1"):
    """An alert nobody answered within the policy's second window went to the rep's manager."""

    manager: ShortText
    rep: ShortText | None = None


CorrectableField = Literal["email", "phone", "first_name", "last_name", "full_name", "company", "job_title", "country"]
"""What a correction of a lead may change: the profile a capture gave (``country`` stays in clear, as in a capture)."""
CORRECTABLE: tuple[str, ...] = get_args(CorrectableField)


class LeadCorrected(_Event, frozen=True, tag="lead.corrected.v1"):
    """Someone corrected what the lead's capture said. ``fields`` names, in clear, every field that changed; the new
    values are sealed with the lead's key like the capture's (they read None in the log and ``[erased]`` once the key
    is gone). A field listed without a value was cleared."""

    fields: Annotated[tuple[CorrectableField, ...], msgspec.Meta(min_length=1, max_length=len(CORRECTABLE))]
    email: Email | None = None
    phone: Phone | None = None
    first_name: ShortText | None = None
    last_name: ShortText | None = None
    full_name: ShortText | None = None
    company: ShortText | None = None
    job_title: ShortText | None = None
    country: CountryCode | None = None
    sealed: SealedText | None = None


class LeadMerged(_Event, frozen=True, tag="lead.merged.v1"):
    """This lead (a duplicate) was merged into ``into``, the lead that survives. Both histories stay in the log as
    they were; reads show this one as merged, pointing at the survivor, which lists the leads merged into it."""

    into: Ref


UserRole = Literal["rep", "manager", "admin", "auditor"]
USER_ROLES: tuple[UserRole, ...] = ("rep", "manager", "admin", "auditor")


class UserCreated(_Event, frozen=True, tag="user.created.v1"):
    """A person who signs in: the aggregate id is the username (the name deals and leads are owned by)."""

    role: UserRole
    team: ShortText | None = None  # None: the team of the rules file that lists them


class UserRoleChanged(_Event, frozen=True, kw_only=True, tag="user.role_changed.v1"):
    role: UserRole
    team: ShortText | None = None
    previous_role: UserRole


class UserDeactivated(_Event, frozen=True, tag="user.deactivated.v1"):
    """The user may no longer sign in; their sessions end."""

    reason: ShortText | None = None


Domain = Annotated[
    str, msgspec.Meta(max_length=253, pattern=r"^(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
]
"""An organisation's web domain, lower case (``acme.example``): the company's, not a person's."""
ContactRole = Literal["decision_maker", "champion", "influencer", "user", "blocker"]
CONTACT_ROLES: tuple[str, ...] = get_args(ContactRole)


class OrganisationCreated(_Event, frozen=True, tag="organisation.created.v1"):
    """A company a team sells to. Its name, domain and country name a company, not a person: they stay in clear."""

    name: ShortText
    domain: Domain | None = None
    country: CountryCode | None = None


class ContactCreated(_Event, frozen=True, tag="contact.created.v1"):
    """A person at an organisation. Name, e-mail, phone and job title are sealed with the person's key: the lead's
    it was converted from (``lead_id``), else the contact's own (``contact.<id>``); they read None in the log."""

    name: ShortText | None = None
    email: Email | None = None
    phone: Phone | None = None
    job_title: ShortText | None = None
    organisation_id: Ref | None = None
    lead_id: Ref | None = None
    sealed: SealedText | None = None


class ContactLinkedToDeal(_Event, frozen=True, tag="contact.linked_to_deal.v1"):
    """The contact takes part in a deal, in a role (the deal's decision maker, a champion, ...)."""

    deal_id: Ref
    role: ContactRole


class ContactRoleChanged(_Event, frozen=True, tag="contact.role_changed.v1"):
    deal_id: Ref
    from_role: ContactRole
    to_role: ContactRole


class ContactUnlinkedFromDeal(_Event, frozen=True, tag="contact.unlinked_from_deal.v1"):
    deal_id: Ref
    role: ContactRole


class ContactErased(_Event, frozen=True, tag="contact.erased.v1"):
    """A contact's personal data was erased on request: its own key is destroyed (see events/personal.py)."""

    reason: ShortText | None = None


class UserReactivated(_Event, frozen=True, tag="user.reactivated.v1"):
    pass


class UserPasswordSet(_Event, frozen=True, tag="user.password_set.v1"):
    """A password was set; the hash is never in the log (it lives in the credentials table, see
    docs/configuration.md). ``by``: ``admin`` (an administrator or the CLI set it) or ``self``."""

    by: Literal["admin", "self"] = "admin"


class LeadConverted(_Event, frozen=True, tag="lead.converted.v1"):
    """A qualified lead became (or joined) an organisation, a contact and a deal: the ids it converted to."""

    organisation_id: Ref
    contact_id: Ref
    deal_id: Ref


Event = (
    LeadCaptured
    | LeadDetailsFetched
    | LeadAssigned
    | TouchpointLogged
    | LeadQualified
    | LeadDisqualified
    | LeadErased
    | DealOpened
    | DealStageChanged
    | DealAmountChanged
    | DealWon
    | DealLost
    | TaskScheduled
    | TaskCompleted
    | PipelineDefined
    | AlertRaised
    | AlertEscalated
    | LeadCorrected
    | LeadMerged
    | UserCreated
    | UserRoleChanged
    | UserDeactivated
    | UserReactivated
    | UserPasswordSet
    | OrganisationCreated
    | ContactCreated
    | ContactLinkedToDeal
    | ContactRoleChanged
    | ContactUnlinkedFromDeal
    | ContactErased
    | LeadConverted
    | DealUpdated
    | DealReassigned
    | DealReopened
)

EVENT_TYPES: tuple[type[_Event], ...] = (
    LeadCaptured,
    LeadDetailsFetched,
    LeadAssigned,
    TouchpointLogged,
    LeadQualified,
    LeadDisqualified,
    LeadErased,
    DealOpened,
    DealStageChanged,
    DealAmountChanged,
    DealWon,
    DealLost,
    TaskScheduled,
    TaskCompleted,
    PipelineDefined,
    AlertRaised,
    AlertEscalated,
    LeadCorrected,
    LeadMerged,
    UserCreated,
    UserRoleChanged,
    UserDeactivated,
    UserReactivated,
    UserPasswordSet,
    OrganisationCreated,
    ContactCreated,
    ContactLinkedToDeal,
    ContactRoleChanged,
    ContactUnlinkedFromDeal,
    ContactErased,
    LeadConverted,
    DealUpdated,
    DealReassigned,
    DealReopened,
)


def type_name(event: Event) -> str:
    """The versioned type tag of an event, e.g. ``lead.captured.v1``."""
    tag = type(event).__struct_config__.tag
    assert isinstance(tag, str)
    return tag
