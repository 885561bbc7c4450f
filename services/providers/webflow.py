"""Webflow: the signed ``form_submission`` webhook, one lead per request."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
from typing import Any

import msgspec

from events.envelope import RawPayload
from events.types import Ref
from services.errors import AuthError, InputError
from services.providers.base import InboundLead
from services.providers.fields import (
    AwareDatetime,
    body_text,
    build_lead,
    decode_json,
    lead_field_for,
    source_ref_of,
    text_of,
    to_utc,
)

MAX_AGE = dt.timedelta(minutes=5)
"""How far a request's timestamp may be from our clock, either way, before it counts as a replay."""

_TIMESTAMP = re.compile(r"[0-9]{1,15}")
_SIGNATURE = re.compile(r"[0-9a-fA-F]{64}")


class _Payload(msgspec.Struct, frozen=True):
    id: Ref
    submittedAt: AwareDatetime
    formId: Ref | None = None
    data: dict[str, Any] = {}


class _Webhook(msgspec.Struct, frozen=True):
    triggerType: str
    payload: _Payload


def verify_signature(
    body: bytes, timestamp_header: str | None, signature_header: str | None, secret: str, now: dt.datetime
) -> None:
    """Check ``x-webflow-signature: <hex HMAC-SHA256(secret, "<x-webflow-timestamp>:<raw body>")>`` and that the
    millisecond timestamp is within 5 minutes of ``now`` (older is a replay); ``AuthError`` 401 if not."""
    if now.tzinfo is None:
        raise ValueError("now must be an aware datetime")
    if not secret:
        raise AuthError("the Webflow secret is not configured")
    if timestamp_header is None or signature_header is None:
        raise AuthError("missing x-webflow-timestamp or x-webflow-signature")
    timestamp, signature = timestamp_header.strip(), signature_header.strip()
    if not _TIMESTAMP.fullmatch(timestamp):
        raise AuthError("malformed x-webflow-timestamp: expected milliseconds since the epoch")
    if not _SIGNATURE.fullmatch(signature):
        raise AuthError("malformed x-webflow-signature: expected 64 hex digits")
    expected = hmac.new(secret.encode(), timestamp.encode() + b":" + body, hashlib.sha256).digest()
    if not hmac.compare_digest(expected, bytes.fromhex(signature)):
        raise AuthError("x-webflow-signature does not match the timestamp and body")
    # Integer milliseconds: float seconds would lose precision at the boundary.
    skew_ms = (now - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(milliseconds=1) - int(timestamp)
    limit_ms = MAX_AGE // dt.timedelta(milliseconds=1)
    if skew_ms > limit_ms:
        raise AuthError("x-webflow-timestamp is more than 5 minutes old: a replayed or delayed request")
    if skew_ms < -limit_ms:
        raise AuthError("x-webflow-timestamp is more than 5 minutes in the future")


def parse(body: bytes) -> list[InboundLead]:
    """The one lead of a ``form_submission`` webhook.

    ``data`` names are matched case-insensitively ("First Name", "email", "Phone Number", "Company", ...) to
    the personal fields; every ``data`` value, as text, also goes to ``answers``, and ``utm_*`` to ``campaign``.
    """
    text = body_text(body)
    webhook = decode_json(body, _Webhook)
    if webhook.triggerType != "form_submission":
        raise InputError.one("triggerType", f"must be form_submission, got {webhook.triggerType!r}")
    payload = webhook.payload
    values: dict[str, object] = {}
    where: dict[str, str] = {}
    answers: dict[str, str] = {}
    campaign: dict[str, str] = {}
    for name, raw_value in payload.data.items():
        value = text_of(raw_value)
        if value is None or not value.strip():
            continue
        answers[name] = value
        if name.strip().lower().startswith("utm_"):
            campaign[name.strip().lower()] = value
        target = lead_field_for(name)
        if target is not None and target not in values:
            values[target], where[target] = value, f"payload.data.{name}"
    values |= {"source_ref": payload.id, "form_id": payload.formId, "campaign": campaign, "answers": answers}
    where |= {"campaign": "payload.data", "answers": "payload.data"}
    where |= {"source_ref": "payload.id", "form_id": "payload.formId"}
    lead = build_lead(values, where)
    occurred_at = to_utc(payload.submittedAt, "payload.submittedAt")
    raw = RawPayload(content_type="application/json", body=text)
    return [InboundLead("webflow", source_ref_of(lead, "payload.id"), occurred_at, lead, raw)]
