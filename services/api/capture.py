"""Lead capture: web forms (JSON or urlencoded) and the Meta, Typeform and Webflow webhooks.

Signatures are checked on the raw body before anything is parsed. Each lead's aggregate id is derived
from the source's own id (or the caller's ``Idempotency-Key``), so a redelivery lands on the lead that
already exists and gets the first answer back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import parse_qsl

import msgspec
from litestar import Response, Router, get, post
from litestar.exceptions import NotFoundException

from events import handlers
from events.commands import CaptureLeads, NewLead
from events.ids import derived_id, uuid7
from events.ledger import Accepted, Context
from services.api.common import AnyRequest, accepted, business_time, caller_of, context, requires, runtime
from services.api.leads import list_leads
from services.api.params import QUERY_OPT
from services.errors import AuthError, FieldError, InputError
from services.providers import html_form, meta, typeform, webflow
from services.providers.base import InboundLead
from services.providers.fields import decode_json

T = TypeVar("T")


async def _capture_all(request: AnyRequest, ctx: Context, leads: list[InboundLead], id_scope: str) -> list[Accepted]:
    rt = runtime(request)
    skew = rt.settings.config.max_clock_skew_seconds
    new = [
        NewLead(
            derived_id(id_scope, lead.source_ref) if lead.source_ref else uuid7(),
            lead.lead,
            business_time(lead.occurred_at, ctx.now, skew, "occurred_at"),
            lead.raw,
        )
        for lead in leads
    ]
    return await handlers.capture_leads(rt.ledger, ctx, CaptureLeads(leads=new))


@post(
    "/leads",
    status_code=202,
    tags=["capture"],
    guards=[requires("leads:capture", allow_query_key=True)],
    opt={QUERY_OPT: ("key",)},
)
async def capture_lead(request: AnyRequest) -> Response[Any]:
    """Capture a web form's lead, sent as JSON or as a plain HTML form (``application/x-www-form-urlencoded``).

    The credential may come as ``Authorization: Bearer``, or for capture-only keys as ``?key=`` (HTML forms
    cannot set headers). ``Idempotency-Key`` (or ``source_ref`` in the body) makes a retry a no-op.
    """
    caller = caller_of(request)
    body = await request.body()
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    ctx = context(request, source="web_form", body=_canonical(media, body))
    if media == "application/json":
        lead = html_form.parse_json(body, ctx.now)
    elif media == "application/x-www-form-urlencoded":
        lead = html_form.parse(body, ctx.now)
    else:
        raise InputError.one("Content-Type", "must be application/json or application/x-www-form-urlencoded", 415)
    identity = lead.source_ref or (ctx.idempotency_key and f"key:{ctx.idempotency_key}")
    scoped = InboundLead(lead.source, identity or None, lead.occurred_at, lead.lead, lead.raw)
    [result] = await _capture_all(request, ctx, [scoped], f"web_form:{caller.id}")
    return accepted(result)


def _canonical(media: str, body: bytes) -> object:
    """The body as its Idempotency-Key fingerprint reads it: decoded (key order and spacing do not count), or the
    bytes themselves when they do not decode (the request is refused anyway)."""
    try:
        if media == "application/json":
            return msgspec.json.decode(body)
        if media == "application/x-www-form-urlencoded":
            return sorted(parse_qsl(body.decode(), keep_blank_values=True))
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError, ValueError):
        pass
    return body


class LeadBatch(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The body of ``POST /v1/leads/batch``: leads as ``POST /v1/leads`` takes them as JSON."""

    leads: list[msgspec.Raw]


@post("/leads/batch", status_code=202, tags=["capture"], guards=[requires("leads:capture")])
async def capture_leads(request: AnyRequest) -> Response[Any]:
    """Capture up to ``max_batch_leads`` leads in one request: all are checked before any is appended.

    Each lead needs its own ``source_ref`` unless the request carries an ``Idempotency-Key`` (then the n-th
    lead's identity is the key and n), so that a retry after a partial failure lands each lead once.
    Answers 202 with one entry per lead, in order, once every lead is in the log.
    """
    caller = caller_of(request)
    body = await request.body()
    ctx = context(request, body=_canonical("application/json", body))
    batch = decode_json(body, LeadBatch)
    limit = runtime(request).settings.config.max_batch_leads
    if not 1 <= len(batch.leads) <= limit:
        raise InputError.one("leads", f"must hold 1 to {limit} leads, got {len(batch.leads)}")
    leads: list[InboundLead] = []
    errors: list[FieldError] = []
    for n, item in enumerate(batch.leads):
        try:
            lead = html_form.parse_document(decode_json(item, dict[str, Any]), bytes(item).decode(), ctx.now)
            identity = lead.source_ref or (ctx.idempotency_key and f"key:{ctx.idempotency_key}#{n}")
            if not identity:
                raise InputError.one("source_ref", "required for each lead of a batch sent without Idempotency-Key")
            business_time(
                lead.occurred_at, ctx.now, runtime(request).settings.config.max_clock_skew_seconds, "occurred_at"
            )
            leads.append(InboundLead(lead.source, identity, lead.occurred_at, lead.lead, lead.raw))
        except InputError as exc:
            errors.extend(
                FieldError(f"leads.{n}" if e.field == "body" else f"leads.{n}.{e.field}", e.reason) for e in exc.errors
            )
    if errors:
        raise InputError(errors)
    return accepted(await _capture_all(request, ctx, leads, f"web_form:{caller.id}"))


def _webhook_config(request: AnyRequest, name: str) -> Any:
    value = getattr(runtime(request).settings.config.webhooks, name)
    if value is None:
        raise NotFoundException(f"the {name} webhook is not configured on this server")
    return value


def _count_signed(request: AnyRequest, source: str, verify: Callable[[], T]) -> T:
    """Count a webhook request against its source's rate once ``verify`` has checked its signature.

    A webhook's credential is its provider's secret: signed requests count against ``webhook:<source>``,
    requests failing the check against ``webhook:<source> (unsigned)``, so that a flood of forgeries is
    refused on its own and never drains the real provider's bucket."""
    rt = runtime(request)
    try:
        checked = verify()
    except AuthError:
        rt.throttle(f"webhook:{source} (unsigned)")
        raise
    rt.throttle(f"webhook:{source}")
    return checked


def _system_context(request: AnyRequest, source: Any) -> Context:
    return Context(
        actor=f"webhook:{source}",
        source=source,
        now=runtime(request).now(),
        correlation_id=request.scope.get("state", {}).get("request_id") or uuid7(),
    )


@get(
    "/webhooks/meta",
    tags=["webhooks"],
    media_type="text/plain",
    opt={QUERY_OPT: ("hub.mode", "hub.challenge", "hub.verify_token")},
)
async def meta_handshake(request: AnyRequest) -> str:
    """Meta's subscription handshake: echo ``hub.challenge`` when ``hub.verify_token`` matches."""
    config = _webhook_config(request, "meta")
    return _count_signed(
        request, "meta", lambda: meta.verify_challenge(dict(request.query_params), config.verify_token)
    )


@post("/webhooks/meta", status_code=200, tags=["webhooks"])
async def meta_webhook(request: AnyRequest) -> Response[Any]:
    """Meta Lead Ads changes, batched; ``X-Hub-Signature-256`` over the raw body. Answers 200 (Meta wants 200)
    only after every lead of the batch is in the log."""
    config = _webhook_config(request, "meta")
    body = await request.body()
    signature = request.headers.get("x-hub-signature-256")
    _count_signed(request, "meta", lambda: meta.verify_signature(body, signature, config.app_secret))
    leads = meta.parse(body)
    results = await _capture_all(request, _system_context(request, "meta"), leads, "meta")
    return Response(results, status_code=200)


@post("/webhooks/typeform", status_code=202, tags=["webhooks"])
async def typeform_webhook(request: AnyRequest) -> Response[Any]:
    config = _webhook_config(request, "typeform")
    body = await request.body()
    signature = request.headers.get("typeform-signature")
    _count_signed(request, "typeform", lambda: typeform.verify_signature(body, signature, config.secret))
    results = await _capture_all(request, _system_context(request, "typeform"), typeform.parse(body), "typeform")
    return accepted(results[0] if len(results) == 1 else results)


@post("/webhooks/webflow", status_code=202, tags=["webhooks"])
async def webflow_webhook(request: AnyRequest) -> Response[Any]:
    config = _webhook_config(request, "webflow")
    body = await request.body()
    timestamp, signature = request.headers.get("x-webflow-timestamp"), request.headers.get("x-webflow-signature")
    now = runtime(request).now()
    _count_signed(request, "webflow", lambda: webflow.verify_signature(body, timestamp, signature, config.secret, now))
    results = await _capture_all(request, _system_context(request, "webflow"), webflow.parse(body), "webflow")
    return accepted(results[0] if len(results) == 1 else results)


# GET /v1/leads (the lead list) shares its path with the capture: Litestar needs both in one router.
router = Router(
    path="/v1",
    route_handlers=[
        capture_lead,
        capture_leads,
        list_leads,
        meta_handshake,
        meta_webhook,
        typeform_webhook,
        webflow_webhook,
    ],
)
