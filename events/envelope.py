"""The envelope every event travels in: who, what, when (business and record time), and provenance."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

import msgspec

from events.ids import AGGREGATE_ID_PATTERN
from events.types import Event

AggregateType = Literal["lead", "deal", "pipeline", "alert", "user", "organisation", "contact"]
AGGREGATE_TYPES: tuple[AggregateType, ...] = ("lead", "deal", "pipeline", "alert", "user", "organisation", "contact")

Source = Literal["web_form", "meta", "typeform", "webflow", "hubspot", "api", "nats", "system"]
AggregateId = Annotated[str, msgspec.Meta(pattern=AGGREGATE_ID_PATTERN)]


class RawPayload(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What the source sent, kept verbatim for auditors.

    ``body`` is the exact text of the request (or, for one item of a batch, that item); ``batch_sha256``
    is the digest of the whole signed request when the item was cut out of a batch.
    """

    content_type: str
    body: str
    batch_sha256: str | None = None
    sealed: bool = False  # body is the source's bytes encrypted with the lead's key (see events/personal.py)


class Envelope(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One immutable entry of the log.

    ``occurred_at`` is business time (when it happened at the source: the Meta lead's ``created_time``);
    ``recorded_at`` is record time (when Dealstream accepted it). Both are UTC.
    """

    event_id: str
    aggregate_type: AggregateType
    aggregate_id: AggregateId
    occurred_at: dt.datetime
    recorded_at: dt.datetime
    actor: str
    source: Source
    correlation_id: str
    data: Event
    causation_id: str | None = None
    idempotency_key: str | None = None
    raw: RawPayload | None = None

    @property
    def type(self) -> str:
        tag = type(self.data).__struct_config__.tag
        assert isinstance(tag, str)
        return tag


class StoredEvent(msgspec.Struct, frozen=True, kw_only=True):
    """An envelope as read back from the log, with its stream sequence and subject."""

    sequence: int
    subject: str
    envelope: Envelope
    chain: str | None = None
    """Its link in the aggregate's hash chain, where the reader fetched the headers."""
    request_sha256: str | None = None
    """The fingerprint of the request that made it, where the reader fetched the headers and the writer kept one."""
