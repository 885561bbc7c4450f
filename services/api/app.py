"""The Litestar application: routes, error answers, request ids and the OpenAPI document."""

from __future__ import annotations

import math
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import structlog
from litestar import Litestar, MediaType, Request, Response, get
from litestar.exceptions import HTTPException, ValidationException
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.types import ASGIApp, Message, Receive, Send

from events.aggregates import Rejected
from events.envelope import Envelope
from events.ids import InvalidId, uuid7
from events.ledger import Accepted, KeyReused, NotAllWritten
from events.store import ConcurrencyError, OutcomeUnknown, StoreUnavailable
from services.api import (
    alerts,
    asyncapi,
    capture,
    commands,
    deal_reads,
    deals,
    history,
    leads,
    openapi,
    params,
    people,
    reads,
    scores,
    subscriptions,
    tasks,
)
from services.api import session as sessions
from services.api import users as user_admin
from services.api.exports import router as exports_router
from services.api.imports import router as imports_router
from services.api.runtime import ReadModelUnavailable, Runtime
from services.api.sla_metrics import router as sla_metrics_router
from services.config import Settings
from services.errors import AuthError, FieldError, InputError, RateLimited

log = structlog.get_logger("dealstream.api")


class ErrorBody(msgspec.Struct, frozen=True, omit_defaults=True):
    """Every error answer: a stable code, a sentence, and the fields at fault."""

    error: str
    message: str
    errors: list[FieldError] = []
    current_version: int | None = None
    written: list[Accepted] | None = None
    """When some of several events are in the log and others are not (or not known to be): those that are."""
    request_id: str | None = None


def _error(
    request: Request[Any, Any, Any], status: int, body: ErrorBody, headers: dict[str, str] | None = None
) -> Response[ErrorBody]:
    rid = request.scope.get("state", {}).get("request_id")
    body = msgspec.structs.replace(body, request_id=rid)
    log.info(
        "request.rejected",
        status=status,
        error=body.error,
        detail=body.message,
        fields=[e.field for e in body.errors] or None,
    )
    return Response(body, status_code=status, headers=headers, media_type=MediaType.JSON)


def _on_input(request: Request[Any, Any, Any], exc: InputError) -> Response[ErrorBody]:
    code = {400: "bad_request", 413: "too_large", 415: "unsupported_media_type", 428: "precondition_required"}.get(
        exc.status, "invalid_input"
    )
    return _error(request, exc.status, ErrorBody(code, str(exc), exc.errors))


def _on_validation(request: Request[Any, Any, Any], exc: ValidationException) -> Response[ErrorBody]:
    extra = [e for e in (exc.extra if isinstance(exc.extra, list) else []) if isinstance(e, dict)]
    errors = [FieldError(_field_of(e), str(e.get("message"))) for e in extra]
    if not errors:  # unreadable body: not JSON, truncated, wrong encoding
        return _error(request, 400, ErrorBody("bad_request", str(exc.detail), [FieldError("body", str(exc.detail))]))
    status = 400 if any(str(e.get("source")) in {"path", "query", "header"} for e in extra) else 422
    return _error(
        request, status, ErrorBody("invalid_input", "; ".join(f"{e.field}: {e.reason}" for e in errors), errors)
    )


_NAMED_FIELD = re.compile(r"(?:field `|^`)([^`]+)`")


def _field_of(error: dict[str, Any]) -> str:
    """Litestar names the whole body ``data`` for missing or unknown fields; the field is in the message."""
    key = str(error.get("key") or "body")
    if key == "data" and (named := _NAMED_FIELD.search(str(error.get("message")))):
        return named.group(1)
    # One way of naming a list item everywhere: stages.0.id, as in leads.3.email.
    return "body" if key == "data" else re.sub(r"\[(\d+)\]", r".\1", key)


def _on_invalid_id(request: Request[Any, Any, Any], exc: InvalidId) -> Response[ErrorBody]:
    return _error(request, 422, ErrorBody("invalid_input", str(exc), [FieldError(exc.field, exc.reason)]))


def _on_http(request: Request[Any, Any, Any], exc: HTTPException) -> Response[ErrorBody]:
    code = {400: "bad_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(
        exc.status_code, "http_error"
    )
    errors = [FieldError("body", str(exc.detail))] if exc.status_code in (400, 413) else []
    return _error(request, exc.status_code, ErrorBody(code, str(exc.detail), errors), headers=exc.headers)


def _on_auth(request: Request[Any, Any, Any], exc: AuthError) -> Response[ErrorBody]:
    code = "forbidden" if exc.status == 403 else "unauthorized"
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return _error(request, exc.status, ErrorBody(code, exc.reason), headers)


def _on_rate_limited(request: Request[Any, Any, Any], exc: RateLimited) -> Response[ErrorBody]:
    body = ErrorBody("rate_limited", str(exc), [FieldError("credential", str(exc))])
    return _error(request, 429, body, {"Retry-After": str(max(1, math.ceil(exc.retry_after)))})


def _on_rejected(request: Request[Any, Any, Any], exc: Rejected) -> Response[ErrorBody]:
    code = {404: "not_found", 409: "conflict", 422: "invalid_input"}.get(exc.status, "rejected")
    return _error(request, exc.status, ErrorBody(code, exc.reason, [FieldError(exc.field, exc.reason)]))


def _on_conflict(request: Request[Any, Any, Any], exc: ConcurrencyError) -> Response[ErrorBody]:
    body = ErrorBody(
        "conflict",
        f"the aggregate is at version {exc.current}, not {exc.expected}: "
        "read it again and retry with If-Match set to the current version",
        current_version=exc.current,
    )
    return _error(request, 409, body, {"ETag": f'"{exc.current}"'})


def _on_unavailable(request: Request[Any, Any, Any], exc: StoreUnavailable) -> Response[ErrorBody]:
    log.warning("store.unavailable", reason=str(exc))
    body = ErrorBody(
        "unavailable", "the event log is unreachable; nothing was written; retry with the same Idempotency-Key"
    )
    return _error(request, 503, body, {"Retry-After": "2"})


def _on_key_reused(request: Request[Any, Any, Any], exc: KeyReused) -> Response[ErrorBody]:
    body = ErrorBody("idempotency_key_reused", f"Idempotency-Key: {exc}", [FieldError("Idempotency-Key", str(exc))])
    return _error(request, 422, body)


_RETRY = "retry with the same Idempotency-Key: what is in the log comes back as a duplicate, the rest lands once"


def _on_outcome_unknown(request: Request[Any, Any, Any], exc: OutcomeUnknown) -> Response[ErrorBody]:
    log.warning("store.outcome_unknown", reason=str(exc), event_id=exc.event_id)
    body = ErrorBody(
        "outcome_unknown", f"the event log did not answer in time: the write may or may not be in it; {_RETRY}"
    )
    return _error(request, 504, body, {"Retry-After": "2"})


def _on_not_all_written(request: Request[Any, Any, Any], exc: NotAllWritten) -> Response[ErrorBody]:
    log.warning("store.not_all_written", reason=str(exc))
    errors = [FieldError(f"leads.{n}", "not written") for n in exc.not_written]
    errors += [FieldError(f"leads.{n}", "unknown: the log did not answer whether it is in it") for n in exc.unknown]
    errors.sort(key=lambda e: int(e.field.split(".")[1]))
    code = "outcome_unknown" if exc.unknown else "partly_written"
    written = [exc.written[n] for n in sorted(exc.written)] or None
    body = ErrorBody(code, f"{exc}; 'written' lists the leads in the log; {_RETRY}", errors, written=written)
    return _error(request, 504, body, {"Retry-After": "2"})


def _on_reads_unavailable(request: Request[Any, Any, Any], exc: ReadModelUnavailable) -> Response[ErrorBody]:
    log.warning("reads.unavailable", reason=str(exc))
    return _error(request, 503, ErrorBody("unavailable", str(exc)), {"Retry-After": "2"})


def _on_crash(request: Request[Any, Any, Any], exc: Exception) -> Response[ErrorBody]:
    log.exception("request.crashed", error_type=type(exc).__name__)
    return _error(request, 500, ErrorBody("internal", "an internal error occurred; it is logged under this request id"))


class RequestContext:
    """ASGI middleware: a request id on every log line and answer, and one access line per request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        rid = given if 0 < len(given) <= 100 and given.isprintable() else uuid7()
        scope.setdefault("state", {})["request_id"] = rid
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=rid)
        started = time.perf_counter()
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            log.info(
                "request",
                method=scope["method"],
                path=scope["path"],
                status=status,
                ms=round((time.perf_counter() - started) * 1000, 2),
            )


_EVENT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "/v1/schemas/events.json",
    "title": "Dealstream event envelope",
    "description": (
        "Every message on <prefix>.evt.<aggregate type>.<partition>.<aggregate id> of the <PREFIX>_EVENTS "
        "stream is one envelope as JSON; data.type names the event and its version (e.g. alert.raised.v1)."
    ),
    **msgspec.json.schema(Envelope),
}


@get("/v1/schemas/events.json", tags=["ops"], sync_to_thread=False, media_type="application/schema+json")
def event_schema() -> Response[dict[str, Any]]:
    """JSON Schema of the envelope and every event type, generated from the msgspec types: for anyone writing
    their own consumer of the log (e.g. a notification consumer of alert.* and lead.qualified.v1)."""
    return Response(_EVENT_SCHEMA, media_type="application/schema+json")


HEALTH_DEADLINE = 1.0
"""Seconds the log has to answer a health check: a frozen nats-server keeps its connections open."""


@get("/v1/health", tags=["ops"])
async def health(request: Request[Any, Any, Any]) -> Response[dict[str, str]]:
    """200 when the log answers within a deadline, 503 (with Retry-After) when it does not."""
    rt: Runtime = request.app.state.runtime
    try:
        await rt.store.check(min(HEALTH_DEADLINE, rt.settings.nats.publish_timeout))
    except StoreUnavailable as exc:
        log.info("health.unavailable", reason=str(exc))
        return Response(
            {"status": "unavailable", "nats": "not answering"}, status_code=503, headers={"Retry-After": "2"}
        )
    return Response({"status": "ok", "nats": "connected"})


def create_app(settings: Settings) -> Litestar:
    runtime = Runtime(settings)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        app.state.runtime = runtime
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    app = Litestar(
        route_handlers=[
            health,
            event_schema,
            asyncapi.asyncapi,
            capture.router,
            commands.router,
            history.router,
            reads.router,
            alerts.router,
            scores.router,
            subscriptions.router,
            sla_metrics_router,
            leads.router,
            sessions.router,
            user_admin.router,
            people.router,
            deals.router,
            deal_reads.router,
            tasks.router,
            exports_router,
            imports_router,
        ],
        lifespan=[lifespan],
        middleware=[RequestContext],
        before_request=params.check_parameters,
        exception_handlers={
            InputError: _on_input,
            InvalidId: _on_invalid_id,
            RateLimited: _on_rate_limited,
            ValidationException: _on_validation,
            AuthError: _on_auth,
            Rejected: _on_rejected,
            ConcurrencyError: _on_conflict,
            KeyReused: _on_key_reused,
            OutcomeUnknown: _on_outcome_unknown,
            NotAllWritten: _on_not_all_written,
            StoreUnavailable: _on_unavailable,
            ReadModelUnavailable: _on_reads_unavailable,
            HTTPException: _on_http,
            Exception: _on_crash,
        },
        request_max_body_size=settings.config.max_body_bytes,
        openapi_config=OpenAPIConfig(title="Dealstream", version="1.0.0", path="/v1/openapi"),
        debug=False,
        logging_config=None,
    )
    app.state.query_names = params.query_names(app)
    _document_errors(app)
    openapi.document(app)
    app.state.asyncapi = asyncapi.document(settings.nats, app.openapi_schema.info.version)
    return app


ERROR_ANSWERS: dict[int, str] = {
    400: "unreadable body, parameter or header (If-Match, Idempotency-Key)",
    401: "missing or unknown credential, or a bad signature",
    403: "the credential lacks the scope; for a signed-in user also a lead or deal out of their reach, or a write "
    "without the session's X-CSRF-Token",
    404: "no such lead, deal, task, pipeline or webhook",
    409: "stale If-Match (current_version says which), concurrent write, or a state that forbids it",
    413: "body over max_body_bytes",
    415: "a content type the operation does not take",
    422: "a field fails validation: each field's path and the reason",
    428: "a stage move without If-Match",
    429: "over the credential's request rate, a public key's rate for this address, or this address's failed "
    "authentications: wait Retry-After seconds",
    503: "the event log or the read models are unreachable; nothing was written (Retry-After)",
    504: "the event log did not confirm every write in time: some may be in it (written lists those that are); "
    "retry with the same Idempotency-Key",
}

_NO_ERROR_ANSWERS = {"/v1/health", "/v1/schemas/events.json"}


def _document_errors(app: Litestar) -> None:
    """Every error of every operation is answered by the exception handlers above with an ``ErrorBody``; without
    this, the document would show Litestar's own validation error shape, which the API never sends."""
    specs = {
        status: ResponseSpec(ErrorBody, description=text, generate_examples=False)
        for status, text in ERROR_ANSWERS.items()
    }
    for route in app.routes:
        if route.path in _NO_ERROR_ANSWERS:
            continue
        for handler in getattr(route, "route_handlers", ()):
            if isinstance(handler, HTTPRouteHandler):
                handler.responses = {**specs, **(handler.responses or {})}
