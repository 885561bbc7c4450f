"""Small builders for envelopes in tests."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from events.envelope import AggregateType, Envelope
from events.ids import uuid7
from events.types import DealOpened, DealStageChanged, Event

T0 = dt.datetime(2025, 11, 22, 12, 39, 50, tzinfo=dt.UTC)


def envelope(
    data: Event,
    aggregate_type: AggregateType = "deal",
    aggregate_id: str = "deal-1",
    occurred_at: dt.datetime = T0,
    idempotency_key: str | None = None,
) -> Envelope:
    return Envelope(
        event_id=uuid7(),
        aggregate_type=aggregate_type,
        aggregate_id=aggregate_id,
        occurred_at=occurred_at,
        recorded_at=occurred_at + dt.timedelta(seconds=90),
        actor="test",
        source="api",
        correlation_id=uuid7(),
        data=data,
        idempotency_key=idempotency_key,
    )


def deal_opened(stage: str = "new") -> DealOpened:
    return DealOpened(name="Acme", pipeline_id="default", stage=stage, amount=Decimal("1000"), currency="EUR")


def stage_changed(a: str, b: str) -> DealStageChanged:
    return DealStageChanged(from_stage=a, to_stage=b)
