"""Reading the log: an aggregate's history in order, and its current state with its version."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import msgspec
from litestar import Response, Router, get
from litestar.params import QueryParameter

from events import aggregates as agg
from events.envelope import AggregateType, RawPayload, StoredEvent
from events.types import Event
from projections.money import money_text
from services.api.common import AggregateIdParam, AnyRequest, requires, runtime
from services.api.deal_people import DealPeople, deal_people
from services.api.deals import patch_deal
from services.api.identity import reaches
from services.errors import InputError


class HistoryEntry(msgspec.Struct, frozen=True):
    """One event as an auditor reads it: business time beside record time, provenance on request."""

    sequence: int
    event_id: str
    type: str
    occurred_at: dt.datetime
    recorded_at: dt.datetime
    actor: str
    source: str
    correlation_id: str
    causation_id: str | None
    data: Event
    raw: RawPayload | None = None


class History(msgspec.Struct, frozen=True):
    aggregate_type: AggregateType
    aggregate_id: str
    version: int
    events: list[HistoryEntry]


def _entry(stored: StoredEvent, include_raw: bool) -> HistoryEntry:
    e = stored.envelope
    return HistoryEntry(
        stored.sequence,
        e.event_id,
        e.type,
        e.occurred_at,
        e.recorded_at,
        e.actor,
        e.source,
        e.correlation_id,
        e.causation_id,
        e.data,
        e.raw if include_raw else None,
    )


async def _history(
    request: AnyRequest, aggregate_type: AggregateType, aggregate_id: str, include_raw: bool
) -> Response[History]:
    rt = runtime(request)
    stored = await rt.store.read(aggregate_type, aggregate_id)
    if not stored:
        raise agg.Rejected(f"{aggregate_type}_id", f"no such {aggregate_type}", 404)
    if rt.ledger.vault is not None:
        # history:read may see personal data: open the sealed fields and free text (an erased lead's stay
        # "[erased]", and so does text about them on their deals).
        opened = await rt.ledger.vault.unsealed([s.envelope for s in stored])
        stored = [msgspec.structs.replace(s, envelope=e) for s, e in zip(stored, opened, strict=True)]
    version = stored[-1].sequence
    body = History(aggregate_type, aggregate_id, version, [_entry(s, include_raw) for s in stored])
    return Response(body, headers={"ETag": f'"{version}"'})


@get("/leads/{lead_id:str}/events", tags=["history"], guards=[requires("history:read"), reaches("lead")])
async def lead_events(
    request: AnyRequest,
    lead_id: AggregateIdParam,
    include_raw: Annotated[bool, QueryParameter(description="add what the source sent")] = False,
) -> Response[History]:
    """A lead's every event in log order; ``include_raw=true`` adds what the source sent."""
    return await _history(request, "lead", lead_id, include_raw)


@get("/deals/{deal_id:str}/events", tags=["history"], guards=[requires("history:read"), reaches("deal")])
async def deal_events(
    request: AnyRequest,
    deal_id: AggregateIdParam,
    include_raw: Annotated[bool, QueryParameter(description="add what the source sent")] = False,
) -> Response[History]:
    """A deal's every event in log order."""
    return await _history(request, "deal", deal_id, include_raw)


@get("/pipelines/{pipeline_id:str}/events", tags=["history"], guards=[requires("history:read")])
async def pipeline_events(
    request: AnyRequest,
    pipeline_id: AggregateIdParam,
    include_raw: Annotated[bool, QueryParameter(description="add what the source sent")] = False,
) -> Response[History]:
    return await _history(request, "pipeline", pipeline_id, include_raw)


class DealView(msgspec.Struct, frozen=True):
    deal_id: str
    version: int
    status: str
    pipeline_id: str
    stage: str
    amount: str
    currency: str
    owner: str | None
    open_tasks: list[str]
    people: DealPeople | None = None
    """Its contacts with their roles and its decision maker, from the people read model (None without one)."""


@get("/deals/{deal_id:str}", tags=["deals"], guards=[requires("history:read"), reaches("deal")])
async def deal_state(
    request: AnyRequest,
    deal_id: AggregateIdParam,
    as_of: Annotated[
        dt.datetime | None, QueryParameter(description="the state as it stood then (business time, with offset)")
    ] = None,
) -> Response[Any]:
    """A deal's current state folded from the log, with its version in ``ETag`` (send it back as ``If-Match``).
    With ``as_of``: the state folded from the events that had happened by then (no ``ETag``: not for writes)."""
    if as_of is not None and as_of.tzinfo is None:
        raise InputError.one("as_of", "must carry a time zone offset")
    rt = runtime(request)
    stored = await rt.store.read("deal", deal_id)
    if as_of is not None:
        stored = [s for s in stored if s.envelope.occurred_at <= as_of]
    state = agg.fold_deal(s.envelope for s in stored)
    if not state.exists:
        raise agg.Rejected("deal_id", "no such deal" if as_of is None else "no such deal at that time", 404)
    version = stored[-1].sequence
    view = DealView(
        deal_id,
        version,
        state.status,
        state.pipeline_id,
        state.stage,
        money_text(state.amount, state.currency),
        state.currency,
        state.owner,
        sorted(state.open_tasks),
    )
    if as_of is None and rt.settings.database_url:
        pipeline = agg.fold_pipeline(s.envelope for s in await rt.store.read("pipeline", state.pipeline_id))
        async with rt.read_connection() as conn:
            stage_ids = [s.id for s in pipeline.stages]
            configured = rt.settings.people.late_stages.get(state.pipeline_id)
            people = await deal_people(conn, deal_id, state.status, state.stage, stage_ids, configured)
        view = msgspec.structs.replace(view, people=people)
    return Response(view, headers={"ETag": f'"{version}"'} if as_of is None else {})


@get("/users/{user_id:str}/events", tags=["history"], guards=[requires("history:read")])
async def user_events(request: AnyRequest, user_id: AggregateIdParam) -> Response[History]:
    """A user's history: created, role changes, (de)activations, password sets (never the password or its hash)."""
    return await _history(request, "user", user_id, False)


@get("/organisations/{organisation_id:str}/events", tags=["history"], guards=[requires("history:read")])
async def organisation_events(request: AnyRequest, organisation_id: AggregateIdParam) -> Response[History]:
    return await _history(request, "organisation", organisation_id, False)


@get("/contacts/{contact_id:str}/events", tags=["history"], guards=[requires("history:read")])
async def contact_events(request: AnyRequest, contact_id: AggregateIdParam) -> Response[History]:
    """A contact's every event in log order, its personal fields opened (``[erased]`` once erased)."""
    return await _history(request, "contact", contact_id, False)


router = Router(
    path="/v1",
    route_handlers=[
        lead_events,
        deal_events,
        pipeline_events,
        deal_state,
        user_events,
        organisation_events,
        contact_events,
        patch_deal,
    ],
)
