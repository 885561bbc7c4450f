"""Web forms: plain HTML posts (urlencoded) and the JSON body of ``POST /v1/leads``.

Also home of the field cleaning every adapter builds its ``LeadCaptured`` with, so a value from any source
meets the same constraints and fails with the same field-and-reason errors.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, TypeVar
from urllib.parse import parse_qsl

import msgspec

from events.envelope import RawPayload
from events.types import LeadCaptured, Ref
from services.errors import FieldError, InputError, from_validation_error
from services.providers.base import InboundLead

_T = TypeVar("_T")

AwareDatetime = Annotated[dt.datetime, msgspec.Meta(tz=True)]

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
}
"""The web form's recognised input names and the ``LeadCaptured`` field each fills."""

_MAPS = ("campaign", "answers")

_FRIENDLY = {
    "email": "must be an email address like name@example.com",
    "phone": "must be 3 to 40 characters: digits, spaces and + ( ) . / -",
    "country": "must be a two-letter ISO 3166-1 country code like PL",
}

_ALIASES: Mapping[str, str] = {
    **{k: "first_name" for k in ("first_name", "firstname", "given_name", "forename")},
    **{k: "last_name" for k in ("last_name", "lastname", "surname", "family_name")},
    **{k: "full_name" for k in ("name", "full_name", "fullname", "your_name")},
    **{k: "email" for k in ("email", "e_mail", "email_address", "work_email", "business_email", "your_email")},
    **{
        k: "phone"
        for k in ("phone", "phone_number", "telephone", "tel", "mobile", "mobile_phone", "work_phone", "your_phone")
    },
    **{k: "company" for k in ("company", "company_name", "organization", "organisation", "business_name")},
    **{k: "job_title" for k in ("job_title", "jobtitle", "job_role", "position")},
    **{k: "message" for k in ("message", "your_message", "comments")},
}


def lead_field_for(name: str) -> str | None:
    """The ``LeadCaptured`` field a provider's own field name or label means ("First Name", "work_email")."""
    return _ALIASES.get(re.sub(r"[\s_.\-]+", "_", name.strip().lower()).strip("_"))


def body_text(body: bytes) -> str:
    """The request body as text; not UTF-8 is a 400 on ``body``."""
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError.one("body", f"not valid UTF-8 (byte {exc.start})", 400) from None


def decode_json(body: bytes | msgspec.Raw, type_: type[_T], prefix: str = "") -> _T:
    """Decode JSON into ``type_``; any failure becomes an ``InputError`` naming the field path."""
    try:
        return msgspec.json.decode(body, type=type_)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise from_validation_error(exc, prefix) from None
    except UnicodeDecodeError:
        # msgspec raises this (not DecodeError) for invalid UTF-8 inside a JSON string.
        raise InputError.one(prefix or "body", "not valid UTF-8", 400) from None


def to_utc(value: dt.datetime, field: str) -> dt.datetime:
    """An aware datetime in UTC; naive or out-of-range times are an ``InputError`` on ``field``."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise InputError.one(field, "must have a timezone offset")
    try:
        return value.astimezone(dt.UTC)
    except OverflowError:
        raise InputError.one(field, "is out of the representable date range") from None


def text_of(value: object) -> str | None:
    """A provider value as the text a person would read: ``15550000000``, ``true``, ``a, b``; ``None`` for nothing."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        # A phone number sent as a JSON number may decode as 15550000000.0; print it the way it was typed.
        return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)
    if isinstance(value, list | tuple):
        parts = [t for t in (text_of(v) for v in value) if t]
        return ", ".join(parts) or None
    try:
        return msgspec.json.encode(value).decode("utf-8")
    except (TypeError, ValueError, msgspec.EncodeError):
        return str(value)


def _clean(value: object) -> object:
    if isinstance(value, str):
        return value.strip() or None
    return value


def _nul_errors(data: Mapping[str, object], where: Mapping[str, str]) -> list[FieldError]:
    # Text with NUL cannot be stored in PostgreSQL, so it would stall a projection later; refuse it now.
    paths: list[str] = []
    for name, value in data.items():
        path = where.get(name, name)
        if isinstance(value, str) and "\x00" in value:
            paths.append(path)
        elif isinstance(value, dict):
            paths.extend(
                f"{path}.{key}".replace("\x00", "\\0") for key, item in value.items() if "\x00" in f"{key}{item}"
            )
    return [FieldError(path, "must not contain NUL characters") for path in paths]


def _field_error(exc: msgspec.ValidationError, where: Mapping[str, str]) -> FieldError:
    [error] = from_validation_error(exc).errors
    head = re.split(r"[.\[]", error.field, maxsplit=1)[0]
    rest = error.field[len(head) :]
    reason = _FRIENDLY[head] if head in _FRIENDLY and "regex" in error.reason else error.reason
    return FieldError(where.get(head, head) + rest, reason)


def build_lead(data: Mapping[str, object], where: Mapping[str, str] | None = None) -> LeadCaptured:
    """A validated ``LeadCaptured`` from field name → raw value.

    Strings are stripped and empty ones dropped, in ``campaign`` and ``answers`` too; a country code is
    upper-cased. ``where`` names the input path each field came from, so errors point at what the caller sent.
    Every invalid field is reported, not just the first.
    """
    where = where or {}
    cleaned: dict[str, object] = {}
    for name, value in data.items():
        if name in _MAPS and isinstance(value, Mapping):
            items = {k: _clean(v) for k, v in value.items()}
            cleaned[name] = {k: v for k, v in items.items() if v is not None}
            continue
        value = _clean(value)
        if name == "country" and isinstance(value, str) and value.isascii():
            value = value.upper()
        if value is not None:
            cleaned[name] = value
    if errors := _nul_errors(cleaned, where):
        raise InputError(errors)
    try:
        return msgspec.convert(cleaned, LeadCaptured)
    except msgspec.ValidationError:
        pass
    # msgspec stops at the first problem; a person fixing a form wants all of them at once.
    errors = []
    for name, value in cleaned.items():
        try:
            msgspec.convert({name: value}, LeadCaptured)
        except msgspec.ValidationError as exc:
            errors.append(_field_error(exc, where))
    if not errors:  # pragma: no cover - every field valid alone but not together cannot happen today
        errors = [FieldError("body", "invalid lead")]
    raise InputError(errors)


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
        elif _clean(value) is None:
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
    (business time, with an offset; default ``now``), ``source_ref`` (the caller's id, making a retry a no-op)
    and ``campaign`` / ``answers`` objects of strings."""
    text = body_text(body)
    document = decode_json(body, dict[str, Any])
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
            elif name in _MAPS:
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
