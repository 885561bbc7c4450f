"""Meta (Facebook/Instagram) Lead Ads: the subscription handshake, the signed webhook, the Graph API lead.

The webhook carries ids only; the person's fields come later from ``GET /{leadgen_id}`` on the Graph API,
whose answer ``parse_graph_lead`` maps.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
from collections.abc import Mapping
from typing import Annotated

import msgspec

from events.envelope import RawPayload
from events.types import Ref
from services.errors import AuthError, FieldError, InputError
from services.providers.base import InboundLead
from services.providers.fields import body_text, build_lead, decode_json, source_ref_of, to_utc

MAX_CHANGES = 1_000
"""Meta batches at most this many changes in one request."""

_Id = Ref | Annotated[int, msgspec.Meta(ge=0)]
_UnixSeconds = Annotated[int, msgspec.Meta(ge=0, le=253_402_300_799)]
_SIGNATURE = re.compile(r"sha256=([0-9a-fA-F]{64})")
_CHALLENGE = re.compile(r"[0-9A-Za-z_.\-]{1,128}")


class _Entry(msgspec.Struct, frozen=True):
    changes: list[msgspec.Raw] = []


class _Webhook(msgspec.Struct, frozen=True):
    object: str
    entry: list[_Entry]


class _Change(msgspec.Struct, frozen=True):
    field: str
    value: msgspec.Raw


class _Leadgen(msgspec.Struct, frozen=True):
    leadgen_id: _Id
    created_time: _UnixSeconds
    form_id: _Id | None = None
    page_id: _Id | None = None
    ad_id: _Id | None = None
    adgroup_id: _Id | None = None


class _FieldData(msgspec.Struct, frozen=True):
    name: str
    values: list[str] = []


class _GraphLead(msgspec.Struct, frozen=True):
    id: _Id
    created_time: str
    field_data: list[_FieldData] = []
    form_id: _Id | None = None
    ad_id: _Id | None = None
    adset_id: _Id | None = None
    campaign_id: _Id | None = None
    platform: str | None = None


def verify_challenge(params: Mapping[str, str], verify_token: str) -> str:
    """The ``hub.challenge`` to answer Meta's subscription handshake with.

    Raises ``AuthError`` 403 unless ``hub.mode`` is ``subscribe`` and ``hub.verify_token`` is ours, and
    ``InputError`` 400 when the challenge is missing or not a plain token (it is echoed back verbatim).
    """
    if not verify_token:
        raise AuthError("the Meta verify token is not configured", 403)
    if params.get("hub.mode") != "subscribe":
        raise AuthError("hub.mode must be subscribe", 403)
    given = params.get("hub.verify_token", "")
    if not hmac.compare_digest(given.encode("utf-8", "surrogatepass"), verify_token.encode("utf-8", "surrogatepass")):
        raise AuthError("hub.verify_token does not match", 403)
    challenge = params.get("hub.challenge", "")
    if not _CHALLENGE.fullmatch(challenge):
        raise InputError.one("hub.challenge", "must be 1 to 128 letters, digits, '.', '_' or '-'", 400)
    return challenge


def verify_signature(body: bytes, header: str | None, app_secret: str) -> None:
    """Check ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app secret, raw body)>``; ``AuthError`` 401 if not."""
    if not app_secret:
        raise AuthError("the Meta app secret is not configured")
    if header is None:
        raise AuthError("missing X-Hub-Signature-256")
    match = _SIGNATURE.fullmatch(header.strip())
    if match is None:
        raise AuthError("malformed X-Hub-Signature-256: expected sha256=<64 hex digits>")
    expected = hmac.new(app_secret.encode(), body, hashlib.sha256).digest()
    if not hmac.compare_digest(expected, bytes.fromhex(match[1])):
        raise AuthError("X-Hub-Signature-256 does not match the body")


def _text(value: str | int | None) -> str | None:
    return None if value is None else str(value)


def parse(body: bytes) -> list[InboundLead]:
    """One lead per ``leadgen`` change of a webhook request; other changes are ignored.

    Each lead keeps its own change's JSON, cut verbatim from the request, and the digest of the whole request.
    """
    body_text(body)
    webhook = decode_json(body, _Webhook)
    count = sum(len(entry.changes) for entry in webhook.entry)
    if count > MAX_CHANGES:
        raise InputError.one("entry", f"at most {MAX_CHANGES} changes per request, got {count}")
    batch_sha256 = hashlib.sha256(body).hexdigest()
    leads: list[InboundLead] = []
    for i, entry in enumerate(webhook.entry):
        for j, raw in enumerate(entry.changes):
            path = f"entry.{i}.changes.{j}"
            change = decode_json(raw, _Change, path)
            if change.field != "leadgen":
                continue
            value = decode_json(change.value, _Leadgen, f"{path}.value")
            leadgen_id = str(value.leadgen_id)
            campaign = {"page_id": value.page_id, "ad_id": value.ad_id, "adgroup_id": value.adgroup_id}
            lead = build_lead(
                {
                    "source_ref": leadgen_id,
                    "form_id": _text(value.form_id),
                    "campaign": {k: str(v) for k, v in campaign.items() if v is not None},
                },
                {
                    "campaign": f"{path}.value",
                    "source_ref": f"{path}.value.leadgen_id",
                    "form_id": f"{path}.value.form_id",
                },
            )
            occurred_at = dt.datetime.fromtimestamp(value.created_time, dt.UTC)
            text = bytes(raw).decode("utf-8")
            payload = RawPayload(content_type="application/json", body=text, batch_sha256=batch_sha256)
            source_ref = source_ref_of(lead, f"{path}.value.leadgen_id")
            leads.append(InboundLead("meta", source_ref, occurred_at, lead, payload))
    return leads


_GRAPH_FIELDS = {
    "full_name": "full_name",
    "first_name": "first_name",
    "last_name": "last_name",
    "email": "email",
    "work_email": "email",
    "phone_number": "phone",
    "work_phone_number": "phone",
    "company_name": "company",
    "job_title": "job_title",
}

_GRAPH_RANK = {name: i for i, name in enumerate(_GRAPH_FIELDS)}


def parse_graph_lead(body: bytes) -> InboundLead:
    """A lead from the Graph API's ``GET /{leadgen_id}`` answer, for enriching the id-only webhook lead.

    Known ``field_data`` names fill the personal fields (``email`` before ``work_email``); the rest go to
    ``answers``, several values joined by ", ".
    """
    text = body_text(body)
    graph = decode_json(body, _GraphLead)
    try:
        # The Graph API writes offsets as +0000, which fromisoformat reads since Python 3.11.
        created = dt.datetime.fromisoformat(graph.created_time)
    except ValueError:
        raise InputError.one("created_time", "must be an ISO 8601 time like 2025-11-22T12:39:50+0000") from None
    occurred_at = to_utc(created, "created_time")
    values: dict[str, object] = {}
    where: dict[str, str] = {}
    rank: dict[str, int] = {}
    answers: dict[str, str] = {}
    errors: list[FieldError] = []
    for i, item in enumerate(graph.field_data):
        joined = ", ".join(v.strip() for v in item.values if v.strip())
        target = _GRAPH_FIELDS.get(item.name)
        if target is None:
            if item.name in answers:
                errors.append(FieldError(f"field_data.{i}.name", f"{item.name} is given more than once"))
            answers[item.name] = joined
        elif joined and _GRAPH_RANK[item.name] < rank.get(target, len(_GRAPH_RANK)):
            values[target], where[target], rank[target] = joined, f"field_data.{i}.values", _GRAPH_RANK[item.name]
    if errors:
        raise InputError(errors)
    leadgen_id = str(graph.id)
    campaign = {"ad_id": graph.ad_id, "adset_id": graph.adset_id, "campaign_id": graph.campaign_id}
    values |= {
        "source_ref": leadgen_id,
        "form_id": _text(graph.form_id),
        "campaign": {k: str(v) for k, v in campaign.items() if v is not None}
        | ({"platform": graph.platform} if graph.platform else {}),
        "answers": answers,
    }
    where |= {"source_ref": "id", "form_id": "form_id", "answers": "field_data"}
    lead = build_lead(values, where)
    raw = RawPayload(content_type="application/json", body=text)
    return InboundLead("meta", source_ref_of(lead, "id"), occurred_at, lead, raw)
