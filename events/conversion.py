"""Converting a qualified lead: its organisation, contact and deal, each appended to its own aggregate with
optimistic concurrency, then ``lead.converted.v1`` on the lead.

Each step is idempotent, so a retry (after a timeout, a crash half-way) lands what is missing once: the deal's
and a new contact's ids derive from the lead's, an organisation's from its domain or name (a company's, not a
person's), and a step whose aggregate already exists appends nothing. The lead's event comes last: a lead
reads converted only once everything it converted to is in the log.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

import msgspec

from events import aggregates as agg
from events import commands as cmd
from events import people
from events.envelope import AggregateType, Envelope
from events.handlers import open_deal
from events.ids import derived_id
from events.ledger import Accepted, Context, KeyReused, Ledger
from events.people_handlers import contact_state, organisation_state
from events.types import (
    SHORT_TEXT,
    ContactCreated,
    Event,
    LeadCaptured,
    LeadConverted,
    LeadDetailsFetched,
    OrganisationCreated,
)


class Directory(Protocol):
    """Finds existing organisations and contacts in the read models (clear text lives only there)."""

    async def organisation_by(self, name: str, domain: str | None) -> str | None:
        """The id of an organisation with this domain, or else this name (case-insensitive), if any."""
        ...

    async def contact_by_email(self, email: str) -> str | None:
        """The id of a contact with this e-mail (case-insensitive), if any."""
        ...


class Conversion(msgspec.Struct, frozen=True):
    """The answer to a conversion: what the lead converted to, and the events appended (none on a retry)."""

    lead_id: str
    organisation_id: str
    contact_id: str
    deal_id: str
    events: list[Accepted]
    duplicate: bool = False


class Profile(msgspec.Struct, frozen=True):
    """What the lead told us about the person and their company, opened with the lead's key."""

    name: str | None = None
    email: str | None = None
    phone: str | None = None
    job_title: str | None = None
    company: str | None = None
    country: str | None = None


def profile_of(history: list[Envelope]) -> Profile:
    """The lead's capture, with the fields a source's API answered later where the capture had none."""
    found: dict[str, str] = {}
    for envelope in history:
        data = envelope.data
        if not isinstance(data, LeadCaptured | LeadDetailsFetched):
            continue
        joined = " ".join(n for n in (data.first_name, data.last_name) if n)
        values = {
            "name": data.full_name or joined or None,
            "email": data.email,
            "phone": data.phone,
            "job_title": data.job_title,
            "company": data.company,
            "country": data.country if isinstance(data, LeadCaptured) else None,
        }
        for name, value in values.items():
            if value is not None and name not in found:
                found[name] = value
    return Profile(**found)


def organisation_key(name: str, domain: str | None) -> str:
    """The id an organisation made by a conversion gets: one per domain, else per name, whoever converts."""
    return derived_id("organisation", f"domain:{domain}" if domain else f"name:{name.casefold()}")


def contact_key(lead_id: str) -> str:
    """The id of the contact a lead becomes (derived from the lead: never from the e-mail, which is personal)."""
    return derived_id("contact", "lead", lead_id)


def deal_key(lead_id: str) -> str:
    return derived_id("deal", "lead", lead_id)


async def _opened_lead(ledger: Ledger, lead_id: str) -> list[Envelope]:
    history = [h.envelope for h in await ledger.history("lead", lead_id)]
    if ledger.vault is None:
        return history
    return await ledger.vault.unsealed(history, (LeadCaptured, LeadDetailsFetched))


async def _once(ledger: Ledger, ctx: Context, command: cmd.ConvertLead, step: Step) -> Accepted | None:
    """Append the step's event unless its aggregate exists (a retry, or a concurrent conversion got there first)."""
    try:
        return await ledger.execute(ctx, step.aggregate_type, step.aggregate_id, step.decide, command.occurred_at)
    except agg.Rejected as exc:
        if exc.status == 409 and exc.field == f"{step.aggregate_type}_id":
            return None
        raise


class Step(msgspec.Struct, frozen=True):
    """The creation of an organisation or a contact, decided on the aggregate's state when appended."""

    aggregate_type: AggregateType
    aggregate_id: str
    event: Event

    def decide(self, history: list[Envelope]) -> Event:
        if self.aggregate_type == "organisation":
            assert isinstance(self.event, OrganisationCreated)
            return people.create_organisation(people.fold_organisation(history), self.event)
        assert isinstance(self.event, ContactCreated)
        return people.create_contact(people.fold_contact(history), None, self.event)


async def _check_pipeline(ledger: Ledger, command: cmd.ConvertLead) -> None:
    """Refuse a pipeline or stage the deal could not open in before anything is appended."""
    pipeline = agg.fold_pipeline(h.envelope for h in await ledger.history("pipeline", command.pipeline_id))
    if not pipeline.exists:
        raise agg.Rejected("pipeline_id", f"no pipeline {command.pipeline_id!r}", 422)
    if command.stage is not None and not pipeline.has_stage(command.stage):
        raise agg.Rejected("stage", f"pipeline {command.pipeline_id!r} has no stage {command.stage!r}", 422)


async def _retried(ledger: Ledger, ctx: Context, lead: agg.LeadState, lead_id: str) -> Conversion | None:
    """The first answer, when the lead was converted under the caller's idempotency key (``KeyReused`` if that
    was another request)."""
    done = lead.converted
    if done is None or ctx.idempotency_key is None:
        return None
    for stored in await ledger.history("lead", lead_id):
        if isinstance(stored.envelope.data, LeadConverted) and stored.envelope.idempotency_key == ctx.idempotency_key:
            if ctx.request_sha256 and stored.request_sha256 and stored.request_sha256 != ctx.request_sha256:
                raise KeyReused(stored.envelope.event_id)
            return Conversion(lead_id, done.organisation_id, done.contact_id, done.deal_id, [], duplicate=True)
    return None


async def convert_lead(ledger: Ledger, ctx: Context, command: cmd.ConvertLead, directory: Directory) -> Conversion:
    """Create (or link) the lead's organisation, contact and deal, then record the conversion on the lead."""
    history = await _opened_lead(ledger, command.lead_id)
    lead = agg.fold_lead(history)
    if (retried := await _retried(ledger, ctx, lead, command.lead_id)) is not None:
        return retried
    people.may_convert(lead)
    await _check_pipeline(ledger, command)
    profile = profile_of(history)
    appended: list[Accepted | None] = []

    org_name = command.organisation_name or profile.company
    if command.organisation_id is not None:
        organisation_id = command.organisation_id
        if not (await organisation_state(ledger, organisation_id)).exists:
            raise agg.Rejected("organisation_id", f"no organisation {organisation_id!r}", 422)
    elif org_name is None:
        raise agg.Rejected("organisation_name", "the lead names no company: give organisation_name", 422)
    else:
        organisation_id = await directory.organisation_by(org_name, command.domain) or organisation_key(
            org_name, command.domain
        )
        if not (await organisation_state(ledger, organisation_id)).exists:
            country = command.country or profile.country
            created = OrganisationCreated(name=org_name, domain=command.domain, country=country)
            appended.append(await _once(ledger, ctx, command, Step("organisation", organisation_id, created)))

    email = command.email or profile.email
    if command.contact_id is not None:
        contact_id = command.contact_id
        if not (await contact_state(ledger, contact_id)).exists:
            raise agg.Rejected("contact_id", f"no contact {contact_id!r}", 422)
    else:
        contact_id = (await directory.contact_by_email(email) if email else None) or contact_key(command.lead_id)
        if not (await contact_state(ledger, contact_id)).exists:
            name = command.name or profile.name or email
            if name is None:
                raise agg.Rejected("name", "the lead gives no name or e-mail: give the contact's name", 422)
            name = name[:SHORT_TEXT]  # an e-mail standing in for the name may be longer than a name may be
            person = ContactCreated(
                name=name,
                email=email,
                phone=command.phone or profile.phone,
                job_title=command.job_title or profile.job_title,
                organisation_id=organisation_id,
                lead_id=command.lead_id,
            )
            appended.append(await _once(ledger, ctx, command, Step("contact", contact_id, person)))

    deal_id = deal_key(command.lead_id)
    if not agg.fold_deal(h.envelope for h in await ledger.history("deal", deal_id)).exists:
        deal = cmd.OpenDeal(
            deal_id=deal_id,
            name=command.deal_name or org_name or "deal",
            pipeline_id=command.pipeline_id,
            stage=command.stage,
            amount=command.amount,
            currency=command.currency,
            owner=command.owner or lead.owner,
            expected_close_date=command.expected_close_date,
            lead_id=command.lead_id,
            occurred_at=command.occurred_at,
        )
        try:
            appended.append(await open_deal(ledger, ctx, deal))
        except agg.Rejected as exc:
            if exc.status != 409 or exc.field != "deal_id":
                raise

    if deal_id not in (await contact_state(ledger, contact_id)).roles:
        link = cmd.LinkContact(
            contact_id=contact_id, deal_id=deal_id, role=command.role, occurred_at=command.occurred_at
        )
        # The ledger answers a key it finds in the aggregate's history as a retry: the contact's creation carries
        # the request's key, so its link, the second event of the request on that aggregate, carries its own.
        key = f"{ctx.idempotency_key}#link" if ctx.idempotency_key else None
        appended.append(await _link(ledger, dataclasses.replace(ctx, idempotency_key=key), link))

    converted = LeadConverted(organisation_id=organisation_id, contact_id=contact_id, deal_id=deal_id)

    def decide(history: list[Envelope]) -> Event:
        return people.convert_lead(agg.fold_lead(history), converted)

    appended.append(await ledger.execute(ctx, "lead", command.lead_id, decide, command.occurred_at))
    events = [a for a in appended if a is not None]
    return Conversion(command.lead_id, organisation_id, contact_id, deal_id, events)


async def _link(ledger: Ledger, ctx: Context, command: cmd.LinkContact) -> Accepted | None:
    """Link the contact to the deal unless it is linked there already (a concurrent retry got there first)."""
    deal = agg.fold_deal(h.envelope for h in await ledger.history("deal", command.deal_id))

    def decide(history: list[Envelope]) -> Event:
        return people.link_to_deal(people.fold_contact(history), deal, command.deal_id, command.role)

    try:
        return await ledger.execute(ctx, "contact", command.contact_id, decide, command.occurred_at)
    except agg.Rejected as exc:
        if exc.status == 409 and exc.field == "deal_id":
            return None
        raise
