"""Helpers shared by the route modules: the runtime, business-time checks, versions, answers."""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Annotated, Any

import msgspec
from litestar import Request, Response
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.params import PathParameter
from litestar.types import Guard

from events.envelope import Source
from events.ids import AGGREGATE_ID_PATTERN, uuid7
from events.ledger import Accepted, Context
from services.api.identity import identify
from services.api.runtime import Runtime
from services.auth import Caller
from services.errors import InputError

AggregateIdParam = Annotated[str, PathParameter(pattern=AGGREGATE_ID_PATTERN, description="Aggregate id")]

AnyRequest = Request[Any, Any, Any]


def requires(scope: str | None, allow_query_key: bool = False) -> Guard:
    """A guard: authenticate before the body is even read, count the request against the credential's rate, then
    check the scope. Async, so that it runs in the request's own context (a sync guard would run in a thread and
    lose the bound log context)."""

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        rt: Runtime = connection.app.state.runtime
        address = rt.client_address(connection)
        caller = await identify(rt, connection, allow_query_key, address)
        rt.throttle(_scope_of(caller), address if caller.public else None)
        if scope is not None:  # None: any credential, whatever it may do (GET /v1/me)
            caller.require(scope)
        connection.state.caller = caller

    return guard


def caller_of(request: AnyRequest) -> Caller:
    caller: Caller = request.state.caller
    return caller


def runtime(request: AnyRequest) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


def business_time(value: dt.datetime | None, now: dt.datetime, skew_seconds: int, field: str) -> dt.datetime:
    """The source's time of the fact, in UTC. Naive times are refused: a time without a zone is a guess."""
    if value is None:
        return now
    if value.tzinfo is None or value.utcoffset() is None:
        raise InputError.one(field, "must carry a time zone offset, e.g. 2025-11-22T12:39:50Z")
    value = value.astimezone(dt.UTC)
    if value > now + dt.timedelta(seconds=skew_seconds):
        raise InputError.one(field, f"is in the future ({value.isoformat()} > now {now.isoformat()})")
    return value


def parse_if_match(request: AnyRequest, required: bool) -> int | None:
    raw = request.headers.get("if-match")
    if raw is None:
        if required:
            raise InputError.one("If-Match", "required: the deal version (ETag) you last saw", status=428)
        return None
    text = raw.strip().removeprefix("W/").strip('"')
    if not text.isdigit():
        raise InputError.one("If-Match", f"must be a version number as given in the ETag header, got {raw!r}", 400)
    return int(text)


def fingerprint(request: AnyRequest, body: object) -> str:
    """SHA-256 of a request as its Idempotency-Key stands for it: method, path and the body in canonical form (a
    decoded body re-encoded with sorted keys, so spacing and key order do not count; raw bytes as they are)."""
    canonical = body if isinstance(body, bytes) else msgspec.json.encode(body, order="sorted")
    return hashlib.sha256(f"{request.method} {request.scope['path']}\n".encode() + canonical).hexdigest()


def context(request: AnyRequest, source: Source | None = None, body: object = None) -> Context:
    """Who asks, on whose behalf, under which key; ``body`` (the request's decoded body) is fingerprinted with the
    key, so that the key reused for another request is refused instead of answered as a retry."""
    key = request.headers.get("idempotency-key")
    if key is not None and not (1 <= len(key) <= 200 and key.isprintable()):
        raise InputError.one("Idempotency-Key", "must be 1 to 200 printable characters", 400)
    correlation = request.headers.get("x-correlation-id")
    if correlation is not None and not (1 <= len(correlation) <= 200 and correlation.isprintable()):
        raise InputError.one("X-Correlation-Id", "must be 1 to 200 printable characters", 400)
    caller = caller_of(request)
    src = source or (caller.source if caller.source in _SOURCES else "api")
    return Context(
        actor=caller.id,
        source=src,  # type: ignore[arg-type]
        correlation_id=correlation or request.state.get("request_id") or uuid7(),
        now=Runtime.now(),
        idempotency_key=f"{_scope_of(caller)}:{key}" if key else None,
        request_sha256=fingerprint(request, body) if key and body is not None else None,
    )


def _scope_of(caller: Caller) -> str:
    """Whose idempotency keys these are: a user's never meet an API key's of the same name."""
    return caller.id if caller.user is None else f"user:{caller.id}"


_SOURCES = {"web_form", "meta", "typeform", "webflow", "hubspot", "api", "nats", "system"}


def accepted(result: Accepted | list[Accepted]) -> Response[Any]:
    """202: in the log, acknowledged by JetStream. ETag carries the aggregate's new version."""
    if isinstance(result, list):
        return Response(result, status_code=202)
    return Response(result, status_code=202, headers={"ETag": f'"{result.version}"'})
