"""HubSpot's deals and contacts exports (property labels as headers, ``Date entered "<stage> (<pipeline>)"``)."""

from __future__ import annotations

import re

from services.imports.reader import CellError
from services.imports.rows import Cells, DealRow, LeadRow, Outcome, StageEntry

NAME = "hubspot"
STAGE_ORDER = (
    "Appointment Scheduled",
    "Qualified To Buy",
    "Presentation Scheduled",
    "Decision Maker Bought-In",
    "Contract Sent",
)
"""The default Sales Pipeline's open stages in order; a file's own ``Date entered`` columns come first."""
WON_STAGES = frozenset({"closed won"})
LOST_STAGES = frozenset({"closed lost"})
DEAL_ID = "Record ID"
CONTACT_ID = "Record ID"
_ENTERED = re.compile(r'^Date entered "(?P<stage>.+) \((?P<pipeline>.+)\)"$')

COLUMNS = {
    "name": "Deal Name",
    "amount": "Amount",
    "currency": "Currency",
    "owner": "Deal owner",
    "email": "Email",
    "phone": "Phone Number",
}
"""Where a Dealstream field comes from, to name the column of a refused row."""


def entered_columns(header: list[str]) -> list[tuple[str, str, str]]:
    """(column, stage, pipeline) of each ``Date entered "<stage> (<pipeline>)"`` column, in file order."""
    return [(h, m["stage"], m["pipeline"]) for h in header if (m := _ENTERED.match(h))]


def deal(row: int, c: Cells) -> DealRow:
    """A deal: its open stages entered in time order from the stage columns (or created in its current stage),
    won or lost at ``Date entered "Closed Won|Lost"``, else at ``Close Date``."""
    stage = c.required("Deal Stage")
    pipeline = c.text("Pipeline") or "Sales Pipeline"
    created = c.required_instant("Create Date")
    outcome: Outcome = "won" if stage.lower() in WON_STAGES else "lost" if stage.lower() in LOST_STAGES else "open"
    entries: list[StageEntry] = []
    closed = None
    for column, name, in_pipeline in entered_columns(list(c.cells)):
        at = c.instant(column)
        if at is None or in_pipeline != pipeline:
            continue
        if name.lower() in WON_STAGES | LOST_STAGES:
            closed = at if name.lower() == stage.lower() else closed
        else:
            entries.append(StageEntry(name, at))
    entries.sort(key=lambda e: e.at)
    if outcome == "open" and (not entries or entries[-1].stage != stage):
        entries.append(StageEntry(stage, c.instant("Date entered current stage") or created))
    if not entries:
        entries = [StageEntry("", created)]  # closed without stage history: through the pipeline's first stage
    entries[0] = StageEntry(entries[0].stage, min(entries[0].at, created))
    if outcome != "open":
        closed = closed or c.instant("Close Date") or c.required_instant("Date entered current stage")
    reason = c.text("Closed Lost Reason") if outcome == "lost" else None
    if outcome == "lost" and closed is None:
        raise CellError("Close Date", "a lost deal needs a close date")
    return DealRow(
        row=row,
        record_id=c.required(DEAL_ID),
        name=c.required("Deal Name"),
        pipeline=pipeline,
        entered=entries,
        outcome=outcome,
        amount=c.amount("Amount"),
        currency=(c.text("Currency", "Deal Currency Code") or "USD").upper(),
        owner=c.text("Deal owner", "Deal Owner"),
        closed_at=closed,
        reason=reason,
        expected_close_date=c.day("Close Date") if outcome == "open" else None,
        contact=c.text("Associated Contact"),
        contact_id=c.text("Associated Contact IDs"),
    )


def contact(row: int, c: Cells) -> LeadRow:
    """A contact, kept as a lead captured at ``Create Date`` (no contact aggregate exists yet)."""
    return LeadRow(
        row=row,
        record_id=c.required(CONTACT_ID),
        created_at=c.required_instant("Create Date"),
        email=c.text("Email"),
        phone=c.text("Phone Number"),
        first_name=c.text("First Name"),
        last_name=c.text("Last Name"),
        company=c.text("Company Name"),
        job_title=c.text("Job Title"),
        source=c.text("Original Traffic Source", "Original Source"),
        owner=c.text("Contact owner", "Contact Owner"),
    )
