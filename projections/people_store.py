"""The people read model's tables and projection: organisations, contacts in clear (scrubbed on erasure), each
deal's contacts with their roles, and the organisation of each deal a conversion opened."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import AsyncConnection, AsyncCursor

from events.envelope import AggregateType, StoredEvent
from events.personal import ERASED
from events.types import (
    ContactCreated,
    ContactLinkedToDeal,
    ContactRoleChanged,
    ContactUnlinkedFromDeal,
    Event,
    LeadErased,
)
from projections.batch import BatchProjection, changed
from projections.people import ContactRow, LinkRow, OrganisationRow, PeopleState, apply
from projections.versions import build_name

VERSION = 1
"""The people fold's logic version: bump it when a change to the fold alters rows, and the new build rebuilds."""
BUILD = build_name("people", VERSION)
"""The build readers use before any worker has registered one."""

ORGANISATION_FIELDS = ("organisation_id", "name", "domain", "country", "created_at", "version")
CONTACT_FIELDS = (
    "contact_id",
    "name",
    "email",
    "phone",
    "job_title",
    "organisation_id",
    "lead_id",
    "erased",
    "created_at",
    "version",
)
LINK_FIELDS = ("deal_id", "contact_id", "role", "active", "linked_at", "version")


def _upsert(table: str, fields: Sequence[str], key: Sequence[str]) -> str:
    # Guarded by version: a replayed batch never takes a row back to an older state.
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in fields if c not in key)
    return (
        f"INSERT INTO {table} ({', '.join(fields)}) VALUES ({', '.join(['%s'] * len(fields))}) "  # noqa: S608
        f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates} WHERE {table}.version < EXCLUDED.version"
    )


class PeopleSql:
    """The statements over one build's tables: ``<build>_organisations``, ``_contacts``, ``_deal_contacts``."""

    def __init__(self, build: str) -> None:
        t = f"{build}_"
        self.organisations, self.contacts = f"{t}organisations", f"{t}contacts"
        self.links, self.converted = f"{t}deal_contacts", f"{t}organisation_deals"
        self.ddl = (
            f"CREATE TABLE IF NOT EXISTS {self.organisations} (organisation_id text PRIMARY KEY, name text NOT NULL, "
            "domain text, country text, created_at timestamptz NOT NULL, version bigint NOT NULL)",
            f"CREATE INDEX IF NOT EXISTS {t}organisations_name ON {self.organisations} (lower(name), organisation_id)",
            f"CREATE INDEX IF NOT EXISTS {t}organisations_domain ON {self.organisations} (domain)",
            f"CREATE TABLE IF NOT EXISTS {self.contacts} (contact_id text PRIMARY KEY, name text NOT NULL, email text, "
            "phone text, job_title text, organisation_id text, lead_id text, erased boolean NOT NULL, "
            "created_at timestamptz NOT NULL, version bigint NOT NULL)",
            f"CREATE INDEX IF NOT EXISTS {t}contacts_email ON {self.contacts} (lower(email))",
            f"CREATE INDEX IF NOT EXISTS {t}contacts_lead ON {self.contacts} (lead_id)",
            f"CREATE INDEX IF NOT EXISTS {t}contacts_organisation ON {self.contacts} (organisation_id)",
            f"CREATE TABLE IF NOT EXISTS {self.links} (deal_id text NOT NULL, contact_id text NOT NULL, "
            "role text NOT NULL, active boolean NOT NULL, linked_at timestamptz NOT NULL, version bigint NOT NULL, "
            "PRIMARY KEY (deal_id, contact_id))",
            f"CREATE INDEX IF NOT EXISTS {t}deal_contacts_contact ON {self.links} (contact_id)",
            f"CREATE TABLE IF NOT EXISTS {self.converted} (organisation_id text NOT NULL, deal_id text NOT NULL, "
            "PRIMARY KEY (organisation_id, deal_id))",
        )
        self.upsert_organisation = _upsert(self.organisations, ORGANISATION_FIELDS, ("organisation_id",))
        self.upsert_contact = _upsert(self.contacts, CONTACT_FIELDS, ("contact_id",))
        self.upsert_link = _upsert(self.links, LINK_FIELDS, ("deal_id", "contact_id"))
        self.add_converted = (
            f"INSERT INTO {self.converted} (organisation_id, deal_id) VALUES (%s, %s) ON CONFLICT DO NOTHING"  # noqa: S608
        )
        # The contacts a lead became share its key: its erasure leaves nothing of them in clear either.
        self.scrub_lead = (
            f"UPDATE {self.contacts} SET name = %s, email = NULL, phone = NULL, job_title = NULL, erased = true "  # noqa: S608
            "WHERE lead_id = %s AND NOT erased"
        )


def _fields(row: Any, names: Sequence[str]) -> tuple[Any, ...]:
    return tuple(getattr(row, n) for n in names)


def organisation_of(r: Sequence[Any]) -> OrganisationRow:
    return OrganisationRow(**dict(zip(ORGANISATION_FIELDS, r, strict=True)))


def contact_of(r: Sequence[Any]) -> ContactRow:
    return ContactRow(**dict(zip(CONTACT_FIELDS, r, strict=True)))


def link_of(r: Sequence[Any]) -> LinkRow:
    return LinkRow(**dict(zip(LINK_FIELDS, r, strict=True)))


class PeopleProjection(BatchProjection[PeopleState]):
    """Organisations, contacts and deal contacts. ``instance`` labels a separate build of the same version."""

    name = "people"
    version = VERSION
    partitioned: tuple[AggregateType, ...] = ("organisation", "contact")
    # Every shard hears of every lead's erasure (to scrub the contacts it became) and conversion.
    broadcast: tuple[AggregateType, ...] = ("lead",)
    reads_personal: tuple[type[Event], ...] = (ContactCreated,)  # name, e-mail, phone and title, sealed in the log

    def __init__(self, instance: str = "") -> None:
        self.build = build_name(self.name, self.version, instance)
        self.sql = PeopleSql(self.build)

    def ddl(self) -> Sequence[str]:
        return self.sql.ddl

    async def load_touched(self, conn: AsyncConnection[Any], events: Sequence[StoredEvent]) -> PeopleState:
        state = PeopleState()
        orgs = sorted({e.envelope.aggregate_id for e in events if e.envelope.aggregate_type == "organisation"})
        contacts = sorted({e.envelope.aggregate_id for e in events if e.envelope.aggregate_type == "contact"})
        linked = (ContactLinkedToDeal, ContactRoleChanged, ContactUnlinkedFromDeal)
        pairs = sorted(
            {(e.envelope.data.deal_id, e.envelope.aggregate_id) for e in events if isinstance(e.envelope.data, linked)}
        )
        async with conn.cursor() as cur:
            if orgs:
                await cur.execute(
                    f"SELECT {', '.join(ORGANISATION_FIELDS)} FROM {self.sql.organisations} "  # noqa: S608
                    "WHERE organisation_id = ANY(%s)",
                    (orgs,),
                )
                state.organisations = {r[0]: organisation_of(r) for r in await cur.fetchall()}
            if contacts:
                await cur.execute(
                    f"SELECT {', '.join(CONTACT_FIELDS)} FROM {self.sql.contacts} WHERE contact_id = ANY(%s)",  # noqa: S608
                    (contacts,),
                )
                state.contacts = {r[0]: contact_of(r) for r in await cur.fetchall()}
            if pairs:
                await cur.execute(
                    f"SELECT {', '.join(LINK_FIELDS)} FROM {self.sql.links} "  # noqa: S608
                    "WHERE (deal_id, contact_id) IN (SELECT * FROM unnest(%s::text[], %s::text[]))",
                    ([p[0] for p in pairs], [p[1] for p in pairs]),
                )
                state.links = {(r[0], r[1]): link_of(r) for r in await cur.fetchall()}
        return state

    def fold(self, state: PeopleState, event: StoredEvent) -> None:
        apply(state, event)

    async def write_changes(
        self, cur: AsyncCursor[Any], before: PeopleState, after: PeopleState, events: Sequence[StoredEvent]
    ) -> None:
        if orgs := changed(after.organisations, before.organisations):
            await cur.executemany(self.sql.upsert_organisation, [_fields(r, ORGANISATION_FIELDS) for r in orgs])
        if contacts := changed(after.contacts, before.contacts):
            await cur.executemany(self.sql.upsert_contact, [_fields(r, CONTACT_FIELDS) for r in contacts])
        if links := changed(after.links, before.links):
            await cur.executemany(self.sql.upsert_link, [_fields(r, LINK_FIELDS) for r in links])
        if converted := sorted((org, deal) for deal, org in after.converted.items() if deal not in before.converted):
            await cur.executemany(self.sql.add_converted, converted)
        # After the batch's rows are written, so a contact folded in the same batch is scrubbed too.
        for event in events:
            if isinstance(event.envelope.data, LeadErased):
                await cur.execute(self.sql.scrub_lead, (ERASED, event.envelope.aggregate_id))


async def read_state(conn: AsyncConnection[Any], build: str = BUILD) -> PeopleState:
    """Every stored row of one build: for tests and rebuild comparisons."""
    sql = PeopleSql(build)
    state = PeopleState()
    async with conn.cursor() as cur:
        await cur.execute(f"SELECT {', '.join(ORGANISATION_FIELDS)} FROM {sql.organisations}")  # noqa: S608
        state.organisations = {r[0]: organisation_of(r) for r in await cur.fetchall()}
        await cur.execute(f"SELECT {', '.join(CONTACT_FIELDS)} FROM {sql.contacts}")  # noqa: S608
        state.contacts = {r[0]: contact_of(r) for r in await cur.fetchall()}
        await cur.execute(f"SELECT {', '.join(LINK_FIELDS)} FROM {sql.links}")  # noqa: S608
        state.links = {(r[0], r[1]): link_of(r) for r in await cur.fetchall()}
        await cur.execute(f"SELECT organisation_id, deal_id FROM {sql.converted}")  # noqa: S608
        state.converted = {deal: org for org, deal in await cur.fetchall()}
    return state
