"""Field cleaning shared by every lead source: one set of constraints, one way of naming what is wrong."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Annotated, TypeVar

import msgspec

from events.ids import InvalidId, check_id
from events.types import LeadCaptured, attribute_problems, with_marketing_ids
from services.errors import FieldError, InputError, from_validation_error

_T = TypeVar("_T")

AwareDatetime = Annotated[dt.datetime, msgspec.Meta(tz=True)]

MAP_FIELDS = ("campaign", "answers")

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
    except RecursionError:
        # And this for arrays or objects nested about a thousand deep, even where the type skips the value.
        raise InputError.one(prefix or "body", "nested too deeply", 400) from None


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
        # A list within the list reads as its JSON: the recursion stops at one level however deep the input.
        parts = [t for t in (_json_text(v) if isinstance(v, list | tuple) else text_of(v) for v in value) if t]
        return ", ".join(parts) or None
    return _json_text(value)


def _json_text(value: object) -> str:
    try:
        return msgspec.json.encode(value).decode("utf-8")
    except (TypeError, ValueError, RecursionError, msgspec.EncodeError):
        return str(value)


def clean(value: object) -> object:
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


def _ref_errors(data: Mapping[str, object], where: Mapping[str, str]) -> list[FieldError]:
    # The source's own ids identify a redelivery (hashed into the lead's id) and are kept on the lead.
    errors: list[FieldError] = []
    for name in ("source_ref", "form_id"):
        if isinstance(value := data.get(name), str):
            try:
                check_id(value, where.get(name, name), "ref")
            except InvalidId as exc:
                errors.append(FieldError(exc.field, exc.reason))
    return errors


def _attribute_errors(value: object, path: str) -> list[FieldError]:
    # msgspec names neither the name nor the entry of a map that is too long ("$.answers[...]"): name them here.
    if not isinstance(value, Mapping):
        return []
    return [FieldError(field, reason) for field, reason in attribute_problems(path, value)]


def _field_error(exc: msgspec.ValidationError, where: Mapping[str, str]) -> FieldError:
    [error] = from_validation_error(exc).errors
    head = re.split(r"[.\[]", error.field, maxsplit=1)[0]
    rest = error.field[len(head) :]
    reason = _FRIENDLY[head] if head in _FRIENDLY and "regex" in error.reason else error.reason
    return FieldError(where.get(head, head) + rest, reason)


def source_ref_of(lead: LeadCaptured, field: str) -> str:
    """The lead's id at its source as cleaned (stripped); a blank one cannot identify a redelivery."""
    if lead.source_ref is None:
        raise InputError.one(field, "must not be blank")
    return lead.source_ref


def build_lead(data: Mapping[str, object], where: Mapping[str, str] | None = None) -> LeadCaptured:
    """A validated ``LeadCaptured`` from field name → raw value.

    Strings are stripped and empty ones dropped, in ``campaign`` and ``answers`` too; a country code is
    upper-cased; the marketing source and campaign are filled in (``events.types.with_marketing_ids``).
    ``where`` names the input path each field came from, so errors point at what the caller sent.
    Every invalid field is reported, not just the first.
    """
    where = where or {}
    cleaned: dict[str, object] = {}
    for name, value in data.items():
        if name in MAP_FIELDS and isinstance(value, Mapping):
            items = {k: clean(v) for k, v in value.items()}
            cleaned[name] = {k: v for k, v in items.items() if v is not None}
            continue
        value = clean(value)
        if name == "country" and isinstance(value, str) and value.isascii():
            value = value.upper()
        if value is not None:
            cleaned[name] = value
    if errors := _nul_errors(cleaned, where) or _ref_errors(cleaned, where):
        raise InputError(errors)
    # The event type reads old events leniently; a new one is held to today's entry limits here.
    over = {name: _attribute_errors(cleaned[name], where.get(name, name)) for name in MAP_FIELDS if name in cleaned}
    try:
        lead = msgspec.convert(cleaned, LeadCaptured)
    except msgspec.ValidationError:
        pass
    else:
        if limits := [e for named in over.values() for e in named]:
            raise InputError(limits)
        return with_marketing_ids(lead)
    # msgspec stops at the first problem; a person fixing a form wants all of them at once.
    errors = []
    for name, value in cleaned.items():
        if over.get(name):
            errors.extend(over[name])
            continue
        try:
            msgspec.convert({name: value}, LeadCaptured)
        except msgspec.ValidationError as exc:
            errors.append(_field_error(exc, where))
    if not errors:  # pragma: no cover - every field valid alone but not together cannot happen today
        errors = [FieldError("body", "invalid lead")]
    raise InputError(errors)
