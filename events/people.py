"""Organisations and contacts: state folded from their own events, and the pure decisions their commands make."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from events.aggregates import DealState, LeadState, Rejected
from events.envelope import Envelope
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


@dataclass(slots=True)
class OrganisationState:
    exists: bool = False
    name: str = ""


@dataclass(slots=True)
class ContactState:
    exists: bool = False
    organisation_id: str | None = None
    lead_id: str | None = None
    erased: bool = False
    roles: dict[str, ContactRole] = field(default_factory=dict)
    """The contact's role in each deal it is linked to, by deal id."""


def fold_organisation(history: Iterable[Envelope]) -> OrganisationState:
    state = OrganisationState()
    for envelope in history:
        if isinstance(envelope.data, OrganisationCreated):
            state.exists, state.name = True, envelope.data.name
    return state


def fold_contact(history: Iterable[Envelope]) -> ContactState:
    state = ContactState()
    for envelope in history:
        match envelope.data:
            case ContactCreated(organisation_id=organisation_id, lead_id=lead_id):
                state.exists, state.organisation_id, state.lead_id = True, organisation_id, lead_id
            case ContactLinkedToDeal(deal_id=deal_id, role=role) | ContactRoleChanged(deal_id=deal_id, to_role=role):
                state.roles[deal_id] = role
            case ContactUnlinkedFromDeal(deal_id=deal_id):
                state.roles.pop(deal_id, None)
            case ContactErased():
                state.erased = True
    return state


def create_organisation(state: OrganisationState, event: OrganisationCreated) -> OrganisationCreated:
    if state.exists:
        raise Rejected("organisation_id", "an organisation with this id already exists")
    return event


def create_contact(
    state: ContactState, organisation: OrganisationState | None, event: ContactCreated
) -> ContactCreated:
    """A new contact, at an organisation that exists (``organisation`` is None when the contact names none)."""
    if state.exists:
        raise Rejected("contact_id", "a contact with this id already exists")
    if organisation is not None and not organisation.exists:
        raise Rejected("organisation_id", f"no organisation {event.organisation_id!r}", 422)
    return event


def _require_contact(state: ContactState) -> None:
    if not state.exists:
        raise Rejected("contact_id", "no such contact", 404)


def link_to_deal(state: ContactState, deal: DealState, deal_id: str, role: ContactRole) -> ContactLinkedToDeal:
    """Link the contact to a deal that exists; a second link to the same deal is a role change, not a link."""
    _require_contact(state)
    if not deal.exists:
        raise Rejected("deal_id", "no such deal", 404)
    if deal_id in state.roles:
        raise Rejected("deal_id", f"the contact is already linked to this deal as {state.roles[deal_id]}")
    return ContactLinkedToDeal(deal_id=deal_id, role=role)


def change_role(state: ContactState, deal_id: str, role: ContactRole) -> ContactRoleChanged:
    _require_contact(state)
    current = state.roles.get(deal_id)
    if current is None:
        raise Rejected("deal_id", "the contact is not linked to this deal", 404)
    if current == role:
        raise Rejected("role", f"the contact already is the deal's {role}")
    return ContactRoleChanged(deal_id=deal_id, from_role=current, to_role=role)


def unlink_from_deal(state: ContactState, deal_id: str) -> ContactUnlinkedFromDeal:
    _require_contact(state)
    role = state.roles.get(deal_id)
    if role is None:
        raise Rejected("deal_id", "the contact is not linked to this deal", 404)
    return ContactUnlinkedFromDeal(deal_id=deal_id, role=role)


def erase_contact(state: ContactState, event: ContactErased) -> ContactErased:
    """Erase a contact with a key of its own; one converted from a lead shares the lead's key: erase the lead."""
    _require_contact(state)
    if state.erased:
        raise Rejected("contact_id", "the contact's personal data is already erased")
    if state.lead_id is not None:
        raise Rejected(
            "contact_id", f"the contact shares the key of lead {state.lead_id!r}: erase the lead, which erases both"
        )
    return event


def may_convert(lead: LeadState) -> None:
    """A lead converts once, when qualified and not erased (its person is what the contact is made of)."""
    if not lead.exists:
        raise Rejected("lead_id", "no such lead", 404)
    if lead.erased:
        raise Rejected("lead_id", "the lead's personal data is erased: it cannot become a contact")
    if lead.converted is not None:
        raise Rejected("lead_id", f"the lead is already converted (deal {lead.converted.deal_id!r})")
    if lead.status != "qualified":
        raise Rejected("status", f"only a qualified lead converts; this one is {lead.status}")


def convert_lead(lead: LeadState, event: LeadConverted) -> LeadConverted:
    may_convert(lead)
    return event
