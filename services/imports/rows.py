"""Typed import rows: what each CRM's mapping makes of a CSV row, and what it refuses (row, column, reason)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from decimal import Decimal
from typing import Literal, TypeVar
from zoneinfo import ZoneInfo

import msgspec

from services.imports import reader
from services.imports.reader import CellError, Table

Outcome = Literal["open", "won", "lost", "unqualified"]
T = TypeVar("T")


class StageEntry(msgspec.Struct, frozen=True):
    """An open stage the deal entered, and when (business time)."""

    stage: str
    at: dt.datetime


class DealRow(msgspec.Struct, frozen=True, kw_only=True):
    """One deal as the CRM exported it: its stages entered in order (the first at its creation), its outcome."""

    row: int
    record_id: str
    name: str
    pipeline: str
    entered: list[StageEntry]
    outcome: Outcome
    amount: Decimal | None
    currency: str
    owner: str | None = None
    closed_at: dt.datetime | None = None
    reason: str | None = None
    expected_close_date: dt.date | None = None
    contact: str | None = None
    contact_id: str | None = None
    organization: str | None = None


class LeadRow(msgspec.Struct, frozen=True, kw_only=True):
    """One lead or person as the CRM exported it, captured at its creation time."""

    row: int
    record_id: str
    created_at: dt.datetime
    email: str | None = None
    phone: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    full_name: str | None = None
    company: str | None = None
    job_title: str | None = None
    source: str | None = None
    owner: str | None = None
    unqualified_reason: str | None = None


class RowProblem(msgspec.Struct, frozen=True, kw_only=True):
    """A refused row: where, which column, why."""

    file: str
    row: int
    column: str
    reason: str
    record_id: str | None = None


class Cells:
    """One row's cells by header, read by the first of several spellings that the file has."""

    def __init__(self, cells: dict[str, str], zone: ZoneInfo, latest: dt.datetime | None = None) -> None:
        self.cells = cells
        self.zone = zone
        self.latest = latest

    def column(self, *names: str) -> str:
        """The first of ``names`` the file has (the first name if none: that is the one a problem names)."""
        return next((n for n in names if n in self.cells), names[0])

    def text(self, *names: str) -> str | None:
        """The cell's text, None when empty or absent."""
        return self.cells.get(self.column(*names)) or None

    def required(self, *names: str) -> str:
        """The cell's text; a ``CellError`` when it is empty or the column absent."""
        column = self.column(*names)
        if column not in self.cells:
            raise CellError(column, "the file has no such column")
        value = self.cells[column]
        if not value:
            raise CellError(column, "is empty")
        return value

    def amount(self, *names: str) -> Decimal | None:
        """A decimal with a point or a comma."""
        return reader.amount(self.column(*names), self.cells.get(self.column(*names), ""))

    def instant(self, *names: str) -> dt.datetime | None:
        """A time in UTC, zone-less cells taken in the import's zone; a business time cannot lie in the future."""
        column = self.column(*names)
        return self._past(column, reader.instant(column, self.cells.get(column, ""), self.zone))

    def required_instant(self, *names: str) -> dt.datetime:
        """A time that must be there."""
        column = self.column(*names)
        return self._past(column, reader.instant(column, self.required(*names), self.zone)) or _never()

    def _past(self, column: str, at: dt.datetime | None) -> dt.datetime | None:
        if at is not None and self.latest is not None and at > self.latest:
            raise CellError(column, f"is in the future ({at.isoformat()}): a recorded fact happened already")
        return at

    def day(self, *names: str) -> dt.date | None:
        """A calendar date."""
        return reader.day(self.column(*names), self.cells.get(self.column(*names), ""))


def _never() -> dt.datetime:
    raise AssertionError("required() returned an empty cell")


def map_rows(
    table: Table,
    file: str,
    zone: ZoneInfo,
    make: Callable[[int, Cells], T],
    id_column: str,
    latest: dt.datetime | None = None,
) -> tuple[list[T], list[RowProblem]]:
    """Each row through ``make``; a row it refuses becomes a problem naming its row, column and reason. Times
    after ``latest`` are refused."""
    made: list[T] = []
    problems: list[RowProblem] = []
    for number, cells in table.rows:
        try:
            made.append(make(number, Cells(cells, zone, latest)))
        except CellError as exc:
            problems.append(
                RowProblem(file=file, row=number, column=exc.column, reason=exc.reason, record_id=cells.get(id_column))
            )
    return made, problems
