"""``dealstream import <crm>``: read the export files, dry-run or append through the handlers with a progress bar,
and write the rejected rows as CSV or JSON."""

from __future__ import annotations

import csv
import datetime as dt
import io
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from events.config import NatsSettings, connect
from events.ids import InvalidId, check_id, uuid7
from events.ledger import Context, Ledger
from events.personal import Vault
from events.store import EventStore
from services.imports.crms import FileKind
from services.imports.rows import RowProblem
from services.imports.runner import Report, read_plan, run, steps_of, summary

PROBLEM_COLUMNS = ("file", "row", "column", "reason", "record_id")


class UsageError(ValueError):
    """A bad option: the message says which and why."""


def zone(name: str) -> ZoneInfo:
    """The zone zone-less cells are in (``Europe/Warsaw``)."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise UsageError(f"--zone: no time zone {name!r} (an IANA name such as Europe/Warsaw)") from None


def pipeline_map(pairs: list[str]) -> dict[str, str]:
    """``--pipeline-map "Sales pipeline=default"``: a CRM pipeline's deals go to an existing Dealstream pipeline."""
    mapped = {}
    for pair in pairs:
        name, sep, target = pair.partition("=")
        if not sep or not name.strip() or not target.strip():
            raise UsageError(f"--pipeline-map: expected 'CRM pipeline name=dealstream pipeline id', got {pair!r}")
        try:
            mapped[name.strip()] = check_id(target.strip(), "--pipeline-map")
        except InvalidId as exc:
            raise UsageError(str(exc)) from None
    return mapped


def problems_csv(problems: list[RowProblem]) -> str:
    """The rejected rows as CSV, one a line."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(PROBLEM_COLUMNS)
    writer.writerows([p.file, p.row, p.column, p.reason, p.record_id or ""] for p in problems)
    return out.getvalue()


def write_report(report: Report, path: Path) -> None:
    """The rejected rows as CSV (``.csv``) or the whole report as JSON (anything else)."""
    if path.suffix.lower() == ".csv":
        path.write_text(problems_csv(report.rejected), encoding="utf-8")
    else:
        path.write_bytes(msgspec.json.format(msgspec.json.encode(report)) + b"\n")


@contextmanager
def _bar(total: int, shown: bool) -> Iterator[Progress]:
    columns = (TextColumn("importing"), BarColumn(), MofNCompleteColumn(), TextColumn("records"), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), disable=not shown) as progress:
        yield progress


async def import_files(
    crm: str,
    files: dict[FileKind, Path],
    settings: NatsSettings,
    zone_name: str = "UTC",
    mapping: list[str] | None = None,
    dry_run: bool = False,
    progress: bool = True,
) -> Report:
    """Import ``files`` of ``crm``: each file is read and checked first; ``dry_run`` stops there."""
    plan = read_plan(
        crm,
        {kind: (str(path), path.read_bytes()) for kind, path in files.items()},
        zone(zone_name),
        pipeline_map(mapping or []),
    )
    if dry_run:
        return summary(plan, dry_run=True)
    nc, js = await connect(settings, "dealstream-import")
    try:
        ledger = Ledger(EventStore(nc, js, settings.naming, settings.publish_timeout), Vault(js, settings.naming))
        now = dt.datetime.now(dt.UTC)
        ctx = Context(actor=f"import:{crm}", source="system", correlation_id=uuid7(), now=now)
        with _bar(steps_of(plan), progress and sys.stderr.isatty()) as bar:
            task = bar.add_task("import", total=steps_of(plan))
            return await run(plan, ledger, ctx, advance=lambda: bar.advance(task))
    finally:
        await nc.drain()


def printed(report: Report) -> str:
    """A person's summary of the report."""
    verb = "would import" if report.dry_run else "imported"
    lines = [
        f"{report.crm}: {verb} {report.deals} deals, {report.leads} leads, {report.pipelines} pipelines "
        f"(read {report.people_read} people, {report.organisations_read} organisations: not imported, no contact "
        "records yet)",
    ]
    if not report.dry_run:
        lines.append(f"appended {report.appended} events, {report.already_there} already there")
    lines.append(f"rejected rows: {len(report.rejected)}")
    lines.extend(f"  {p.file}:{p.row} {p.column}: {p.reason}" for p in report.rejected[:20])
    if len(report.rejected) > 20:
        lines.append(f"  ... {len(report.rejected) - 20} more (--report FILE writes them all)")
    return "\n".join(lines)
