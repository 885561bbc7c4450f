"""Identifiers: UUIDv7 event ids and deterministic aggregate ids derived from a source's own id."""

from __future__ import annotations

import os
import re
import time
import uuid

# Fixed namespace: ids derived from a source's own id must be the same on every machine, forever.
DEALSTREAM_NAMESPACE = uuid.UUID("5d1b6f0e-7c1a-4e8a-9a53-0d5b2f3c9e41")

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
    return str(uuid.UUID(int=value))


def derived_id(*parts: str) -> str:
    """A stable UUIDv5 for an external identity, e.g. ``derived_id("meta", leadgen_id)``.

    A redelivery of the same source record maps to the same aggregate, which is what makes capture
    idempotent without any lookup table.
    """
    # Length-prefixed parts: no choice of part text can make two different tuples hash the same name.
    return str(uuid.uuid5(DEALSTREAM_NAMESPACE, "".join(f"{len(p)}:{p};" for p in parts)))


def is_valid_aggregate_id(value: str) -> bool:
    """Aggregate ids become one NATS subject token: letters, digits, ``-`` and ``_`` only."""
    return bool(_AGGREGATE_ID.match(value))
