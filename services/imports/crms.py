"""The CRMs the importer reads, each file kind with its row mapping and the column holding its record id."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import msgspec

from services.imports import hubspot, pipedrive, zendesk_sell
from services.imports.rows import Cells, DealRow, LeadRow

FileKind = Literal["deals", "leads", "people"]


class Crm(msgspec.Struct, frozen=True, kw_only=True):
    """How one CRM's exports map to import rows."""

    name: str
    stage_order: tuple[str, ...]
    deal: Callable[[int, Cells], DealRow]
    deal_id: str
    lead: Callable[[int, Cells], LeadRow] | None
    lead_id: str
    person: Callable[[int, Cells], LeadRow]
    person_id: str
    columns: dict[str, str] = {}
    """The file column a Dealstream field comes from, to name it in a rejected row."""
    is_organisation: str | None = None
    """A column that marks a row of the people file as an organisation (Sell lists both in one file)."""


CRMS: dict[str, Crm] = {
    pipedrive.NAME: Crm(
        name=pipedrive.NAME,
        stage_order=pipedrive.STAGE_ORDER,
        deal=pipedrive.deal,
        deal_id=pipedrive.DEAL_ID,
        lead=pipedrive.lead,
        lead_id=pipedrive.LEAD_ID,
        person=pipedrive.person,
        person_id=pipedrive.PERSON_ID,
        columns=pipedrive.COLUMNS,
    ),
    hubspot.NAME: Crm(
        name=hubspot.NAME,
        stage_order=hubspot.STAGE_ORDER,
        deal=hubspot.deal,
        deal_id=hubspot.DEAL_ID,
        lead=None,
        lead_id=hubspot.CONTACT_ID,
        person=hubspot.contact,
        person_id=hubspot.CONTACT_ID,
        columns=hubspot.COLUMNS,
    ),
    zendesk_sell.NAME: Crm(
        name=zendesk_sell.NAME,
        stage_order=zendesk_sell.STAGE_ORDER,
        deal=zendesk_sell.deal,
        deal_id=zendesk_sell.DEAL_ID,
        lead=zendesk_sell.lead,
        lead_id=zendesk_sell.LEAD_ID,
        person=zendesk_sell.person,
        person_id="ID",
        columns=zendesk_sell.COLUMNS,
        is_organisation="Is Organization",
    ),
}
