"""Read a CRM's export files into a plan, and run it through the application layer (``events/handlers.py``)."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import Callable
from zoneinfo import ZoneInfo

import msgspec

from events import commands as cmd
from events import handlers
from events.aggregates import Rejected, fold_pipeline
from events.ids import derived_id
from events.ledger import Accepted, Context, Ledger
from events.store import ConcurrencyError
from services.imports.crms import CRMS, FileKind
from services.imports.plan import Plan, Record, Step, plan_deals, plan_leads
from services.imports.reader import CellError, read_table
from services.imports.rows import RowProblem, map_rows

PARALLEL = 16
"""Records imported at once: deals are independent aggregates, each one's commands stay in order."""


class Report(msgspec.Struct, kw_only=True):
    """What an import did (or, dry, would do): counts, and every refused row with its reason."""

    crm: str
    dry_run: bool
    pipelines: int = 0
    deals: int = 0
    leads: int = 0
    people_read: int = 0
    organisations_read: int = 0
    appended: int = 0
    already_there: int = 0
    rejected: list[RowProblem] = []


def read_plan(
    crm: str,
    files: dict[FileKind, tuple[str, bytes]],
    zone: ZoneInfo,
    pipeline_map: dict[str, str] | None = None,
    now: dt.datetime | None = None,
) -> Plan:
    """Parse ``files`` (kind -> (name, bytes)) of ``crm`` into a plan; unreadable rows become its problems."""
    spec = CRMS[crm]
    plan = Plan(crm=crm)
    mapped = pipeline_map or {}
    now = now or dt.datetime.now(dt.UTC)
    # A day of slack: a CRM's local "today" may be ahead of UTC, and a zone setting may be off by hours.
    latest = now + dt.timedelta(days=1)
    for kind, (name, data) in files.items():
        try:
            table = read_table(data)
        except CellError as exc:
            plan.problems.append(RowProblem(file=name, row=0, column=exc.column, reason=exc.reason))
            continue
        if kind == "deals":
            deals, problems = map_rows(table, name, zone, spec.deal, spec.deal_id, latest)
            plan.problems.extend(problems)
            plan_deals(plan, name, deals, spec.stage_order, mapped, spec.columns)
        elif kind == "leads" and spec.lead is not None:
            leads, problems = map_rows(table, name, zone, spec.lead, spec.lead_id, latest)
            plan.problems.extend(problems)
            plan_leads(plan, name, leads, now, spec.columns)
        else:
            # People are read and checked, not written: contacts have no aggregate yet (docs/import-export.md).
            marker = spec.is_organisation
            orgs = [r for r in table.rows if marker and r[1].get(marker, "").lower() in ("true", "1", "yes")]
            people, problems = map_rows(
                msgspec.structs.replace(table, rows=[r for r in table.rows if r not in orgs]),
                name,
                zone,
                spec.person,
                spec.person_id,
                latest,
            )
            plan.problems.extend(problems)
            plan.people += len(people)
            plan.organisations += len(orgs)
    plan.problems.sort(key=lambda p: (p.file, p.row))
    return plan


def summary(plan: Plan, dry_run: bool) -> Report:
    """The report of a plan before anything runs."""
    return Report(
        crm=plan.crm,
        dry_run=dry_run,
        pipelines=len(plan.pipelines),
        deals=len(plan.deals),
        leads=len(plan.leads),
        people_read=plan.people,
        organisations_read=plan.organisations,
        rejected=list(plan.problems),
    )


def steps_of(plan: Plan) -> int:
    """How many units the progress bar counts: pipelines and records."""
    return len(plan.pipelines) + len(plan.deals) + len(plan.leads)


async def run(plan: Plan, ledger: Ledger, ctx: Context, advance: Callable[[], None] = lambda: None) -> Report:
    """Append the plan: pipelines first, then the records; a command that already landed (same key) is counted as
    already there, a refused one ends its record with a problem."""
    report = summary(plan, dry_run=False)
    for step in plan.pipelines:
        merged = await _kept_stages(ledger, step)
        if merged is None:
            report.already_there += 1
        else:
            _count(report, (await _handle(ledger, ctx, merged)).duplicate)
        advance()
    records = await _in_present_stages(plan, ledger, report)
    limit = asyncio.Semaphore(PARALLEL)

    async def one(record: Record) -> None:
        async with limit:
            await _record(record, ledger, ctx, report)
            advance()

    await asyncio.gather(*(one(r) for r in records))
    report.rejected.sort(key=lambda p: (p.file, p.row))
    return report


async def _kept_stages(ledger: Ledger, step: Step) -> Step | None:
    """The definition with the pipeline's present stages first (a later file must not drop a stage that earlier
    deals are in), or None when the pipeline has every stage already."""
    define = step.command
    assert isinstance(define, cmd.DefinePipeline)
    present = fold_pipeline(h.envelope for h in await ledger.history("pipeline", define.pipeline_id))
    if not present.exists:
        return step
    missing = [s for s in define.stages if not present.has_stage(s.id)]
    if not missing:
        return None
    stages = [*present.stages, *missing]
    key = f"{step.key.rsplit(':', 1)[0]}:{derived_id(*(s.id for s in stages))}"
    return Step(key, msgspec.structs.replace(define, stages=stages))


def _stages_named(record: Record) -> tuple[str, list[str]]:
    opened = record.steps[0].command
    assert isinstance(opened, cmd.OpenDeal)
    moves = [s.command.to_stage for s in record.steps if isinstance(s.command, cmd.MoveStage)]
    return opened.pipeline_id, [*([opened.stage] if opened.stage else []), *moves]


async def _in_present_stages(plan: Plan, ledger: Ledger, report: Report) -> list[Record]:
    """The records to run: a deal of a mapped (existing) pipeline naming a stage it lacks is refused before any
    of its commands, so no deal is left half-imported."""
    defined = {s.command.pipeline_id for s in plan.pipelines if isinstance(s.command, cmd.DefinePipeline)}
    stages: dict[str, set[str]] = {}
    kept = []
    for record in plan.deals:
        pipeline, named = _stages_named(record)
        if pipeline not in defined and pipeline not in stages:
            present = fold_pipeline(h.envelope for h in await ledger.history("pipeline", pipeline))
            stages[pipeline] = {s.id for s in present.stages}
        missing = [s for s in named if pipeline in stages and s not in stages[pipeline]]
        if missing:
            reason = f"pipeline {pipeline!r} has no stage {missing[0]!r}" if stages[pipeline] else "no such pipeline"
            report.rejected.append(
                RowProblem(file=record.file, row=record.row, column="stage", reason=reason, record_id=record.record_id)
            )
        else:
            kept.append(record)
    return [*kept, *plan.leads]


async def _handle(ledger: Ledger, ctx: Context, step: Step) -> Accepted:
    return await handlers.handle(ledger, dataclasses.replace(ctx, idempotency_key=step.key), step.command)


def _count(report: Report, duplicate: bool) -> None:
    if duplicate:
        report.already_there += 1
    else:
        report.appended += 1


async def _record(record: Record, ledger: Ledger, ctx: Context, report: Report) -> None:
    try:
        if record.capture is not None:
            [accepted] = await handlers.capture_leads(ledger, ctx, cmd.CaptureLeads(leads=[record.capture]))
            _count(report, accepted.duplicate)
        for step in record.steps:
            _count(report, (await _handle(ledger, ctx, step)).duplicate)
    except (Rejected, ConcurrencyError) as exc:
        field = exc.field if isinstance(exc, Rejected) else "version"
        reason = exc.reason if isinstance(exc, Rejected) else str(exc)
        report.rejected.append(
            RowProblem(file=record.file, row=record.row, column=field, reason=reason, record_id=record.record_id)
        )
