"""The handlers of the organisation and contact commands: read what the decision needs, decide
(``events/people.py``), append through the ledger."""

from __future__ import annotations

from collections.abc import Callable

from events import aggregates as agg
from events import commands as cmd
from events import people
from events.envelope import AggregateType, Envelope
from events.ledger import Accepted, Context, Decide, Ledger
from events.personal import own_key_id
from events.types import ContactCreated, ContactErased, Event, OrganisationCreated


def _on_contact(decide: Callable[[people.ContactState], Event]) -> Decide:
    return lambda history: decide(people.fold_contact(history))


async def _execute(
    ledger: Ledger, ctx: Context, command: cmd.Command, aggregate_type: AggregateType, aggregate_id: str, decide: Decide
) -> Accepted:
    return await ledger.execute(ctx, aggregate_type, aggregate_id, decide, command.occurred_at, command.if_match)


async def _envelopes(ledger: Ledger, aggregate_type: AggregateType, aggregate_id: str) -> list[Envelope]:
    return [h.envelope for h in await ledger.history(aggregate_type, aggregate_id)]


async def organisation_state(ledger: Ledger, organisation_id: str) -> people.OrganisationState:
    return people.fold_organisation(await _envelopes(ledger, "organisation", organisation_id))


async def contact_state(ledger: Ledger, contact_id: str) -> people.ContactState:
    return people.fold_contact(await _envelopes(ledger, "contact", contact_id))


async def create_organisation(ledger: Ledger, ctx: Context, command: cmd.CreateOrganisation) -> Accepted:
    event = OrganisationCreated(name=command.name, domain=command.domain, country=command.country)

    def decide(history: list[Envelope]) -> Event:
        return people.create_organisation(people.fold_organisation(history), event)

    return await _execute(ledger, ctx, command, "organisation", command.organisation_id, decide)


async def create_contact(ledger: Ledger, ctx: Context, command: cmd.CreateContact) -> Accepted:
    """A contact on its own: the ledger seals its fields with the contact's own key (``contact.<id>``)."""
    organisation = None
    if command.organisation_id is not None:
        organisation = await organisation_state(ledger, command.organisation_id)
    event = ContactCreated(
        name=command.name,
        email=command.email,
        phone=command.phone,
        job_title=command.job_title,
        organisation_id=command.organisation_id,
    )
    decide = _on_contact(lambda s: people.create_contact(s, organisation, event))
    return await _execute(ledger, ctx, command, "contact", command.contact_id, decide)


async def link_contact(ledger: Ledger, ctx: Context, command: cmd.LinkContact) -> Accepted:
    """Link the contact to the deal in ``role``, or change its role there if it is linked already."""
    deal = agg.fold_deal(await _envelopes(ledger, "deal", command.deal_id))

    def decide(state: people.ContactState) -> Event:
        if command.deal_id in state.roles:
            return people.change_role(state, command.deal_id, command.role)
        return people.link_to_deal(state, deal, command.deal_id, command.role)

    return await _execute(ledger, ctx, command, "contact", command.contact_id, _on_contact(decide))


async def unlink_contact(ledger: Ledger, ctx: Context, command: cmd.UnlinkContact) -> Accepted:
    decide = _on_contact(lambda s: people.unlink_from_deal(s, command.deal_id))
    return await _execute(ledger, ctx, command, "contact", command.contact_id, decide)


async def erase_contact(ledger: Ledger, ctx: Context, command: cmd.EraseContact) -> Accepted:
    """Destroy the contact's own key, then record it (a contact from a lead is erased with its lead)."""
    if ledger.vault is None:
        raise agg.Rejected("contact_id", "personal data is not encrypted here: nothing to erase", 409)
    event = ContactErased(reason=command.reason)
    people.erase_contact(await contact_state(ledger, command.contact_id), event)
    # The key goes first, as for a lead: if the event then fails to append, a retry records it.
    await ledger.vault.erase(own_key_id("contact", command.contact_id))
    decide = _on_contact(lambda s: people.erase_contact(s, event))
    return await _execute(ledger, ctx, command, "contact", command.contact_id, decide)
