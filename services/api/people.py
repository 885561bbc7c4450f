"""Organisations, contacts and the people of a deal over HTTP; converting a qualified lead in one command."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Response, Router, get, post
from litestar.params import FromQuery, JSONBody, QueryParameter
from psycopg import AsyncConnection

from events import commands as cmd
from events.aggregates import Rejected
from events.conversion import Conversion, convert_lead
from events.handlers import handle
from events.ids import derived_id, uuid7
from events.ledger import Accepted
from projections import people_queries as people
from projections import people_store
from projections.people import ContactRow, OrganisationRow
from projections.versions import serving_build_name
from services.api import schemas
from services.api.common import (
    AggregateIdParam,
    AnyRequest,
    accepted,
    business_time,
    caller_of,
    context,
    requires,
    runtime,
)
from services.api.deal_people import DealSummary, deal_summaries
from services.api.identity import reaches
from services.api.runtime import Runtime

READ = [requires("read")]
Limit = Annotated[int | None, QueryParameter(ge=1, le=200, description="page size, 50 by default")]
Sort = Annotated[str | None, QueryParameter(description="name or created_at; prefix - for descending")]


class OrganisationPage(msgspec.Struct, frozen=True):
    organisations: list[OrganisationRow]
    next_cursor: str | None


class ContactPage(msgspec.Struct, frozen=True):
    contacts: list[ContactRow]
    next_cursor: str | None


async def _run(request: AnyRequest, data: schemas.Body, command: cmd.Command) -> Accepted:
    rt = runtime(request)
    ctx = context(request, body=data)
    when = business_time(data.occurred_at, ctx.now, rt.settings.config.max_clock_skew_seconds, "occurred_at")
    return await handle(rt.ledger, ctx, msgspec.structs.replace(command, occurred_at=when))


def _new_id(request: AnyRequest, kind: str, given: str | None) -> str:
    """The id given, else one derived from the Idempotency-Key (a retry makes nothing twice), else a new one."""
    key = request.headers.get("idempotency-key")
    return given or (derived_id(kind, f"{caller_of(request).id}:{key}") if key else uuid7())


async def _build(conn: AsyncConnection[Any]) -> str:
    return await serving_build_name(conn, "people", people_store.BUILD)


@post("/organisations", status_code=202, tags=["people"], guards=[requires("deals:write")])
async def create_organisation(request: AnyRequest, data: JSONBody[schemas.CreateOrganisation]) -> Response[Any]:
    """An organisation (a company you sell to): its name, web domain and country, in clear."""
    command = cmd.CreateOrganisation(
        organisation_id=_new_id(request, "organisation", data.organisation_id),
        name=data.name,
        domain=data.domain,
        country=data.country,
    )
    return accepted(await _run(request, data, command))


@get("/organisations", tags=["people"], guards=READ)
async def list_organisations(
    request: AnyRequest,
    q: FromQuery[str | None] = None,
    sort: Sort = None,
    cursor: FromQuery[str | None] = None,
    limit: Limit = None,
) -> OrganisationPage:
    """Organisations by name (or ``sort=-created_at``), ``q`` searching name and domain, a keyset page at a time."""
    async with runtime(request).read_connection() as conn:
        rows, next_cursor = await people.organisations(conn, await _build(conn), q, sort, cursor, limit)
    return OrganisationPage(rows, next_cursor)


class OrganisationView(msgspec.Struct, frozen=True, kw_only=True):
    organisation: OrganisationRow
    contacts: list[ContactRow]
    deals: list[DealSummary]


@get("/organisations/{organisation_id:str}", tags=["people"], guards=READ)
async def get_organisation(request: AnyRequest, organisation_id: AggregateIdParam) -> OrganisationView:
    """One organisation with its contacts and the deals it takes part in (converted to, or its contacts' deals), as
    the board holds them."""
    async with runtime(request).read_connection() as conn:
        found = await people.organisation(conn, await _build(conn), organisation_id)
        if found is None:
            raise Rejected("organisation_id", "no such organisation", 404)
        deals = await deal_summaries(conn, found.deal_ids)
    return OrganisationView(organisation=found.organisation, contacts=found.contacts, deals=deals)


@post("/contacts", status_code=202, tags=["people"], guards=[requires("deals:write")])
async def create_contact(request: AnyRequest, data: JSONBody[schemas.CreateContact]) -> Response[Any]:
    """A contact on its own; name, e-mail, phone and title are sealed with the contact's own key."""
    command = cmd.CreateContact(
        contact_id=_new_id(request, "contact", data.contact_id),
        name=data.name,
        email=data.email,
        phone=data.phone,
        job_title=data.job_title,
        organisation_id=data.organisation_id,
    )
    return accepted(await _run(request, data, command))


@get("/contacts", tags=["people"], guards=READ)
async def list_contacts(
    request: AnyRequest,
    q: FromQuery[str | None] = None,
    organisation_id: FromQuery[str | None] = None,
    sort: Sort = None,
    cursor: FromQuery[str | None] = None,
    limit: Limit = None,
) -> ContactPage:
    """Contacts by name (or ``sort=-created_at``), ``q`` searching name, e-mail, phone and job title."""
    async with runtime(request).read_connection() as conn:
        rows, next_cursor = await people.contacts(conn, await _build(conn), q, organisation_id, sort, cursor, limit)
    return ContactPage(rows, next_cursor)


@get("/contacts/{contact_id:str}", tags=["people"], guards=READ)
async def get_contact(request: AnyRequest, contact_id: AggregateIdParam) -> people.ContactDetail:
    """One contact with its deals and its role in each."""
    async with runtime(request).read_connection() as conn:
        found = await people.contact(conn, await _build(conn), contact_id)
    if found is None:
        raise Rejected("contact_id", "no such contact", 404)
    return found


@post("/contacts/{contact_id:str}/erase", status_code=202, tags=["people"], guards=[requires("deals:write")])
async def erase_contact(
    request: AnyRequest, contact_id: AggregateIdParam, data: JSONBody[schemas.EraseContact]
) -> Response[Any]:
    """Erase a contact's personal data (its own key is destroyed); a contact converted from a lead is erased
    with that lead (``POST /v1/leads/{id}/erase``)."""
    return accepted(await _run(request, data, cmd.EraseContact(contact_id=contact_id, reason=data.reason)))


@post(
    "/deals/{deal_id:str}/contacts", status_code=202, tags=["people"], guards=[requires("deals:write"), reaches("deal")]
)
async def link_contact(
    request: AnyRequest, deal_id: AggregateIdParam, data: JSONBody[schemas.LinkContact]
) -> Response[Any]:
    """Give a contact a role in the deal (decision_maker, champion, influencer, user, blocker): a link, or a role
    change if it is linked already."""
    command = cmd.LinkContact(contact_id=data.contact_id, deal_id=deal_id, role=data.role)
    return accepted(await _run(request, data, command))


@post(
    "/deals/{deal_id:str}/contacts/{contact_id:str}/unlink",
    status_code=202,
    tags=["people"],
    guards=[requires("deals:write"), reaches("deal")],
)
async def unlink_contact(
    request: AnyRequest, deal_id: AggregateIdParam, contact_id: AggregateIdParam, data: JSONBody[schemas.Body]
) -> Response[Any]:
    """The contact no longer takes part in the deal."""
    return accepted(await _run(request, data, cmd.UnlinkContact(contact_id=contact_id, deal_id=deal_id)))


class _Directory:
    """The conversion's lookups, in the people read model. An API serving no read models finds nothing: its
    conversions make organisations by domain or name, and contacts of their own."""

    def __init__(self, rt: Runtime) -> None:
        self._rt = rt

    async def organisation_by(self, name: str, domain: str | None) -> str | None:
        if not self._rt.settings.database_url:
            return None
        async with self._rt.read_connection() as conn:
            return await people.organisation_by(conn, await _build(conn), name, domain)

    async def contact_by_email(self, email: str) -> str | None:
        if not self._rt.settings.database_url:
            return None
        async with self._rt.read_connection() as conn:
            return await people.contact_by_email(conn, await _build(conn), email)


@post(
    "/leads/{lead_id:str}/convert", status_code=202, tags=["leads"], guards=[requires("leads:write"), reaches("lead")]
)
async def convert(
    request: AnyRequest, lead_id: AggregateIdParam, data: JSONBody[schemas.ConvertLead]
) -> Response[Conversion]:
    """Convert a qualified lead: create (or link an existing, found by domain or name / by e-mail) its organisation
    and contact, open its deal (the pipeline's first stage by default), link the contact to it in ``role``, and
    record ``lead.converted.v1``. A retry (same ``Idempotency-Key``) lands what is missing and answers the same."""
    rt = runtime(request)
    ctx = context(request, body=data)
    when = business_time(data.occurred_at, ctx.now, rt.settings.config.max_clock_skew_seconds, "occurred_at")
    fields = {f: getattr(data, f) for f in data.__struct_fields__ if f != "occurred_at"}
    command = cmd.ConvertLead(lead_id=lead_id, occurred_at=when, **fields)
    result = await convert_lead(rt.ledger, ctx, command, _Directory(rt))
    return Response(result, status_code=200 if result.duplicate else 202)


router = Router(
    path="/v1",
    route_handlers=[
        create_organisation,
        list_organisations,
        get_organisation,
        create_contact,
        list_contacts,
        get_contact,
        erase_contact,
        link_contact,
        unlink_contact,
        convert,
    ],
)
