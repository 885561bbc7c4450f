"""CSV exports of the read models: deals from the board, one row a deal, for a spreadsheet or another CRM."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator

from projections.board import DealRow

DEAL_COLUMNS = (
    "deal_id",
    "name",
    "pipeline_id",
    "stage",
    "status",
    "amount",
    "currency",
    "owner",
    "opened_at",
    "stage_entered_at",
    "closed_at",
    "lost_reason",
    "last_activity_at",
    "next_task_due_at",
)
BOM = "\ufeff".encode()
"""Excel reads a CSV as UTF-8 only when it starts with this byte-order mark."""


def _line(cells: list[object]) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow(cells)
    return out.getvalue().encode()


def deal_cells(d: DealRow) -> list[object]:
    """One deal's cells in :data:`DEAL_COLUMNS` order (times ISO 8601 UTC, amounts with a point)."""
    times = (d.opened_at, d.stage_entered_at, d.closed_at)
    when = [t.isoformat().replace("+00:00", "Z") if t else "" for t in times]
    later = [t.isoformat().replace("+00:00", "Z") if t else "" for t in (d.last_activity_at, d.next_task_due_at)]
    return [
        d.deal_id,
        d.name,
        d.pipeline_id,
        d.stage,
        d.status,
        f"{d.amount:f}",
        d.currency,
        d.owner or "",
        *when,
        d.lost_reason or "",
        *later,
    ]


async def deals_csv(rows: AsyncIterator[DealRow], bom: bool = False) -> AsyncIterator[bytes]:
    """The header, then a line a deal (RFC 4180: CRLF, quoted where needed); ``bom`` for Excel."""
    yield (BOM if bom else b"") + _line(list(DEAL_COLUMNS))
    async for row in rows:
        yield _line(deal_cells(row))
