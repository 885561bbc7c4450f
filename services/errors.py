"""Errors the edges answer with: the field and the reason, never a stack trace."""

from __future__ import annotations

import re

import msgspec


class FieldError(msgspec.Struct, frozen=True):
    """One problem with the input: where (a dotted field path, ``body`` or a header name) and why."""

    field: str
    reason: str


class InputError(Exception):
    """Bad input: answered with ``status`` (422 by default, 400 for unreadable bodies) and the field errors."""

    def __init__(self, errors: list[FieldError], status: int = 422) -> None:
        super().__init__("; ".join(f"{e.field}: {e.reason}" for e in errors))
        self.errors = errors
        self.status = status

    @classmethod
    def one(cls, field: str, reason: str, status: int = 422) -> InputError:
        return cls([FieldError(field, reason)], status)


class AuthError(Exception):
    """A missing or bad credential or signature (401), or a credential without the scope (403)."""

    def __init__(self, reason: str, status: int = 401) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class RateLimited(Exception):
    """A credential (an API key, or a webhook source) over its request rate: 429, retry after ``retry_after``."""

    def __init__(self, credential: str, rate: float, burst: int, retry_after: float, what: str = "requests") -> None:
        super().__init__(f"{credential} is over its limit of {rate:g} {what} per second (bursts of {burst})")
        self.credential = credential
        self.rate = rate
        self.burst = burst
        self.retry_after = retry_after


_NAMED_FIELD = re.compile(r"^Object (?:contains unknown|missing required) field `([^`]*)`$")
_AT_PATH = re.compile(r"^(?P<reason>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)


def from_validation_error(exc: msgspec.ValidationError | msgspec.DecodeError, prefix: str = "") -> InputError:
    """Turn msgspec's "Expected `str`, got `int` - at `$.email`" into field ``email``, reason "Expected ..."."""
    message = str(exc)
    match = _AT_PATH.match(message)
    reason, path = (match.group("reason"), match.group("path")) if match else (message, None)
    named = _NAMED_FIELD.match(reason)
    if named:
        # msgspec names an unknown or missing key in the reason, at the path of the object that holds it.
        path = f"{path or ''}.{named.group(1)}"
    field = (path or "").lstrip(".") or "body"
    field = re.sub(r"\[(\d+)\]", r".\1", field).lstrip(".")
    if prefix:
        field = f"{prefix}.{field}" if field != "body" else prefix
    status = 400 if isinstance(exc, msgspec.DecodeError) and not isinstance(exc, msgspec.ValidationError) else 422
    return InputError.one(field, reason, status)
