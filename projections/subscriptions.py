"""Webhook subscriptions: which events of the log an integration receives, and when to retry a delivery.

Pure: a subscription's event-type patterns (``deal.*``, ``deal.stage_changed.v1``, ``*``) and its filter on the
event's own fields, and the retry schedule. Storing lives in projections/subscriptions_store.py, sending in
workers/subscriptions.py; the signature is the notify worker's (:func:`projections.notify.signature`).
"""

from __future__ import annotations

import datetime as dt
import fnmatch
from typing import Annotated

import msgspec

from events.envelope import Envelope
from projections.notify import backoff

EVENT_PATTERN = r"^(\*|[a-z_]+(\.(\*|[a-z0-9_]+))*)$"
"""An event type (``deal.stage_changed.v1``) or a prefix ending in ``*`` (``deal.*``); ``*`` is every event."""

FILTER_FIELDS = (
    "aggregate_type",
    "aggregate_id",
    "pipeline_id",
    "owner",
    "stage",
    "from_stage",
    "to_stage",
    "rep",
)
"""What a filter may compare: the envelope's aggregate type and id, else a field of the event's data."""

EventPattern = Annotated[str, msgspec.Meta(pattern=EVENT_PATTERN, max_length=100)]


class DeliveryPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """How often a failed delivery is tried again: up to ``max_attempts`` in all, waiting twice as long each
    time from ``backoff_initial_seconds`` up to ``backoff_max_seconds``."""

    max_attempts: Annotated[int, msgspec.Meta(ge=1, le=100)] = 8
    backoff_initial_seconds: Annotated[float, msgspec.Meta(gt=0)] = 2.0
    backoff_max_seconds: Annotated[float, msgspec.Meta(gt=0)] = 600.0

    def backoff(self, attempts: int) -> dt.timedelta:
        return backoff(self.backoff_initial_seconds, self.backoff_max_seconds, attempts)


class Subscription(msgspec.Struct, frozen=True, kw_only=True):
    """A receiver of events: where to, which event types, which of those (``filter``), and whether it is on."""

    subscription_id: str
    url: str
    event_types: list[str]
    filter: dict[str, str]
    active: bool
    description: str | None
    created_at: dt.datetime
    created_by: str


def type_matches(patterns: list[str], event_type: str) -> bool:
    """True if an event of ``event_type`` is one of ``patterns`` (``*`` stands for any run of characters)."""
    return any(fnmatch.fnmatchcase(event_type, pattern) for pattern in patterns)


def filter_matches(filter: dict[str, str], envelope: Envelope) -> bool:
    """True if every field the filter names has that value on the event; an event without the field is not
    matched (a filter on ``pipeline_id`` lets only events that carry one through)."""
    for field, wanted in filter.items():
        value = getattr(envelope, field) if field in ("aggregate_type", "aggregate_id") else None
        if value is None:
            value = getattr(envelope.data, field, None)
        if value is None or str(value) != wanted:
            return False
    return True


def matches(subscription: Subscription, envelope: Envelope) -> bool:
    """True if the subscription receives this event."""
    return type_matches(subscription.event_types, envelope.type) and filter_matches(subscription.filter, envelope)
