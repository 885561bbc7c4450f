"""Identifiers: UUIDv7 event ids and deterministic aggregate ids derived from a source's own id."""

from __future__ import annotations

import hashlib
import os
import re
import time
import uuid
from typing import Literal

# Fixed namespace: ids derived from a source's own id must be the same on every machine, forever.
DEALSTREAM_NAMESPACE = uuid.UUID("5d1b6f0e-7c1a-4e8a-9a53-0d5b2f3c9e41")
_NAMESPACE_BYTES = DEALSTREAM_NAMESPACE.bytes


def _text(value: int) -> str:
    # str(uuid.UUID(int=value)) without building and validating a UUID object: ids are made on every append
    # and, in the SLA fold, for every timer.
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


ID_MAX_LENGTH = 64
# The same text in Python and in JSON Schema (ECMA 262): ``(?!\n)`` stops Python's ``$`` from also matching before a
# trailing newline, which would let "x\n" through wherever a schema's pattern is enforced with re.search.
AGGREGATE_ID_PATTERN = rf"^[A-Za-z0-9_-]{{1,{ID_MAX_LENGTH}}}(?!\n)$"
_ID = re.compile(rf"[A-Za-z0-9_-]{{1,{ID_MAX_LENGTH}}}")
REF_MAX_LENGTH = 128
# Another system's id (a source_ref, a form id): printable ASCII without spaces; it is hashed into a lead's id or kept
# as a value, never put in a subject.
_REF = re.compile(rf"[!-~]{{1,{REF_MAX_LENGTH}}}")

IdKind = Literal["id", "ref"]
_RULES: dict[IdKind, tuple[re.Pattern[str], str]] = {
    "id": (_ID, f"must be 1 to {ID_MAX_LENGTH} letters, digits, '-' or '_'"),
    "ref": (_REF, f"must be 1 to {REF_MAX_LENGTH} printable ASCII characters without spaces"),
}


class InvalidId(ValueError):
    """An id that fails its rule: ``field`` names where it came from, ``reason`` says what the rule is."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"`{field}` {reason}")
        self.field = field
        self.reason = reason


def check_id(value: object, field: str, kind: IdKind = "id") -> str:
    """The one check of every id that enters Dealstream (path, body, query, webhook field, NATS inbox): a full match
    of its rule, else ``InvalidId`` naming ``field``. Dealstream's own ids (leads, deals, pipelines, stages, tasks,
    touchpoints) become subject tokens: letters, digits, ``-`` and ``_`` only, never ``.``, ``*``, ``>`` or space."""
    pattern, rule = _RULES[kind]
    if not isinstance(value, str) or pattern.fullmatch(value) is None:
        raise InvalidId(field, f"{rule}, got {_shown(value)}")
    return value


def _shown(value: object) -> str:
    # ascii(): the reason travels in headers (a dead letter's Dealstream-Reason) and log lines, which want ASCII.
    text = ascii(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


def uuid7() -> str:
    """A time-ordered UUIDv7 (RFC 9562) as text: millisecond timestamp, then random bits."""
    unix_ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (unix_ms & 0xFFFF_FFFF_FFFF) << 80
    value |= 0x7 << 76
    value |= ((rand >> 62) & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & 0x3FFF_FFFF_FFFF_FFFF
    return _text(value)


def derived_id(*parts: str) -> str:
    """A stable UUIDv5 for an external identity, e.g. ``derived_id("meta", leadgen_id)``.

    A redelivery of the same source record maps to the same aggregate, which is what makes capture
    idempotent without any lookup table.
    """
    # Length-prefixed parts: no choice of part text can make two different tuples hash the same name.
    name = "".join(f"{len(p)}:{p};" for p in parts)
    value = int.from_bytes(hashlib.sha1(_NAMESPACE_BYTES + name.encode()).digest()[:16], "big")  # noqa: S324 - RFC 9562 v5
    # The version (5) and variant (RFC) bits, exactly as uuid.uuid5 sets them.
    value = (value & ~(0xF000 << 64) & ~(0xC000 << 48)) | (5 << 76) | (0x8000 << 48)
    return _text(value)


def is_valid_aggregate_id(value: str) -> bool:
    """Aggregate ids become one NATS subject token: letters, digits, ``-`` and ``_`` only."""
    return _ID.fullmatch(value) is not None
