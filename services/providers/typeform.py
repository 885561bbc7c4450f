"""Typeform: the signed ``form_response`` webhook, one lead per request."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import Any

import msgspec

from events.envelope import RawPayload
from events.types import Ref
from services.errors import AuthError, FieldError, InputError
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

_PREFIX = "sha256="


class _AnswerField(msgspec.Struct, frozen=True):
    id: str | None = None
    ref: str | None = None
    type: str | None = None


class _Choice(msgspec.Struct, frozen=True):
    label: str | None = None
    other: str | None = None


class _Choices(msgspec.Struct, frozen=True):
    labels: list[str] = []
    other: str | None = None


class _Answer(msgspec.Struct, frozen=True):
    type: str
    field: _AnswerField
    text: str | None = None
    email: str | None = None
    phone_number: str | None = None
    url: str | None = None
    file_url: str | None = None
    date: str | None = None
    number: int | float | None = None
    boolean: bool | None = None
    choice: _Choice | None = None
    choices: _Choices | None = None


class _FormResponse(msgspec.Struct, frozen=True):
    token: Ref
    submitted_at: AwareDatetime
    form_id: Ref | None = None
    hidden: dict[str, str | None] = {}
    answers: list[msgspec.Raw] = []


class _Webhook(msgspec.Struct, frozen=True):
    event_type: str
    form_response: _FormResponse


def verify_signature(body: bytes, header: str | None, secret: str) -> None:
    """Check ``Typeform-Signature: sha256=<base64 HMAC-SHA256(secret, raw body)>``; ``AuthError`` 401 if not."""
    if not secret:
        raise AuthError("the Typeform secret is not configured")
    if header is None:
        raise AuthError("missing Typeform-Signature")
    value = header.strip()
    try:
        if not value.startswith(_PREFIX):
            raise ValueError(value)
        given = base64.b64decode(value.removeprefix(_PREFIX), validate=True)
    except (ValueError, binascii.Error):
        given = b""
    # Canonical base64 only: the last character before "=" carries two unused bits, and a header differing
    # there would decode to the same digest; only the exact signature Typeform sends passes.
    if len(given) != hashlib.sha256().digest_size or base64.b64encode(given).decode() != value.removeprefix(_PREFIX):
        raise AuthError("malformed Typeform-Signature: expected sha256=<base64 of 32 bytes>")
    expected = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    if not hmac.compare_digest(expected, given):
        raise AuthError("Typeform-Signature does not match the body")


def _answer_text(answer: _Answer, raw: msgspec.Raw) -> str | None:
    match answer.type:
        case "text" | "email" | "phone_number" | "url" | "file_url" | "date" | "number" | "boolean":
            return text_of(getattr(answer, answer.type))
        case "choice":
            return None if answer.choice is None else answer.choice.label or answer.choice.other
        case "choices":
            if answer.choices is None:
                return None
            return text_of([*answer.choices.labels, answer.choices.other])
    # Typeform names an answer's value after its type (payment, multi_format, ...); read it as text.
    document = msgspec.json.decode(raw, type=dict[str, Any])
    return text_of(document.get(answer.type))


def parse(body: bytes) -> list[InboundLead]:
    """The one lead of a ``form_response`` webhook.

    Answers are keyed by their field's ``ref`` (its ``id`` when there is none); refs such as ``email``,
    ``work_email`` or ``company_name`` fill the personal fields, and an ``email`` or ``phone_number`` answer
    fills email or phone when no ref did. Hidden fields (``utm_*``) become ``campaign``.
    """
    text = body_text(body)
    webhook = decode_json(body, _Webhook)
    if webhook.event_type != "form_response":
        raise InputError.one("event_type", f"must be form_response, got {webhook.event_type!r}")
    response = webhook.form_response
    values: dict[str, object] = {}
    where: dict[str, str] = {}
    by_type: dict[str, tuple[str, str]] = {}
    answers: dict[str, str] = {}
    errors: list[FieldError] = []
    for i, raw in enumerate(response.answers):
        path = f"form_response.answers.{i}"
        answer = decode_json(raw, _Answer, path)
        key = answer.field.ref or answer.field.id or f"answer_{i}"
        if key in answers:
            errors.append(FieldError(f"{path}.field.ref", f"{key!r} is answered more than once"))
            continue
        value = _answer_text(answer, raw)
        if value is None or not value.strip():
            continue
        answers[key] = value
        value_path = f"{path}.{answer.type}"
        target = lead_field_for(key)
        if target is not None and target not in values:
            values[target], where[target] = value, value_path
        if answer.type in ("email", "phone_number"):
            by_type.setdefault("email" if answer.type == "email" else "phone", (value, value_path))
    if errors:
        raise InputError(errors)
    for target, (value, value_path) in by_type.items():
        if target not in values:
            values[target], where[target] = value, value_path
    values |= {
        "source_ref": response.token,
        "form_id": response.form_id,
        "campaign": {k: v for k, v in response.hidden.items() if v is not None},
        "answers": answers,
    }
    where |= {
        "campaign": "form_response.hidden",
        "answers": "form_response.answers",
        "source_ref": "form_response.token",
        "form_id": "form_response.form_id",
    }
    lead = build_lead(values, where)
    occurred_at = to_utc(response.submitted_at, "form_response.submitted_at")
    raw_payload = RawPayload(content_type="application/json", body=text)
    return [InboundLead("typeform", source_ref_of(lead, "form_response.token"), occurred_at, lead, raw_payload)]
