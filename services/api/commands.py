"""Commands on leads, deals and pipelines: each handler parses the request and runs one command (events/handlers.py)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

import msgspec
from litestar import Response, Router, post, put
from litestar.params import JSONBody

from events import commands as cmd
from events.handlers import handle
from events.ids import uuid7
from events.ledger import Accepted
from events.types import TaskScheduled, TouchpointLogged
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
from services.api.deal_reads import get_pipeline, list_deals
from services.api.identity import owner_for_new, reaches
from services.errors import InputError

DEAL_WRITE = [requires("deals:write"), reaches("deal")]
LEAD_WRITE = [requires("leads:write"), reaches("lead")]


async def _run(
    request: AnyRequest,
    data: schemas.Body,
    command: cmd.Command,
    if_match: Literal["optional", "required", "ignored"] = "optional",
) -> Accepted:
    """Run ``command`` at the request's business time, pinned to its ``If-Match``."""
    rt = runtime(request)
    ctx = context(request, body=data)
    when = business_time(data.occurred_at, ctx.now, rt.settings.config.max_clock_skew_seconds, "occurred_at")
    pinned = None if if_match == "ignored" else parse_if_match(request, required=if_match == "required")
    return await handle(rt.ledger, ctx, msgspec.structs.replace(command, occurred_at=when, if_match=pinned))


# --- leads -------------------------------------------------------------------------------------------


@post("/leads/{lead_id:str}/assign", status_code=202, tags=["leads"], guards=LEAD_WRITE)
async def assign_lead(
    request: AnyRequest, lead_id: AggregateIdParam, data: JSONBody[schemas.AssignLead]
) -> Response[Any]:
    """Give a lead an owner (a manual assignment always wins over routing rules)."""
    return accepted(await _run(request, data, cmd.AssignLead(lead_id=lead_id, owner=data.owner)))


@post("/leads/{lead_id:str}/qualify", status_code=202, tags=["leads"], guards=LEAD_WRITE)
async def qualify_lead(
    request: AnyRequest, lead_id: AggregateIdParam, data: JSONBody[schemas.QualifyLead]
) -> Response[Any]:
    return accepted(await _run(request, data, cmd.QualifyLead(lead_id=lead_id, reason=data.reason, score=data.score)))


@post("/leads/{lead_id:str}/disqualify", status_code=202, tags=["leads"], guards=LEAD_WRITE)
async def disqualify_lead(
    request: AnyRequest, lead_id: AggregateIdParam, data: JSONBody[schemas.DisqualifyLead]
) -> Response[Any]:
    return accepted(await _run(request, data, cmd.DisqualifyLead(lead_id=lead_id, reason=data.reason)))


@post("/leads/{lead_id:str}/erase", status_code=202, tags=["leads"], guards=LEAD_WRITE)
async def erase_lead(
    request: AnyRequest, lead_id: AggregateIdParam, data: JSONBody[schemas.EraseLead]
) -> Response[Any]:
    """Erase the lead's personal data (a data subject's request): its key is destroyed, so the encrypted
    fields in the log can never be read again; ``lead.erased.v1`` records when and by whom."""
    return accepted(await _run(request, data, cmd.EraseLead(lead_id=lead_id, reason=data.reason)))


# --- touchpoints and tasks, on leads and deals alike ---------------------------------------------------


async def _touchpoint(
    request: AnyRequest, on: cmd.Target, aggregate_id: str, data: JSONBody[schemas.LogTouchpoint]
) -> Accepted:
    touchpoint = TouchpointLogged(
        touchpoint_id=data.touchpoint_id or uuid7(),
        kind=data.kind,
        direction=data.direction,
        outcome=data.outcome,
        subject=data.subject,
        notes=data.notes,
        duration_seconds=data.duration_seconds,
    )
    return await _run(request, data, cmd.LogTouchpoint(on=on, aggregate_id=aggregate_id, touchpoint=touchpoint))


async def _schedule(
    request: AnyRequest, on: cmd.Target, aggregate_id: str, data: JSONBody[schemas.ScheduleTask]
) -> Accepted:
    if data.due_at.tzinfo is None:
        raise InputError.one("due_at", "must carry a time zone offset, e.g. 2025-11-24T09:00:00+01:00")
    task = TaskScheduled(
        task_id=data.task_id or uuid7(), title=data.title, due_at=data.due_at.astimezone(dt.UTC), owner=data.owner
    )
    return await _run(request, data, cmd.ScheduleTask(on=on, aggregate_id=aggregate_id, task=task))


async def _complete(
    request: AnyRequest,
    on: cmd.Target,
    aggregate_id: str,
    task_id: str,
    data: JSONBody[schemas.CompleteTask],
) -> Accepted:
    return await _run(
        request, data, cmd.CompleteTask(on=on, aggregate_id=aggregate_id, task_id=task_id, outcome=data.outcome)
    )


@post("/leads/{lead_id:str}/touchpoints", status_code=202, tags=["leads"], guards=LEAD_WRITE)
async def lead_touchpoint(
    request: AnyRequest, lead_id: AggregateIdParam, data: JSONBody[schemas.LogTouchpoint]
) -> Response[Any]:
    """Log a call, email, meeting, note or SMS with a lead."""
    return accepted(await _touchpoint(request, "lead", lead_id, data))


@post("/deals/{deal_id:str}/touchpoints", status_code=202, tags=["deals"], guards=DEAL_WRITE)
async def deal_touchpoint(
    request: AnyRequest, deal_id: AggregateIdParam, data: JSONBody[schemas.LogTouchpoint]
) -> Response[Any]:
    return accepted(await _touchpoint(request, "deal", deal_id, data))


@post("/leads/{lead_id:str}/tasks", status_code=202, tags=["leads"], guards=LEAD_WRITE)
async def lead_task(
    request: AnyRequest, lead_id: AggregateIdParam, data: JSONBody[schemas.ScheduleTask]
) -> Response[Any]:
    """Schedule a follow-up task on a lead."""
    return accepted(await _schedule(request, "lead", lead_id, data))


@post("/deals/{deal_id:str}/tasks", status_code=202, tags=["deals"], guards=DEAL_WRITE)
async def deal_task(
    request: AnyRequest, deal_id: AggregateIdParam, data: JSONBody[schemas.ScheduleTask]
) -> Response[Any]:
    return accepted(await _schedule(request, "deal", deal_id, data))


@post(
    "/leads/{lead_id:str}/tasks/{task_id:str}/complete",
    status_code=202,
    tags=["leads"],
    guards=LEAD_WRITE,
)
async def lead_task_done(
    request: AnyRequest, lead_id: AggregateIdParam, task_id: AggregateIdParam, data: JSONBody[schemas.CompleteTask]
) -> Response[Any]:
    return accepted(await _complete(request, "lead", lead_id, task_id, data))


@post(
    "/deals/{deal_id:str}/tasks/{task_id:str}/complete",
    status_code=202,
    tags=["deals"],
    guards=DEAL_WRITE,
)
async def deal_task_done(
    request: AnyRequest, deal_id: AggregateIdParam, task_id: AggregateIdParam, data: JSONBody[schemas.CompleteTask]
) -> Response[Any]:
    return accepted(await _complete(request, "deal", deal_id, task_id, data))


# --- deals --------------------------------------------------------------------------------------------


@post("/deals", status_code=202, tags=["deals"], guards=[requires("deals:write")])
async def open_deal(request: AnyRequest, data: JSONBody[schemas.OpenDeal]) -> Response[Any]:
    """Open a deal in a pipeline, on its own or from a lead. With an ``Idempotency-Key`` and no ``deal_id``,
    the deal id is derived from the key, so a retry opens no second deal."""
    return accepted(
        await _run(
            request,
            data,
            cmd.OpenDeal(
                deal_id=data.deal_id,
                name=data.name,
                pipeline_id=data.pipeline_id,
                stage=data.stage,
                amount=data.amount,
                currency=data.currency,
                owner=owner_for_new(request, data.owner),
                expected_close_date=data.expected_close_date,
                lead_id=data.lead_id,
            ),
            if_match="ignored",
        )
    )


@post("/deals/{deal_id:str}/stage", status_code=202, tags=["deals"], guards=DEAL_WRITE)
async def move_stage(
    request: AnyRequest, deal_id: AggregateIdParam, data: JSONBody[schemas.MoveStage]
) -> Response[Any]:
    """Move a deal to another stage. ``If-Match`` must carry the version you last saw; a stale one is 409."""
    return accepted(
        await _run(request, data, cmd.MoveStage(deal_id=deal_id, to_stage=data.to_stage), if_match="required")
    )


@post("/deals/{deal_id:str}/amount", status_code=202, tags=["deals"], guards=DEAL_WRITE)
async def change_amount(
    request: AnyRequest, deal_id: AggregateIdParam, data: JSONBody[schemas.ChangeAmount]
) -> Response[Any]:
    return accepted(
        await _run(request, data, cmd.ChangeAmount(deal_id=deal_id, amount=data.amount, currency=data.currency))
    )


@post("/deals/{deal_id:str}/won", status_code=202, tags=["deals"], guards=DEAL_WRITE)
async def win_deal(request: AnyRequest, deal_id: AggregateIdParam, data: JSONBody[schemas.WinDeal]) -> Response[Any]:
    return accepted(await _run(request, data, cmd.WinDeal(deal_id=deal_id, amount=data.amount)))


@post("/deals/{deal_id:str}/lost", status_code=202, tags=["deals"], guards=DEAL_WRITE)
async def lose_deal(request: AnyRequest, deal_id: AggregateIdParam, data: JSONBody[schemas.LoseDeal]) -> Response[Any]:
    return accepted(await _run(request, data, cmd.LoseDeal(deal_id=deal_id, reason=data.reason)))


# --- pipelines ----------------------------------------------------------------------------------------


@put("/pipelines/{pipeline_id:str}", status_code=202, tags=["pipelines"], guards=[requires("pipelines:write")])
async def define_pipeline(
    request: AnyRequest, pipeline_id: AggregateIdParam, data: JSONBody[schemas.DefinePipeline]
) -> Response[Any]:
    """Define (or redefine) a pipeline's stages in order, with win probability and rotting days."""
    return accepted(
        await _run(request, data, cmd.DefinePipeline(pipeline_id=pipeline_id, name=data.name, stages=data.stages))
    )


run_command = _run
"""For the route modules of other records (services/api/leads.py): a command run as these are."""


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
        list_deals,
        get_pipeline,
    ],
)
