"""Zendesk Sell's deals, contacts and leads exports (Title Case forms of the Core API attributes)."""

from __future__ import annotations

from services.imports.reader import CellError
from services.imports.rows import Cells, DealRow, LeadRow, Outcome, StageEntry

NAME = "zendesk-sell"
STAGE_ORDER = ("Incoming", "Qualified", "Quote", "Closure")
"""Sell's default open stages in order."""
_CLOSED: dict[str, Outcome] = {"won": "won", "lost": "lost", "unqualified": "unqualified"}
DEAL_ID = "ID"
LEAD_ID = "ID"

COLUMNS = {
    "name": "Name",
    "amount": "Value",
    "currency": "Currency",
    "owner": "Owner",
    "email": "Email",
    "phone": "Phone",
    "company": "Organization Name",
    "job_title": "Title",
}
"""Where a Dealstream field comes from, to name the column of a refused row."""


def deal(row: int, c: Cells) -> DealRow:
    """A deal started at ``Added At``; ``Last Stage Change At`` is when it entered its stage, or closed for a Won,
    Lost or Unqualified one (whose last open stage the export does not say: it goes through the first)."""
    stage = c.required("Stage")
    added = c.required_instant("Added At", "Created At")
    changed = c.instant("Last Stage Change At") or added
    outcome = _CLOSED.get(stage.lower(), "open")
    if outcome == "open":
        entered = (
            [StageEntry(stage, added)] if changed <= added else [StageEntry("", added), StageEntry(stage, changed)]
        )
    else:
        entered = [StageEntry("", added)]
    reason = None
    if outcome == "lost":
        reason = c.text("Loss Reason")
    elif outcome == "unqualified":
        reason = c.text("Unqualified Reason")
    if outcome != "open" and changed < added:
        raise CellError("Last Stage Change At", "is before the deal's Added At")
    return DealRow(
        row=row,
        record_id=c.required(DEAL_ID),
        name=c.required("Name"),
        pipeline=c.text("Pipeline") or "Sales Pipeline",
        entered=entered,
        outcome=outcome,
        amount=c.amount("Value"),
        currency=c.required("Currency").upper(),
        owner=c.text("Owner"),
        closed_at=changed if outcome != "open" else None,
        reason=reason,
        expected_close_date=c.day("Estimated Close Date"),
        contact=c.text("Primary Contact"),
        contact_id=c.text("Primary Contact ID"),
        organization=c.text("Organization"),
    )


def lead(row: int, c: Cells) -> LeadRow:
    """A lead captured at ``Created At``; an Unqualified one is disqualified with its reason."""
    unqualified = (c.text("Status") or "").lower() == "unqualified"
    return LeadRow(
        row=row,
        record_id=c.required(LEAD_ID),
        created_at=c.required_instant("Created At"),
        email=c.text("Email"),
        phone=c.text("Phone", "Mobile"),
        first_name=c.text("First Name"),
        last_name=c.text("Last Name"),
        full_name=c.text("Name"),
        company=c.text("Organization Name"),
        job_title=c.text("Title"),
        source=c.text("Source"),
        owner=c.text("Owner"),
        unqualified_reason=(c.text("Unqualified Reason") or "Unqualified") if unqualified else None,
    )


def person(row: int, c: Cells) -> LeadRow:
    """A person of the contacts list, kept as a lead; organisations are skipped by the caller."""
    return LeadRow(
        row=row,
        record_id=c.required("ID"),
        created_at=c.required_instant("Created At"),
        email=c.text("Email"),
        phone=c.text("Phone", "Mobile"),
        first_name=c.text("First Name"),
        last_name=c.text("Last Name"),
        full_name=c.text("Name"),
        company=c.text("Organization Name"),
        job_title=c.text("Title"),
        owner=c.text("Owner"),
    )
