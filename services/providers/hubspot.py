"""HubSpot Forms API v3: the body a site posts when it submits a HubSpot form (unsigned)."""

from __future__ import annotations

import datetime as dt

import msgspec

from events.envelope import RawPayload
from services.errors import FieldError, InputError
from services.providers.base import InboundLead
from services.providers.fields import body_text, build_lead, decode_json

_CONTACT = "0-1"
_COMPANY = "0-2"

_FIELDS = {
    (_CONTACT, "email"): "email",
    (_CONTACT, "firstname"): "first_name",
    (_CONTACT, "lastname"): "last_name",
    (_CONTACT, "phone"): "phone",
    (_CONTACT, "mobilephone"): "phone",
    (_CONTACT, "company"): "company",
    (_CONTACT, "jobtitle"): "job_title",
    (_CONTACT, "message"): "message",
    (_COMPANY, "name"): "company",
}
"""HubSpot's internal property names, per object type (contact 0-1, company 0-2), to lead fields."""


class _Field(msgspec.Struct, frozen=True):
    name: str
    value: str
    objectTypeId: str = _CONTACT


class _Context(msgspec.Struct, frozen=True):
    hutk: str | None = None
    pageUri: str | None = None
    pageName: str | None = None


class _Submission(msgspec.Struct, frozen=True):
    fields: list[_Field]
    submittedAt: str | int | None = None
    context: _Context | None = None


def _submitted_at(value: str | int | None, now: dt.datetime) -> dt.datetime:
    if value is None:
        return now.astimezone(dt.UTC)
    if isinstance(value, str) and not (value.isascii() and value.isdigit()):
        raise InputError.one("submittedAt", "must be milliseconds since the epoch")
    try:
        return dt.datetime.fromtimestamp(int(value) / 1000, dt.UTC)
    except (OverflowError, OSError, ValueError):
        raise InputError.one("submittedAt", "is out of the representable date range") from None


def parse(body: bytes, now: dt.datetime) -> InboundLead:
    """The lead of one form submission; business time is ``submittedAt`` (milliseconds), else ``now``.

    Contact properties go to ``answers`` by name, other objects' as ``<objectTypeId>/<name>``; the page and
    the ``hutk`` cookie go to ``campaign``. HubSpot gives no submission id, so ``source_ref`` is ``None``.
    """
    if now.tzinfo is None:
        raise ValueError("now must be an aware datetime")
    text = body_text(body)
    submission = decode_json(body, _Submission)
    values: dict[str, object] = {}
    where: dict[str, str] = {}
    answers: dict[str, str] = {}
    errors: list[FieldError] = []
    for i, field in enumerate(submission.fields):
        key = field.name if field.objectTypeId == _CONTACT else f"{field.objectTypeId}/{field.name}"
        if key in answers:
            errors.append(FieldError(f"fields.{i}.name", f"{key!r} is given more than once"))
            continue
        answers[key] = field.value
        target = _FIELDS.get((field.objectTypeId, field.name))
        if target is not None and field.value.strip() and target not in values:
            values[target], where[target] = field.value, f"fields.{i}.value"
    if errors:
        raise InputError(errors)
    context = submission.context or _Context()
    campaign = {"page_uri": context.pageUri, "page_name": context.pageName, "hutk": context.hutk}
    values |= {"campaign": {k: v for k, v in campaign.items() if v}, "answers": answers}
    where |= {"campaign": "context", "answers": "fields"}
    lead = build_lead(values, where)
    occurred_at = _submitted_at(submission.submittedAt, now)
    return InboundLead("hubspot", None, occurred_at, lead, RawPayload(content_type="application/json", body=text))
