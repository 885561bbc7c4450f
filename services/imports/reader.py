"""The shared CSV reader: encoding (BOM, UTF-16), delimiter, repeated headers, decimal commas, zone-less times."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from decimal import Decimal, InvalidOperation
from zoneinfo import ZoneInfo

import msgspec

MAX_FILE_BYTES = 64 * 1024 * 1024
"""A bigger export is refused before parsing: it is read into memory whole."""
_DELIMITERS = (",", ";", "\t")
_DATETIME_FORMATS = (
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%d %H:%M",
    "%d.%m.%Y %H:%M:%S",
    "%d.%m.%Y %H:%M",
    "%Y/%m/%d %H:%M:%S",
    "%Y/%m/%d %H:%M",
)
_DATE_FORMATS = ("%Y-%m-%d", "%d.%m.%Y", "%Y/%m/%d")
_GROUPING = re.compile(r"[\s\u00a0\u202f']")


class CellError(ValueError):
    """A cell that cannot be read: ``column`` names its header, ``reason`` what is wrong."""

    def __init__(self, column: str, reason: str) -> None:
        super().__init__(f"{column}: {reason}")
        self.column = column
        self.reason = reason


class Table(msgspec.Struct, frozen=True, kw_only=True):
    """A file's header and its data rows, each with its spreadsheet row number (the header is row 1)."""

    header: list[str]
    rows: list[tuple[int, dict[str, str]]]
    delimiter: str
    encoding: str


def decode(data: bytes) -> tuple[str, str]:
    """The text and the encoding it was in: UTF-8 with or without a BOM, or UTF-16 with a BOM."""
    if len(data) > MAX_FILE_BYTES:
        raise CellError("file", f"is larger than {MAX_FILE_BYTES} bytes")
    encoding = "utf-8"
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        encoding = "utf-16"
    elif data.startswith(b"\xef\xbb\xbf"):
        encoding = "utf-8-sig"
    try:
        return data.decode(encoding), encoding
    except UnicodeDecodeError as exc:
        raise CellError("file", f"is neither UTF-8 nor UTF-16 (byte {exc.start}): save it as CSV UTF-8") from exc


def _delimiter(first_line: str) -> str:
    # The header row names the columns; the separator is the character it holds most of, outside quotes.
    outside = re.sub(r'"[^"]*"', "", first_line)
    return max(_DELIMITERS, key=outside.count)


def _unique(header: list[str]) -> list[str]:
    # A custom field named like a system one exports as a second column of that name: the first keeps the name.
    seen: dict[str, int] = {}
    names = []
    for raw in header:
        name = raw.strip()
        seen[name] = seen.get(name, 0) + 1
        names.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return names


def read_table(data: bytes) -> Table:
    """Parse a CSV export; blank lines and a repeated header row are skipped, not reported."""
    text, encoding = decode(data)
    first = text.split("\n", 1)[0]
    delimiter = _delimiter(first)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        raw_header = next(reader)
        header = _unique(raw_header)
        rows: list[tuple[int, dict[str, str]]] = []
        for number, cells in enumerate(reader, start=2):
            if not any(c.strip() for c in cells) or [c.strip() for c in cells] == [h.strip() for h in raw_header]:
                continue
            rows.append((number, {name: (cells[i].strip() if i < len(cells) else "") for i, name in enumerate(header)}))
    except StopIteration:
        raise CellError("file", "is empty") from None
    except csv.Error as exc:
        # A NUL byte, a cell over the csv module's field limit: not a CSV file as a CRM writes it.
        raise CellError("file", f"is not a readable CSV file (line {reader.line_num}): {exc}") from None
    return Table(header=header, rows=rows, delimiter=delimiter, encoding=encoding)


def amount(column: str, text: str) -> Decimal | None:
    """``30350.5``, ``26550,5``, ``1 234,50``, ``1,234.50`` or ``1.234,50``; None when empty."""
    if not text:
        return None
    cleaned = _GROUPING.sub("", text)
    if "," in cleaned and "." in cleaned:
        # The last separator is the decimal one; the other groups thousands.
        grouping = "." if cleaned.rfind(",") > cleaned.rfind(".") else ","
        cleaned = cleaned.replace(grouping, "")
    cleaned = cleaned.replace(",", ".")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        raise CellError(column, f"is not an amount: {text[:40]!r}") from None
    if not value.is_finite() or value < 0:
        raise CellError(column, f"must be a positive amount, got {text[:40]!r}")
    return value


def instant(column: str, text: str, zone: ZoneInfo) -> dt.datetime | None:
    """An ISO 8601 time with its offset, or a zone-less one (``2025-05-26 09:27``, ``26.05.2025 09:27``, a bare
    date at midnight) taken in ``zone``; None when empty."""
    if not text:
        return None
    parsed: dt.datetime | None = None
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        for fmt in (*_DATETIME_FORMATS, *_DATE_FORMATS):
            try:
                parsed = dt.datetime.strptime(text, fmt)
                break
            except ValueError:
                continue
    if parsed is None:
        raise CellError(column, f"is not a date and time: {text[:40]!r}")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=zone)
    try:
        return parsed.astimezone(dt.UTC)
    except OverflowError:
        raise CellError(column, f"is out of range: {text[:40]!r}") from None


def day(column: str, text: str) -> dt.date | None:
    """A calendar date (``2025-04-30``, ``30.04.2025``; a time after it is ignored); None when empty."""
    if not text:
        return None
    head = text.split(" ")[0].split("T")[0]
    for fmt in _DATE_FORMATS:
        try:
            return dt.datetime.strptime(head, fmt).date()
        except ValueError:
            continue
    raise CellError(column, f"is not a date: {text[:40]!r}")
