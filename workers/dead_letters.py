"""Poison: what condemns an event rather than the infrastructure, and the dead-letter stream it goes to."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import msgspec
import nats.errors
import psycopg
from nats.js import JetStreamContext

from events.dead_letters import dead_letter_headers
from events.subjects import Naming


class Poison(msgspec.Struct, frozen=True):
    sequence: int
    subject: str
    data: bytes
    reason: str


def is_poison(exc: BaseException) -> bool:
    """Whether an exception from ``apply_batch`` blames the data (skip it) or the infrastructure (retry)."""
    if isinstance(exc, psycopg.Error):
        # Only data-dependent database errors condemn an event; a missing table, a lost connection or a
        # deadlock must be retried, or one bad deploy would dead-letter the whole log.
        return isinstance(exc, psycopg.DataError | psycopg.IntegrityError)
    return not isinstance(exc, nats.errors.Error | OSError | asyncio.TimeoutError)


class DeadLetters:
    """Publishes a projection's poison to the dead-letter stream, once per event (``Nats-Msg-Id``)."""

    def __init__(self, naming: Naming, projection: str, checkpoint_key: str, publish_timeout: float) -> None:
        self.subject = naming.dead_letter_subject(projection)
        self.stream = naming.dead_letter_stream
        self.checkpoint_key = checkpoint_key
        self.publish_timeout = publish_timeout
        self.sent = 0

    async def publish(self, js: JetStreamContext, poison: Sequence[Poison], log: Any) -> None:
        for p in poison:
            log.error("engine.dead_letter", sequence=p.sequence, subject=p.subject, reason=p.reason)
            await js.publish(
                self.subject,
                p.data,
                stream=self.stream,
                timeout=self.publish_timeout,
                headers=dead_letter_headers(
                    f"{self.checkpoint_key}:{p.sequence}",
                    p.reason,
                    p.subject,
                    p.sequence,
                    projection=self.checkpoint_key,
                ),
            )
        self.sent += len(poison)
