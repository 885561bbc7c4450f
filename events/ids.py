"""Identifiers: UUIDv7 event ids and deterministic aggregate ids derived from a source's own id."""

from __future__ import annotations

import hashlib
import os
import re
import time
import uuid

# Fixed namespace: ids derived from a source's own id must be the same on every machine, forever.
DEALSTREAM_NAMESPACE = uuid.UUID("5d1b6f0e-7c1a-4e8a-9a53-0d5b2f3c9e41")
_NAMESPACE_BYTES = DEALSTREAM_NAMESPACE.bytes


def _text(value: int) -> str:
    # str(uuid.UUID(int=value)) without building and validating a UUID object: ids are made on every append
    # and, in the SLA fold, for every timer.
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


AGGREGATE_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
_AGGREGATE_ID = re.compile(AGGREGATE_ID_PATTERN)


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
    return bool(_AGGREGATE_ID.match(value))
