"""Web forms: plain HTML posts (urlencoded) and the JSON body of ``POST /v1/leads``."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl

import msgspec

from events.envelope import RawPayload
from events.types import LeadCaptured, Ref
from services.errors import FieldError, InputError, from_validation_error
from services.providers.base import InboundLead
from services.providers.fields import (
    MAP_FIELDS,
    AwareDatetime,
    body_text,
    build_lead,
    clean,
    decode_json,
    to_utc,
)

MAX_FORM_FIELDS = 250
"""More fields than any real form has: a bound on the work one request can cause."""

FIELD_NAMES: Mapping[str, str] = {
    "first_name": "first_name",
    "last_name": "last_name",
    "name": "full_name",
    "full_name": "full_name",
    "email": "email",
    "phone": "phone",
    "company": "company",
    "job_title": "job_title",
    "country": "country",
    "message": "message",
    "source": "source",
}
"""The web form's recognised input names and the ``LeadCaptured`` field each fills."""


def _require_names(names: Iterable[str]) -> None:
    # An error must name its field; a nameless one cannot be named, nor kept in ``answers`` meaningfully.
    if any(not name for name in names):
        raise InputError.one("body", "every field needs a name; one has an empty name")


def _lead(fields: Mapping[str, str], extra: Mapping[str, object] | None = None) -> LeadCaptured:
    _require_names(fields)
    values: dict[str, object] = dict(extra or {})
    where: dict[str, str] = {}
    campaign: dict[str, str] = {}
    answers: dict[str, str] = {}
    errors: list[FieldError] = []
    for name, value in fields.items():
        target = FIELD_NAMES.get(name)
        if target is None:
            (campaign if name.startswith("utm_") else answers)[name] = value
        elif clean(value) is None:
            continue
        elif target in where:
            errors.append(FieldError(name, f"gives {target} again (already given as {where[target]})"))
        else:
            values[target], where[target] = value, name
    if errors:
        raise InputError(errors)
    values["campaign"] = {**campaign, **_mapping(values.get("campaign"))}
    values["answers"] = {**answers, **_mapping(values.get("answers"))}
    return build_lead(values, where)


def _mapping(value: object) -> dict[str, str]:
    return dict(value) if isinstance(value, dict) else {}


def lead_from_fields(fields: Mapping[str, str]) -> LeadCaptured:
    """A lead from a web form's named inputs (see ``FIELD_NAMES``); ``utm_*`` go to ``campaign``, the rest to
    ``answers``."""
    return _lead(fields)


def parse(body: bytes, now: dt.datetime) -> InboundLead:
    """An ``application/x-www-form-urlencoded`` UTF-8 form post; its business time is ``now``.

    A name given twice is an error on that name (which value was meant cannot be known).
    """
    text = body_text(body)
    try:
        pairs = parse_qsl(
            text,
            keep_blank_values=True,
            strict_parsing=False,
            encoding="utf-8",
            errors="strict",
            max_num_fields=MAX_FORM_FIELDS,
        )
    except UnicodeDecodeError:
        raise InputError.one("body", "percent-encoded bytes are not valid UTF-8", 400) from None
    except ValueError:
        raise InputError.one("body", f"more than {MAX_FORM_FIELDS} fields", 400) from None
    _require_names(name for name, _ in pairs)
    fields: dict[str, str] = {}
    repeated: list[str] = []
    for name, value in pairs:
        if name in fields and name not in repeated:
            repeated.append(name)
        fields.setdefault(name, value)
    if repeated:
        raise InputError([FieldError(name, "given more than once") for name in repeated])
    raw = RawPayload(content_type="application/x-www-form-urlencoded", body=text)
    return InboundLead("web_form", None, _utc_now(now), lead_from_fields(fields), raw)


def parse_json(body: bytes, now: dt.datetime) -> InboundLead:
    """The JSON body of ``POST /v1/leads``: a flat object of the web form's names, plus optional ``occurred_at``
    (business time, with an offset; default ``now``), ``source_ref`` (the caller's id, making a retry a no-op),
    ``source`` (the marketing source: ``referral``, ``event``, ...), ``utm_*`` (into ``campaign``) and
    ``campaign`` / ``answers`` objects of strings."""
    text = body_text(body)
    return parse_document(decode_json(body, dict[str, Any]), text, now)


def parse_document(document: dict[str, Any], text: str, now: dt.datetime) -> InboundLead:
    """One lead given as a decoded JSON object (``text`` is its source, kept as the raw payload)."""
    _require_names(document)
    occurred_at = _utc_now(now)
    extra: dict[str, object] = {}
    fields: dict[str, str] = {}
    errors: list[FieldError] = []
    for name, value in document.items():
        try:
            if name == "occurred_at":
                occurred_at = msgspec.convert(value, AwareDatetime) if value is not None else now
            elif name == "source_ref":
                extra["source_ref"] = msgspec.convert(value, Ref | None)
            elif name in MAP_FIELDS:
                extra[name] = _string_map(value, name, errors)
            elif value is None or isinstance(value, str):
                fields[name] = value or ""
            else:
                errors.append(FieldError(name, f"Expected `str | null`, got `{_json_type(value)}`"))
        except msgspec.ValidationError as exc:
            errors.extend(from_validation_error(exc, name).errors)
    if errors:
        raise InputError(errors)
    lead = _lead(fields, extra)
    raw = RawPayload(content_type="application/json", body=text)
    return InboundLead("web_form", lead.source_ref, to_utc(occurred_at, "occurred_at"), lead, raw)


def _utc_now(now: dt.datetime) -> dt.datetime:
    if now.tzinfo is None:
        raise ValueError("now must be an aware datetime")
    return now.astimezone(dt.UTC)


def _string_map(value: object, path: str, errors: list[FieldError]) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        errors.append(FieldError(path, f"Expected `object | null`, got `{_json_type(value)}`"))
        return {}
    for key, item in value.items():
        if not isinstance(item, str):
            errors.append(FieldError(f"{path}.{key}", f"Expected `str`, got `{_json_type(item)}`"))
    return {key: item for key, item in value.items() if isinstance(item, str)}


def _json_type(value: object) -> str:
    return {bool: "bool", int: "int", float: "float", list: "array", dict: "object", type(None): "null"}.get(
        type(value), "value"
    )
