"""From import rows to the typed commands that record them: pipelines first, then each deal's history in business
time, each command under an idempotency key derived from (CRM, record id, step), so a second run appends nothing."""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from collections.abc import Iterable, Mapping
from decimal import Decimal

import msgspec

from events import commands as cmd
from events.ids import derived_id
from events.types import DealOpened, LeadCaptured, StageDefinition, check_amounts
from services.imports.rows import DealRow, LeadRow, RowProblem

NOT_GIVEN = "not given"
"""The lost reason of a lost deal whose export names none (a loss always has a reason here)."""


class Step(msgspec.Struct, frozen=True):
    """One command and the idempotency key that makes it land once."""

    key: str
    command: cmd.Command


class Record(msgspec.Struct, frozen=True, kw_only=True):
    """One row's commands, in order; the first refusal stops the rest of its row."""

    file: str
    row: int
    record_id: str
    aggregate_id: str
    steps: list[Step] = []
    capture: cmd.NewLead | None = None


class Plan(msgspec.Struct, kw_only=True):
    """Everything an import would write, and every row it refuses."""

    crm: str
    pipelines: list[Step] = []
    deals: list[Record] = []
    leads: list[Record] = []
    problems: list[RowProblem] = []
    people: int = 0
    organisations: int = 0


def slug(text: str) -> str:
    """A Dealstream id made of a name: ASCII letters, digits and ``-`` (``Contact Made`` -> ``contact-made``)."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    made = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")[:48]
    return made or "x-" + derived_id(text)[:8]


def marketing_id(text: str | None) -> str | None:
    """A source name as a marketing id (``Web forms`` -> ``web-forms``), None if nothing of it is ASCII."""
    if not text:
        return None
    made = slug(text)
    return None if made.startswith("x-") else made


def pipeline_id(crm: str, name: str, mapped: dict[str, str]) -> str:
    """The Dealstream pipeline a CRM pipeline goes to: a mapped one, else its own ``<crm>-<name>``."""
    return mapped.get(name) or f"{crm}-{slug(name)}"[:64]


def stage_order(deals: Iterable[DealRow], known: tuple[str, ...]) -> dict[str, list[str]]:
    """Each pipeline's stage names: the CRM's known order first, unknown stages after in order of appearance."""
    seen: dict[str, list[str]] = {}
    for deal in deals:
        names = seen.setdefault(deal.pipeline, [])
        names.extend(e.stage for e in deal.entered if e.stage and e.stage not in names)
    rank = {name.lower(): n for n, name in enumerate(known)}
    return {
        p: sorted(names, key=lambda s: (rank.get(s.lower(), len(known)), names.index(s))) for p, names in seen.items()
    }


def _defined(crm: str, pipelines: dict[str, list[str]], deals: list[DealRow], mapped: dict[str, str]) -> list[Step]:
    steps = []
    for name, stages in pipelines.items():
        if name in mapped:
            continue  # an existing Dealstream pipeline: its stages are the ones it has
        pid = pipeline_id(crm, name, mapped)
        since = min(d.entered[0].at for d in deals if d.pipeline == name)
        n = len(stages)
        definitions = [
            StageDefinition(id=slug(s), name=s[:200], probability=round((i + 1) / (n + 1), 2))
            for i, s in enumerate(stages)
        ]
        key = f"import:{crm}:pipeline:{pid}:" + derived_id(*(d.id for d in definitions))
        # Business time: in force since the first imported deal entered it, so its history weighs with these stages.
        steps.append(
            Step(key, cmd.DefinePipeline(pipeline_id=pid, name=name[:200], stages=definitions, occurred_at=since))
        )
    return steps


def _checked(event: msgspec.Struct) -> None:
    # The same strict checks an API body gets: pattern, length and amount limits, before anything is written.
    msgspec.json.decode(msgspec.json.encode(event), type=type(event))
    check_amounts(event)


def _deal_steps(crm: str, deal: DealRow, deal_id: str, pid: str, first: str | None) -> list[Step]:
    key = f"import:{crm}:deal:{deal.record_id}"
    stage_ids = [slug(e.stage) if e.stage else first for e in deal.entered]
    opened = cmd.OpenDeal(
        deal_id=deal_id,
        name=deal.name[:200],
        pipeline_id=pid,
        stage=stage_ids[0],
        amount=deal.amount if deal.amount is not None else Decimal(0),
        currency=deal.currency,
        owner=deal.owner[:200] if deal.owner else None,
        expected_close_date=deal.expected_close_date,
        occurred_at=deal.entered[0].at,
    )
    _checked(
        DealOpened(
            name=opened.name,
            pipeline_id=pid,
            stage=opened.stage or "first",
            amount=opened.amount,
            currency=opened.currency,
            owner=opened.owner,
        )
    )
    steps = [Step(f"{key}:opened", opened)]
    current = stage_ids[0]
    for n, (entry, stage) in enumerate(zip(deal.entered[1:], stage_ids[1:], strict=True), start=1):
        if stage is not None and stage != current:
            steps.append(Step(f"{key}:stage:{n}", cmd.MoveStage(deal_id=deal_id, to_stage=stage, occurred_at=entry.at)))
            current = stage
    if deal.outcome == "won":
        steps.append(Step(f"{key}:won", cmd.WinDeal(deal_id=deal_id, occurred_at=deal.closed_at)))
    elif deal.outcome in ("lost", "unqualified"):
        reason = deal.reason or NOT_GIVEN
        # Dealstream has one closed-lost outcome: an unqualified deal is lost, its reason says it was unqualified.
        reason = f"Unqualified: {reason}" if deal.outcome == "unqualified" else reason
        steps.append(
            Step(f"{key}:lost", cmd.LoseDeal(deal_id=deal_id, reason=reason[:200], occurred_at=deal.closed_at))
        )
    return steps


def plan_deals(
    plan: Plan,
    file: str,
    deals: list[DealRow],
    known: tuple[str, ...],
    mapped: dict[str, str],
    columns: Mapping[str, str] | None = None,
) -> None:
    """Add the pipelines the deals need (unless mapped to existing ones) and each deal's commands to ``plan``;
    ``columns`` names the file's column of a Dealstream field a refused row is reported under."""
    pipelines = stage_order(deals, known)
    plan.pipelines.extend(_defined(plan.crm, pipelines, deals, mapped))
    for deal in deals:
        pid = pipeline_id(plan.crm, deal.pipeline, mapped)
        first = None if deal.pipeline in mapped or not pipelines[deal.pipeline] else slug(pipelines[deal.pipeline][0])
        deal_id = derived_id("import", plan.crm, "deal", deal.record_id)
        try:
            steps = _deal_steps(plan.crm, deal, deal_id, pid, first)
        except (msgspec.ValidationError, ValueError) as exc:
            column = _column(exc, columns)
            plan.problems.append(
                RowProblem(file=file, row=deal.row, column=column, reason=str(exc), record_id=deal.record_id)
            )
            continue
        plan.deals.append(Record(file=file, row=deal.row, record_id=deal.record_id, aggregate_id=deal_id, steps=steps))


def _column(exc: Exception, columns: Mapping[str, str] | None) -> str:
    # msgspec names the field as `$.currency`, check_amounts as `amount`: the file's column if known, else the field.
    found = re.search(r"`\$\.(\w+)", str(exc)) or re.search(r"`(\w+)`", str(exc))
    field = found[1] if found else "row"
    return (columns or {}).get(field, field)


def _captured(lead: LeadRow) -> LeadCaptured:
    return LeadCaptured(
        email=lead.email.lower() if lead.email else None,
        phone=lead.phone,
        first_name=lead.first_name,
        last_name=lead.last_name,
        full_name=lead.full_name,
        company=lead.company,
        job_title=lead.job_title,
        source_ref=lead.record_id if re.fullmatch(r"[!-~]{1,128}", lead.record_id) else None,
        source=marketing_id(lead.source),
    )


def plan_leads(
    plan: Plan, file: str, leads: list[LeadRow], now: dt.datetime, columns: Mapping[str, str] | None = None
) -> None:
    """Add each lead's capture at its creation time, its owner and, if unqualified there, its disqualification."""
    for lead in leads:
        lead_id = derived_id("import", plan.crm, "lead", lead.record_id)
        key = f"import:{plan.crm}:lead:{lead.record_id}"
        try:
            captured = _captured(lead)
            _checked(captured)
        except (msgspec.ValidationError, ValueError) as exc:
            plan.problems.append(
                RowProblem(
                    file=file, row=lead.row, column=_column(exc, columns), reason=str(exc), record_id=lead.record_id
                )
            )
            continue
        steps = []
        if lead.owner:
            steps.append(
                Step(
                    f"{key}:owner", cmd.AssignLead(lead_id=lead_id, owner=lead.owner[:200], occurred_at=lead.created_at)
                )
            )
        if lead.unqualified_reason:
            reason = lead.unqualified_reason[:200]
            steps.append(
                Step(
                    f"{key}:unqualified",
                    cmd.DisqualifyLead(lead_id=lead_id, reason=reason, occurred_at=lead.created_at),
                )
            )
        capture = cmd.NewLead(lead_id, captured, min(lead.created_at, now))
        plan.leads.append(
            Record(
                file=file, row=lead.row, record_id=lead.record_id, aggregate_id=lead_id, steps=steps, capture=capture
            )
        )
