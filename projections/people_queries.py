"""Read side of the people read model: lists of organisations and contacts (keyset pages), one of each with its
contacts and deals, each deal's contacts with their roles and decision maker, and the lookups a conversion makes.

Every query answers empty before the people worker has made its tables (a fresh installation)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import msgspec
from psycopg import AsyncConnection
from psycopg.errors import UndefinedTable

from events.types import ContactRole
from projections.listing import (
    Page,
    SortField,
    Where,
    bounded_limit,
    decode_cursor,
    keyset,
    like_pattern,
    page_of,
    parse_sort,
)
from projections.people import ContactRow, OrganisationRow
from projections.people_store import CONTACT_FIELDS, ORGANISATION_FIELDS, PeopleSql, contact_of, organisation_of

ORGANISATION_SORTS = (SortField("name", "lower(name)", "text"), SortField("created_at", "created_at", "time"))
CONTACT_SORTS = (SortField("name", "lower(name)", "text"), SortField("created_at", "created_at", "time"))


class DealContact(msgspec.Struct, frozen=True, kw_only=True):
    """A contact's part in a deal, with who they are (``[erased]`` once erased)."""

    contact_id: str
    name: str
    email: str | None
    job_title: str | None
    organisation_id: str | None
    role: ContactRole
    linked_at: dt.datetime


class ContactDeal(msgspec.Struct, frozen=True, kw_only=True):
    deal_id: str
    role: ContactRole
    linked_at: dt.datetime


class OrganisationDetail(msgspec.Struct, frozen=True, kw_only=True):
    organisation: OrganisationRow
    contacts: list[ContactRow]
    deal_ids: list[str]


class ContactDetail(msgspec.Struct, frozen=True, kw_only=True):
    contact: ContactRow
    deals: list[ContactDeal]


async def _rows(conn: AsyncConnection[Any], query: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    try:
        async with conn.transaction():  # a savepoint: a missing table leaves the caller's transaction usable
            cur = await conn.execute(query, params)
            return await cur.fetchall()
    except UndefinedTable:
        return []


async def _page(
    conn: AsyncConnection[Any],
    table: str,
    columns: Sequence[str],
    id_column: str,
    where: Where,
    sorts: Sequence[SortField],
    sort_text: str | None,
    filters: dict[str, object],
    cursor: str | None,
    limit: int | None,
) -> tuple[list[tuple[Any, ...]], Page]:
    """One keyset page of ``table`` (rows as records), sorted by ``sort_text`` and its id."""
    size = bounded_limit(limit)
    sort = parse_sort(sort_text, sorts, "name")
    after = decode_cursor(cursor, sort, filters) if cursor else None
    order = keyset(where, sort, after, id_column)
    select = ", ".join([*columns, sort.field.column])
    query = f"SELECT {select} FROM {table} WHERE {where.sql} {order} LIMIT {size + 1}"  # noqa: S608
    records = await _rows(conn, query, where.params)
    page = page_of(records, size, sort, filters, lambda r: (r[-1], r[0]))
    return [r[:-1] for r in page.rows], page


async def organisations(
    conn: AsyncConnection[Any],
    build: str,
    q: str | None = None,
    sort: str | None = None,
    cursor: str | None = None,
    limit: int | None = None,
) -> tuple[list[OrganisationRow], str | None]:
    """A page of organisations, ``q`` searching name and domain; and the next page's cursor."""
    where = Where()
    if q:
        where.add("(name ILIKE %s OR domain ILIKE %s)", like_pattern(q), like_pattern(q))
    table = PeopleSql(build).organisations
    filters: dict[str, object] = {"q": q}
    rows, page = await _page(
        conn, table, ORGANISATION_FIELDS, "organisation_id", where, ORGANISATION_SORTS, sort, filters, cursor, limit
    )
    return [organisation_of(r) for r in rows], page.next_cursor


async def contacts(
    conn: AsyncConnection[Any],
    build: str,
    q: str | None = None,
    organisation_id: str | None = None,
    sort: str | None = None,
    cursor: str | None = None,
    limit: int | None = None,
) -> tuple[list[ContactRow], str | None]:
    """A page of contacts, ``q`` searching name, e-mail, phone and job title; and the next page's cursor."""
    where = Where()
    if q:
        pattern = like_pattern(q)
        where.add("(name ILIKE %s OR email ILIKE %s OR phone ILIKE %s OR job_title ILIKE %s)", *[pattern] * 4)
    where.add_if(organisation_id, "organisation_id = %s")
    table = PeopleSql(build).contacts
    filters: dict[str, object] = {"q": q, "organisation_id": organisation_id}
    rows, page = await _page(
        conn, table, CONTACT_FIELDS, "contact_id", where, CONTACT_SORTS, sort, filters, cursor, limit
    )
    return [contact_of(r) for r in rows], page.next_cursor


async def organisation(conn: AsyncConnection[Any], build: str, organisation_id: str) -> OrganisationDetail | None:
    """One organisation with its contacts and the deals it takes part in (converted to, or its contacts' deals)."""
    sql = PeopleSql(build)
    found = await _rows(
        conn,
        f"SELECT {', '.join(ORGANISATION_FIELDS)} FROM {sql.organisations} WHERE organisation_id = %s",  # noqa: S608
        (organisation_id,),
    )
    if not found:
        return None
    people = await _rows(
        conn,
        f"SELECT {', '.join(CONTACT_FIELDS)} FROM {sql.contacts} WHERE organisation_id = %s "  # noqa: S608
        "ORDER BY lower(name), contact_id LIMIT 500",
        (organisation_id,),
    )
    deals = await _rows(
        conn,
        f"SELECT deal_id FROM {sql.converted} WHERE organisation_id = %s UNION "  # noqa: S608
        f"SELECT l.deal_id FROM {sql.links} l JOIN {sql.contacts} c USING (contact_id) "
        "WHERE c.organisation_id = %s AND l.active ORDER BY 1 LIMIT 500",
        (organisation_id, organisation_id),
    )
    return OrganisationDetail(
        organisation=organisation_of(found[0]), contacts=[contact_of(r) for r in people], deal_ids=[r[0] for r in deals]
    )


async def contact(conn: AsyncConnection[Any], build: str, contact_id: str) -> ContactDetail | None:
    """One contact with the deals it takes part in and its role in each."""
    sql = PeopleSql(build)
    found = await _rows(
        conn,
        f"SELECT {', '.join(CONTACT_FIELDS)} FROM {sql.contacts} WHERE contact_id = %s",  # noqa: S608
        (contact_id,),
    )
    if not found:
        return None
    deals = await _rows(
        conn,
        f"SELECT deal_id, role, linked_at FROM {sql.links} WHERE contact_id = %s AND active "  # noqa: S608
        "ORDER BY linked_at, deal_id LIMIT 500",
        (contact_id,),
    )
    return ContactDetail(
        contact=contact_of(found[0]), deals=[ContactDeal(deal_id=d, role=r, linked_at=at) for d, r, at in deals]
    )


async def deal_contacts(
    conn: AsyncConnection[Any], build: str, deal_ids: Sequence[str]
) -> dict[str, list[DealContact]]:
    """The contacts of each of these deals with their roles, first linked first."""
    if not deal_ids:
        return {}
    sql = PeopleSql(build)
    records = await _rows(
        conn,
        f"SELECT l.deal_id, l.contact_id, c.name, c.email, c.job_title, c.organisation_id, l.role, l.linked_at "  # noqa: S608
        f"FROM {sql.links} l LEFT JOIN {sql.contacts} c USING (contact_id) "
        "WHERE l.deal_id = ANY(%s) AND l.active ORDER BY l.deal_id, l.linked_at, l.contact_id",
        (list(deal_ids),),
    )
    out: dict[str, list[DealContact]] = {}
    for deal_id, contact_id, name, email, title, org, role, at in records:
        out.setdefault(deal_id, []).append(
            DealContact(
                contact_id=contact_id,
                name=name or contact_id,
                email=email,
                job_title=title,
                organisation_id=org,
                role=role,
                linked_at=at,
            )
        )
    return out


def decision_maker(people: Sequence[DealContact]) -> DealContact | None:
    """The deal's decision maker: the first contact linked in that role (a deal may name several)."""
    return next((p for p in people if p.role == "decision_maker"), None)


def late_stages(stage_ids: Sequence[str], configured: Sequence[str] | None = None) -> frozenset[str]:
    """The late stages of a pipeline: ``configured`` (the rules file's) if given, else the last half of its
    stages in order, the middle one included when their number is odd (of 4: the 3rd and 4th; of 5: 3rd to 5th)."""
    if configured is not None:
        return frozenset(configured)
    return frozenset(stage_ids[len(stage_ids) // 2 :])


async def organisation_by(conn: AsyncConnection[Any], build: str, name: str, domain: str | None) -> str | None:
    """An organisation with this domain, else with this name (case-insensitive), oldest first."""
    table = PeopleSql(build).organisations
    if domain is not None:
        found = await _rows(
            conn,
            f"SELECT organisation_id FROM {table} WHERE domain = %s ORDER BY created_at, organisation_id LIMIT 1",  # noqa: S608
            (domain,),
        )
        if found:
            return str(found[0][0])
    found = await _rows(
        conn,
        f"SELECT organisation_id FROM {table} WHERE lower(name) = lower(%s) "  # noqa: S608
        "ORDER BY created_at, organisation_id LIMIT 1",
        (name,),
    )
    return str(found[0][0]) if found else None


async def contact_by_email(conn: AsyncConnection[Any], build: str, email: str) -> str | None:
    """A contact (not erased) with this e-mail, case-insensitive, oldest first."""
    found = await _rows(
        conn,
        f"SELECT contact_id FROM {PeopleSql(build).contacts} WHERE lower(email) = lower(%s) AND NOT erased "  # noqa: S608
        "ORDER BY created_at, contact_id LIMIT 1",
        (email,),
    )
    return str(found[0][0]) if found else None
