"""Pipedrive's deals, people and leads exports (``Deal - Title`` style headers) as typed import rows."""

from __future__ import annotations

from services.imports.reader import CellError
from services.imports.rows import Cells, DealRow, LeadRow, Outcome, StageEntry

NAME = "pipedrive"
STAGE_ORDER = (
    "Qualified",
    "Contact Made",
    "Demo Scheduled",
    "Proposal Made",
    "Negotiations Started",
    "Evaluation",
    "Contract Sent",
)
"""Pipedrive's default stages in pipeline order: the export names a deal's stage, never the pipeline's order."""
DEAL_ID = "Deal - ID"
LEAD_ID = "Lead - ID"
PERSON_ID = "Person - ID"
_STATUS: dict[str, Outcome] = {"open": "open", "won": "won", "lost": "lost"}

COLUMNS = {
    "name": "Deal - Title",
    "amount": "Deal - Value",
    "currency": "Deal - Currency of Value",
    "owner": "Deal - Owner",
    "email": "Person - Email - Work",
    "full_name": "Lead - Contact person",
    "company": "Lead - Organization",
}
"""Where a Dealstream field comes from, to name the column of a refused row."""


def deal(row: int, c: Cells) -> DealRow:
    """A deal: opened at ``Deal created``, in its current stage since ``Last stage change``, won or lost at its
    ``Won time`` / ``Lost time`` (else ``Deal closed on``)."""
    status = c.required("Deal - Status")
    outcome = _STATUS.get(status.lower())
    if outcome is None:
        raise CellError("Deal - Status", f"must be Open, Won or Lost, got {status[:40]!r}")
    created = c.required_instant("Deal - Deal created", "Deal - Deal created on", "Deal - Add time")
    stage = c.required("Deal - Stage")
    entered = [StageEntry(stage, created)]
    changed = c.instant("Deal - Last stage change")
    if changed is not None and changed > created:
        entered = [StageEntry("", created), StageEntry(stage, changed)]  # "": the pipeline's first stage
    closed = None
    if outcome != "open":
        closed = (
            c.instant("Deal - Won time" if outcome == "won" else "Deal - Lost time")
            or c.instant("Deal - Deal closed on", "Deal - Close time")
            or c.required_instant("Deal - Won time" if outcome == "won" else "Deal - Lost time")
        )
    return DealRow(
        row=row,
        record_id=c.required(DEAL_ID),
        name=c.required("Deal - Title"),
        pipeline=c.text("Deal - Pipeline") or "Pipeline",
        entered=entered,
        outcome=outcome,
        amount=c.amount("Deal - Value"),
        currency=c.required("Deal - Currency of Value", "Deal - Currency").upper(),
        owner=c.text("Deal - Owner"),
        closed_at=closed,
        reason=c.text("Deal - Lost reason") if outcome == "lost" else None,
        expected_close_date=c.day("Deal - Expected close date"),
        contact=c.text("Deal - Contact person"),
        contact_id=c.text("Deal - Contact person ID"),
        organization=c.text("Deal - Organization"),
    )


def lead(row: int, c: Cells) -> LeadRow:
    """A Leads Inbox lead, captured at ``Lead created``; its person's name and e-mail as the lead's."""
    return LeadRow(
        row=row,
        record_id=c.required(LEAD_ID),
        created_at=c.required_instant("Lead - Lead created", "Lead - Lead created on"),
        email=c.text("Person - Email - Work", "Person - Email"),
        full_name=c.text("Lead - Contact person"),
        company=c.text("Lead - Organization"),
        source=c.text("Lead - Source"),
        owner=c.text("Lead - Owner"),
    )


def person(row: int, c: Cells) -> LeadRow:
    """A person, kept as a lead captured at ``Person created`` (no contact aggregate exists yet)."""
    return LeadRow(
        row=row,
        record_id=c.required(PERSON_ID),
        created_at=c.required_instant("Person - Person created", "Person - Add time"),
        email=c.text("Person - Email - Work", "Person - Email"),
        phone=c.text("Person - Phone - Work", "Person - Phone"),
        first_name=c.text("Person - First name"),
        last_name=c.text("Person - Last name"),
        full_name=c.text("Person - Name"),
        company=c.text("Person - Organization"),
        owner=c.text("Person - Owner"),
    )
