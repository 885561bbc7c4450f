"""What the OpenAPI document cannot learn from the handlers' signatures: the capture and webhook bodies (read
raw, to check signatures and take two content types), the headers every write reads, and the event stream."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
from litestar import Litestar
from litestar.enums import ParamType
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.spec import (
    OpenAPIFormat,
    OpenAPIMediaType,
    OpenAPIType,
    Operation,
    Parameter,
    RequestBody,
    Schema,
)

from events.types import LeadCaptured
from services.providers.fields import MAP_FIELDS
from services.providers.html_form import FIELD_NAMES


def _string(max_length: int | None = None, **extra: Any) -> Schema:
    return Schema(type=OpenAPIType.STRING, max_length=max_length, **extra)


def _header(name: str, description: str, *, required: bool = False, **schema: Any) -> Parameter:
    return Parameter(
        name=name,
        param_in=ParamType.HEADER,
        required=required,
        description=description,
        schema=_string(**schema),
    )


def _query(name: str, description: str, *, required: bool = False) -> Parameter:
    return Parameter(name=name, param_in=ParamType.QUERY, required=required, description=description, schema=_string())


QUERY_KEY = _query("key", "a capture-only API key, for an HTML form that cannot set headers")
META_HANDSHAKE = [
    _query("hub.mode", "subscribe", required=True),
    _query("hub.challenge", "echoed back when the verify token matches", required=True),
    _query("hub.verify_token", "the verify token configured for Meta", required=True),
]
LAST_EVENT_ID = _header("Last-Event-ID", "resume after this stream sequence")
_BOUNDED: dict[str, Any] = {"min_length": 1, "max_length": 200}
IDEMPOTENCY_KEY = _header(
    "Idempotency-Key", "makes a retry of this request a no-op: the first answer comes back", **_BOUNDED
)
CORRELATION_ID = _header("X-Correlation-Id", "kept in the event's envelope; default: the request id", **_BOUNDED)
_VERSION = r'^(W/)?"?\d+"?$'
IF_MATCH = _header("If-Match", "the aggregate's version (ETag) you last saw; a stale one is 409", pattern=_VERSION)
IF_MATCH_REQUIRED = _header(
    "If-Match", "the deal's version (ETag) you last saw; a stale one is 409", required=True, pattern=_VERSION
)


def _lead_fields() -> dict[str, Schema]:
    """The form's names, each with the length its ``LeadCaptured`` field allows (one source of truth)."""
    limits: dict[str, int | None] = {}
    for f in msgspec.inspect.type_info(LeadCaptured).fields:  # type: ignore[attr-defined]
        kinds = f.type.types if isinstance(f.type, msgspec.inspect.UnionType) else (f.type,)
        limits.update((f.name, k.max_length) for k in kinds if isinstance(k, msgspec.inspect.StrType))
    return {name: _string(limits.get(target)) for name, target in FIELD_NAMES.items()}


_STRINGS = Schema(type=OpenAPIType.OBJECT, additional_properties=_string(10_000), max_properties=100)
LEAD = Schema(
    type=OpenAPIType.OBJECT,
    description=(
        "A web form's lead: its named inputs (other names go to `answers`, `utm_*` to `campaign`), "
        "`occurred_at` (business time, with an offset; default now) and `source_ref` (the caller's own id)."
    ),
    properties={
        **_lead_fields(),
        "occurred_at": _string(format=OpenAPIFormat.DATE_TIME),
        "source_ref": _string(128, min_length=1),
        **{name: _STRINGS for name in MAP_FIELDS},
    },
    additional_properties=_string(10_000),
)
LEAD_FORM = Schema(type=OpenAPIType.OBJECT, properties=dict(LEAD.properties or {}), additional_properties=_string())
LEAD_BATCH = Schema(
    type=OpenAPIType.OBJECT,
    required=["leads"],
    properties={"leads": Schema(type=OpenAPIType.ARRAY, items=LEAD, min_items=1)},
    additional_properties=False,
)
WEBHOOK_SIGNATURES = {
    "/v1/webhooks/meta": [_header("X-Hub-Signature-256", "sha256=<hex HMAC-SHA256 of the raw body>", required=True)],
    "/v1/webhooks/typeform": [
        _header("Typeform-Signature", "sha256=<base64 HMAC-SHA256 of the raw body>", required=True)
    ],
    "/v1/webhooks/webflow": [
        _header("X-Webflow-Timestamp", "milliseconds since the epoch; older than 5 minutes is refused", required=True),
        _header("X-Webflow-Signature", "hex HMAC-SHA256 of timestamp:body", required=True),
    ],
}


def _body(description: str, **media: Schema) -> RequestBody:
    return RequestBody(
        content={kind: OpenAPIMediaType(schema=schema) for kind, schema in media.items()},
        description=description,
        required=True,
    )


def _adding(parameters: list[Parameter], body: RequestBody | None = None, stream: bool = False) -> type[Operation]:
    @dataclass
    class Documented(Operation):
        def __post_init__(self) -> None:
            self.parameters = [*(self.parameters or []), *parameters]
            if body is not None:
                self.request_body = body
            if stream and self.responses and "200" in self.responses:
                self.responses["200"].content = {"text/event-stream": OpenAPIMediaType(schema=_string())}  # type: ignore[union-attr]

    return Documented


def document(app: Litestar) -> None:
    """Give each handler the operation class that adds what its signature does not say."""
    writes = [IDEMPOTENCY_KEY, CORRELATION_ID]
    special: dict[tuple[str, str], type[Operation]] = {
        ("/v1/leads", "POST"): _adding(
            [*writes, QUERY_KEY],
            _body(
                "one lead, as JSON or as a plain HTML form post",
                **{"application/json": LEAD, "application/x-www-form-urlencoded": LEAD_FORM},
            ),
        ),
        ("/v1/leads/batch", "POST"): _adding(
            writes, _body("up to max_batch_leads leads", **{"application/json": LEAD_BATCH})
        ),
        ("/v1/deals", "POST"): _adding(writes),
        ("/v1/deals/{deal_id}/stage", "POST"): _adding([*writes, IF_MATCH_REQUIRED]),
        ("/v1/deals/{deal_id}", "PATCH"): _adding([*writes, IF_MATCH_REQUIRED]),
        ("/v1/deals/{deal_id}/reopen", "POST"): _adding([*writes, IF_MATCH_REQUIRED]),
        ("/v1/board/changes", "GET"): _adding([LAST_EVENT_ID], stream=True),
        ("/v1/webhooks/meta", "GET"): _adding(META_HANDSHAKE),
    }
    for path, signatures in WEBHOOK_SIGNATURES.items():
        body = _body("the provider's payload, as it signed it", **{"application/json": Schema(type=OpenAPIType.OBJECT)})
        special[(path, "POST")] = _adding(signatures, body)
    commands = _adding([*writes, IF_MATCH])
    for route in app.routes:
        for handler in getattr(route, "route_handlers", ()):
            if not isinstance(handler, HTTPRouteHandler):
                continue
            for method in handler.http_methods:
                if (route.path, method) in special:
                    handler.operation_class = special[(route.path, method)]
                elif method in {"POST", "PUT"} and handler.status_code == 202:
                    handler.operation_class = commands
