"""Commands on leads, deals and pipelines. Each decides on the aggregate's state read from the log."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from litestar import Response, Router, post, put
from litestar.params import JSONBody

from events import aggregates as agg
from events.envelope import AggregateType, Envelope
from events.ids import derived_id, uuid7
from events.types import (
    DealOpened,
    Event,
    LeadCaptured,
    LeadDisqualified,
    LeadErased,
    LeadQualified,
    PipelineDefined,
    TaskCompleted,
    TaskScheduled,
    TouchpointLogged,
)
from services.api import schemas
from services.api.common import (
    AggregateIdParam,
    AnyRequest,
    accepted,
    business_time,
    context,
    parse_if_match,
    requires,
    runtime,
)
from services.errors import InputError
from services.ledger import Accepted, Decide


async def _execute(
    request: AnyRequest,
    aggregate_type: AggregateType,
    aggregate_id: str,
    decide: Decide,
    data: schemas.Body,
    if_match_required: bool = False,
) -> Accepted:
    rt = runtime(request)
    ctx = context(request, body=data)
    when = business_time(data.occurred_at, ctx.now, rt.settings.config.max_clock_skew_seconds, "occurred_at")
    if_match = parse_if_match(request, required=if_match_required)
    return await rt.ledger.execute(ctx, aggregate_type, aggregate_id, decide, when, if_match)


def _lead(decide: Callable[[agg.LeadState], Event]) -> Decide:
    return lambda history: decide(agg.fold_lead(history))


# --- leads -------------------------------------------------------------------------------------------


@post("/leads/{lead_id:str}/assign", status_code=202, tags=["leads"], guards=[requires("leads:write")])
async def assign_lead(
    request: AnyRequest, lead_id: AggregateIdParam, data: JSONBody[schemas.AssignLead]
) -> Response[Any]:
    """Give a lead an owner (a manual assignment always wins over routing rules)."""
    decide = _lead(lambda s: agg.assign_lead(s, data.owner))
    return accepted(await _execute(request, "lead", lead_id, decide, data))


@post("/leads/{lead_id:str}/qualify", status_code=202, tags=["leads"], guards=[requires("leads:write")])
async def qualify_lead(
    request: AnyRequest, lead_id: AggregateIdParam, data: JSONBody[schemas.QualifyLead]
) -> Response[Any]:
    event = LeadQualified(reason=data.reason, score=data.score)
    decide = _lead(lambda s: agg.qualify_lead(s, event))
    return accepted(await _execute(request, "lead", lead_id, decide, data))


@post("/leads/{lead_id:str}/disqualify", status_code=202, tags=["leads"], guards=[requires("leads:write")])
async def disqualify_lead(
    request: AnyRequest, lead_id: AggregateIdParam, data: JSONBody[schemas.DisqualifyLead]
) -> Response[Any]:
    event = LeadDisqualified(reason=data.reason)
    decide = _lead(lambda s: agg.disqualify_lead(s, event))
    return accepted(await _execute(request, "lead", lead_id, decide, data))


@post("/leads/{lead_id:str}/erase", status_code=202, tags=["leads"], guards=[requires("leads:write")])
async def erase_lead(
    request: AnyRequest, lead_id: AggregateIdParam, data: JSONBody[schemas.EraseLead]
) -> Response[Any]:
    """Erase the lead's personal data (a data subject's request): its key is destroyed, so the encrypted
    fields in the log can never be read again; ``lead.erased.v1`` records when and by whom."""
    vault = runtime(request).ledger.vault
    if vault is None:
        raise agg.Rejected("lead_id", "personal data is not encrypted here: nothing to erase", 409)
    # Through the ledger's cache: the command below reads the same history again.
    history = await runtime(request).ledger.history("lead", lead_id)
    if not history:
        raise agg.Rejected("lead_id", "no such lead", 404)
    captured = history[0].envelope.data
    # The key goes first: if the event then fails to append, the data is erased all the same, and a retry of
    # the request records it.
    await vault.erase(lead_id, captured.key_ref if isinstance(captured, LeadCaptured) else None)
    decide = _lead(lambda s: agg.erase_lead(s, LeadErased(reason=data.reason)))
    return accepted(await _execute(request, "lead", lead_id, decide, data))


# --- touchpoints and tasks, on leads and deals alike ---------------------------------------------------


def _activity(aggregate_type: AggregateType, history: list[Envelope]) -> agg.Activity:
    return agg.fold_lead(history) if aggregate_type == "lead" else agg.fold_deal(history)


async def _touchpoint(
    request: AnyRequest, aggregate_type: AggregateType, aggregate_id: str, data: JSONBody[schemas.LogTouchpoint]
) -> Accepted:
    event = TouchpointLogged(
        touchpoint_id=data.touchpoint_id or uuid7(),
        kind=data.kind,
        direction=data.direction,
        outcome=data.outcome,
        subject=data.subject,
        notes=data.notes,
        duration_seconds=data.duration_seconds,
    )

    def decide(history: list[Envelope]) -> Event:
        return agg.log_touchpoint(_activity(aggregate_type, history), event)

    return await _execute(request, aggregate_type, aggregate_id, decide, data)


async def _schedule(
    request: AnyRequest, aggregate_type: AggregateType, aggregate_id: str, data: JSONBody[schemas.ScheduleTask]
) -> Accepted:
    if data.due_at.tzinfo is None:
        raise InputError.one("due_at", "must carry a time zone offset, e.g. 2025-11-24T09:00:00+01:00")
    event = TaskScheduled(
        task_id=data.task_id or uuid7(), title=data.title, due_at=data.due_at.astimezone(dt.UTC), owner=data.owner
    )

    def decide(history: list[Envelope]) -> Event:
        return agg.schedule_task(_activity(aggregate_type, history), event)

    return await _execute(request, aggregate_type, aggregate_id, decide, data)


async def _complete(
    request: AnyRequest,
    aggregate_type: AggregateType,
    aggregate_id: str,
    task_id: str,
    data: JSONBody[schemas.CompleteTask],
) -> Accepted:
    event = TaskCompleted(task_id=task_id, outcome=data.outcome)

    def decide(history: list[Envelope]) -> Event:
        return agg.complete_task(_activity(aggregate_type, history), event)

    return await _execute(request, aggregate_type, aggregate_id, decide, data)


@post("/leads/{lead_id:str}/touchpoints", status_code=202, tags=["leads"], guards=[requires("leads:write")])
async def lead_touchpoint(
    request: AnyRequest, lead_id: AggregateIdParam, data: JSONBody[schemas.LogTouchpoint]
) -> Response[Any]:
    """Log a call, email, meeting, note or SMS with a lead."""
    return accepted(await _touchpoint(request, "lead", lead_id, data))


@post("/deals/{deal_id:str}/touchpoints", status_code=202, tags=["deals"], guards=[requires("deals:write")])
async def deal_touchpoint(
    request: AnyRequest, deal_id: AggregateIdParam, data: JSONBody[schemas.LogTouchpoint]
) -> Response[Any]:
    return accepted(await _touchpoint(request, "deal", deal_id, data))


@post("/leads/{lead_id:str}/tasks", status_code=202, tags=["leads"], guards=[requires("leads:write")])
async def lead_task(
    request: AnyRequest, lead_id: AggregateIdParam, data: JSONBody[schemas.ScheduleTask]
) -> Response[Any]:
    """Schedule a follow-up task on a lead."""
    return accepted(await _schedule(request, "lead", lead_id, data))


@post("/deals/{deal_id:str}/tasks", status_code=202, tags=["deals"], guards=[requires("deals:write")])
async def deal_task(
    request: AnyRequest, deal_id: AggregateIdParam, data: JSONBody[schemas.ScheduleTask]
) -> Response[Any]:
    return accepted(await _schedule(request, "deal", deal_id, data))


@post(
    "/leads/{lead_id:str}/tasks/{task_id:str}/complete",
    status_code=202,
    tags=["leads"],
    guards=[requires("leads:write")],
)
async def lead_task_done(
    request: AnyRequest, lead_id: AggregateIdParam, task_id: AggregateIdParam, data: JSONBody[schemas.CompleteTask]
) -> Response[Any]:
    return accepted(await _complete(request, "lead", lead_id, task_id, data))


@post(
    "/deals/{deal_id:str}/tasks/{task_id:str}/complete",
    status_code=202,
    tags=["deals"],
    guards=[requires("deals:write")],
)
async def deal_task_done(
    request: AnyRequest, deal_id: AggregateIdParam, task_id: AggregateIdParam, data: JSONBody[schemas.CompleteTask]
) -> Response[Any]:
    return accepted(await _complete(request, "deal", deal_id, task_id, data))


# --- deals --------------------------------------------------------------------------------------------


async def _pipeline(request: AnyRequest, pipeline_id: str) -> agg.PipelineState:
    history = await runtime(request).store.read("pipeline", pipeline_id)
    return agg.fold_pipeline(h.envelope for h in history)


async def _deal_pipeline(request: AnyRequest, deal_id: str) -> agg.PipelineState:
    """The pipeline of an existing deal (empty state if the deal does not exist: the decision says 404)."""
    history = await runtime(request).store.read("deal", deal_id)
    deal = agg.fold_deal(h.envelope for h in history)
    return await _pipeline(request, deal.pipeline_id) if deal.exists else agg.PipelineState()


@post("/deals", status_code=202, tags=["deals"], guards=[requires("deals:write")])
async def open_deal(request: AnyRequest, data: JSONBody[schemas.OpenDeal]) -> Response[Any]:
    """Open a deal in a pipeline, on its own or from a lead. With an ``Idempotency-Key`` and no ``deal_id``,
    the deal id is derived from the key, so a retry opens no second deal."""
    rt = runtime(request)
    ctx = context(request, body=data)
    deal_id = data.deal_id or (derived_id("deal", ctx.idempotency_key) if ctx.idempotency_key else uuid7())
    pipeline = await _pipeline(request, data.pipeline_id)
    lead_source = None
    if data.lead_id is not None:
        lead_history = await rt.store.read("lead", data.lead_id)
        lead = agg.fold_lead(h.envelope for h in lead_history)
        if not lead.exists:
            raise agg.Rejected("lead_id", f"no lead {data.lead_id!r}", 422)
        lead_source = lead.source
    stage = data.stage or (pipeline.stages[0].id if pipeline.stages else "")
    event = DealOpened(
        name=data.name,
        pipeline_id=data.pipeline_id,
        stage=stage,
        amount=data.amount,
        currency=data.currency,
        owner=data.owner,
        expected_close_date=data.expected_close_date,
        lead_id=data.lead_id,
        lead_source=lead_source,
    )
    when = business_time(data.occurred_at, ctx.now, rt.settings.config.max_clock_skew_seconds, "occurred_at")
    decide = lambda history: agg.open_deal(agg.fold_deal(history), pipeline, event)  # noqa: E731
    return accepted(await rt.ledger.execute(ctx, "deal", deal_id, decide, when))


@post("/deals/{deal_id:str}/stage", status_code=202, tags=["deals"], guards=[requires("deals:write")])
async def move_stage(
    request: AnyRequest, deal_id: AggregateIdParam, data: JSONBody[schemas.MoveStage]
) -> Response[Any]:
    """Move a deal to another stage. ``If-Match`` must carry the version you last saw; a stale one is 409."""
    pipeline = await _deal_pipeline(request, deal_id)
    decide = lambda history: agg.move_stage(agg.fold_deal(history), pipeline, data.to_stage)  # noqa: E731
    return accepted(await _execute(request, "deal", deal_id, decide, data, if_match_required=True))


@post("/deals/{deal_id:str}/amount", status_code=202, tags=["deals"], guards=[requires("deals:write")])
async def change_amount(
    request: AnyRequest, deal_id: AggregateIdParam, data: JSONBody[schemas.ChangeAmount]
) -> Response[Any]:
    decide = lambda history: agg.change_amount(agg.fold_deal(history), data.amount, data.currency)  # noqa: E731
    return accepted(await _execute(request, "deal", deal_id, decide, data))


@post("/deals/{deal_id:str}/won", status_code=202, tags=["deals"], guards=[requires("deals:write")])
async def win_deal(request: AnyRequest, deal_id: AggregateIdParam, data: JSONBody[schemas.WinDeal]) -> Response[Any]:
    decide = lambda history: agg.win_deal(agg.fold_deal(history), data.amount)  # noqa: E731
    return accepted(await _execute(request, "deal", deal_id, decide, data))


@post("/deals/{deal_id:str}/lost", status_code=202, tags=["deals"], guards=[requires("deals:write")])
async def lose_deal(request: AnyRequest, deal_id: AggregateIdParam, data: JSONBody[schemas.LoseDeal]) -> Response[Any]:
    decide = lambda history: agg.lose_deal(agg.fold_deal(history), data.reason)  # noqa: E731
    return accepted(await _execute(request, "deal", deal_id, decide, data))


# --- pipelines ----------------------------------------------------------------------------------------


@put("/pipelines/{pipeline_id:str}", status_code=202, tags=["pipelines"], guards=[requires("pipelines:write")])
async def define_pipeline(
    request: AnyRequest, pipeline_id: AggregateIdParam, data: JSONBody[schemas.DefinePipeline]
) -> Response[Any]:
    """Define (or redefine) a pipeline's stages in order, with win probability and rotting days."""
    event = agg.define_pipeline(PipelineDefined(name=data.name, stages=data.stages))
    return accepted(await _execute(request, "pipeline", pipeline_id, lambda _: event, data))


router = Router(
    path="/v1",
    route_handlers=[
        assign_lead,
        qualify_lead,
        disqualify_lead,
        erase_lead,
        lead_touchpoint,
        deal_touchpoint,
        lead_task,
        deal_task,
        lead_task_done,
        deal_task_done,
        open_deal,
        move_stage,
        change_amount,
        win_deal,
        lose_deal,
        define_pipeline,
    ],
)
