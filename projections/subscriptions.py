"""Webhook subscriptions: which events of the log an integration receives, and when to retry a delivery.

Pure: a subscription's event-type patterns (``deal.*``, ``deal.stage_changed.v1``, ``*``) and its filter on the
event's own fields, and the retry schedule. Storing lives in projections/subscriptions_store.py, sending in
workers/subscriptions.py; the signature is the notify worker's (:func:`projections.notify.signature`).
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import ipaddress
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


NAT64 = ipaddress.ip_network("64:ff9b::/96")
"""IPv6 addresses that a NAT64 gateway turns into the IPv4 address in their last 32 bits."""


def target_allowed(address: ipaddress.IPv4Address | ipaddress.IPv6Address, allowed_networks: list[str]) -> bool:
    """True if a webhook may be sent to ``address``: it is in an allowed network, or public (not private, loopback,
    link-local, reserved, nor an IPv6 form of such an IPv4 address)."""
    if any(address in ipaddress.ip_network(n, strict=False) for n in allowed_networks):
        return True
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or (
            ipaddress.IPv4Address(int(address) & 0xFFFFFFFF) if address in NAT64 else None
        )
        if embedded is not None:
            return target_allowed(embedded, allowed_networks)
    return address.is_global


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
