"""The people fold: organisations, contacts (in clear, opened by the engine) and each deal's contacts with their
roles, folded from the log. Pure: no I/O, no clock.

Idempotent per event sequence like the board: an event at or below a row's ``version`` changes nothing. A lead's
erasure is not folded here: which contacts it covers is in the stored rows, so the store scrubs them in SQL.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import msgspec

from events.envelope import StoredEvent
from events.personal import ERASED
from events.types import (
    ContactCreated,
    ContactErased,
    ContactLinkedToDeal,
    ContactRole,
    ContactRoleChanged,
    ContactUnlinkedFromDeal,
    LeadConverted,
    OrganisationCreated,
)


class OrganisationRow(msgspec.Struct, frozen=True, kw_only=True):
    organisation_id: str
    name: str
    domain: str | None
    country: str | None
    created_at: dt.datetime
    version: int


class ContactRow(msgspec.Struct, frozen=True, kw_only=True):
    """A contact in clear; once erased (its key, or its lead's, destroyed) the name reads ``[erased]`` and the
    other personal fields are gone."""

    contact_id: str
    name: str
    email: str | None
    phone: str | None
    job_title: str | None
    organisation_id: str | None
    lead_id: str | None
    erased: bool
    created_at: dt.datetime
    version: int


class LinkRow(msgspec.Struct, frozen=True, kw_only=True):
    """A contact's part in a deal; an unlinked one stays as a row with ``active`` false (the fold only upserts)."""

    deal_id: str
    contact_id: str
    role: ContactRole
    active: bool
    linked_at: dt.datetime
    version: int


@dataclass
class PeopleState:
    """Rows by id; :func:`apply` replaces rows (they are frozen) and mutates these dicts in place."""

    organisations: dict[str, OrganisationRow] = field(default_factory=dict)
    contacts: dict[str, ContactRow] = field(default_factory=dict)
    links: dict[tuple[str, str], LinkRow] = field(default_factory=dict)
    converted: dict[str, str] = field(default_factory=dict)
    """The organisation of each deal a lead's conversion opened, by deal id (the batch's new ones)."""

    def copy(self) -> PeopleState:
        return PeopleState(dict(self.organisations), dict(self.contacts), dict(self.links), dict(self.converted))


def _erased(row: ContactRow, sequence: int) -> ContactRow:
    gone = {"email": None, "phone": None, "job_title": None}
    return msgspec.structs.replace(row, name=ERASED, erased=True, version=sequence, **gone)


def apply(state: PeopleState, event: StoredEvent) -> PeopleState:
    """Fold one event into ``state`` (in place) and return it."""
    envelope, sequence = event.envelope, event.sequence
    data, aggregate_id, at = envelope.data, envelope.aggregate_id, envelope.occurred_at
    match data:
        case OrganisationCreated():
            current = state.organisations.get(aggregate_id)
            if current is None or sequence > current.version:
                state.organisations[aggregate_id] = OrganisationRow(
                    organisation_id=aggregate_id,
                    name=data.name,
                    domain=data.domain,
                    country=data.country,
                    created_at=at,
                    version=sequence,
                )
        case ContactCreated():
            current_contact = state.contacts.get(aggregate_id)
            if current_contact is None or sequence > current_contact.version:
                row = ContactRow(
                    contact_id=aggregate_id,
                    name=data.name or ERASED,
                    email=data.email,
                    phone=data.phone,
                    job_title=data.job_title,
                    organisation_id=data.organisation_id,
                    lead_id=data.lead_id,
                    erased=False,
                    created_at=at,
                    version=sequence,
                )
                # Opened after its key was destroyed (a rebuild after an erasure): nothing of the person stays.
                state.contacts[aggregate_id] = _erased(row, sequence) if data.name in (None, ERASED) else row
        case ContactErased():
            erased = state.contacts.get(aggregate_id)
            if erased is not None and sequence > erased.version:
                state.contacts[aggregate_id] = _erased(erased, sequence)
        case ContactLinkedToDeal(deal_id=deal_id, role=role) | ContactRoleChanged(deal_id=deal_id, to_role=role):
            _link(state, deal_id, aggregate_id, role, True, at, sequence)
        case ContactUnlinkedFromDeal(deal_id=deal_id, role=role):
            _link(state, deal_id, aggregate_id, role, False, at, sequence)
        case LeadConverted(organisation_id=organisation_id, deal_id=deal_id):
            state.converted.setdefault(deal_id, organisation_id)
    return state


def _link(
    state: PeopleState, deal_id: str, contact_id: str, role: ContactRole, active: bool, at: dt.datetime, sequence: int
) -> None:
    key = (deal_id, contact_id)
    current = state.links.get(key)
    if current is not None and sequence <= current.version:
        return
    linked_at = current.linked_at if current is not None and current.active and active else at
    state.links[key] = LinkRow(
        deal_id=deal_id, contact_id=contact_id, role=role, active=active, linked_at=linked_at, version=sequence
    )
