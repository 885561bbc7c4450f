"""The ledger against the real nats-server: decisions see every event, including other writers' ones."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable

import pytest

from events.envelope import Envelope
from events.ledger import Context, Ledger
from events.store import ConcurrencyError, EventStore
from events.types import Event
from tests.builders import T0, deal_opened, envelope, stage_changed

pytestmark = pytest.mark.integration

CTX = Context(actor="test", source="api", correlation_id="c-1", now=T0 + dt.timedelta(hours=1))


async def test_a_decision_sees_what_another_writer_appended_after_the_history_was_read(store: EventStore) -> None:
    ledger = Ledger(store, cached_events=4)
    seen: list[list[str]] = []

    def move_to(stage: str) -> Callable[[list[Envelope]], Event]:
        def decide(history: list[Envelope]) -> Event:
            seen.append([e.type for e in history])
            return stage_changed("x", stage)

        return decide

    await store.append([envelope(deal_opened())], expected_version=0)
    first = await ledger.execute(CTX, "deal", "deal-1", move_to("qualified"))
    # Another API process writes behind this one's back.
    await store.append([envelope(stage_changed("qualified", "proposal"))], expected_version=first.version)
    second = await ledger.execute(CTX, "deal", "deal-1", move_to("won"))
    assert seen == [
        ["deal.opened.v1"],
        ["deal.opened.v1", "deal.stage_changed.v1", "deal.stage_changed.v1"],
    ]
    assert [h.sequence for h in await ledger.history("deal", "deal-1")] == [
        h.sequence for h in await store.read("deal", "deal-1")
    ]
    assert second.version == await store.version("deal", "deal-1")
    with pytest.raises(ConcurrencyError):
        await ledger.execute(CTX, "deal", "deal-1", move_to("lost"), if_match=first.version)


async def test_more_aggregates_than_the_cache_holds_read_back_whole(store: EventStore) -> None:
    ledger = Ledger(store, cached_events=2)
    for n in range(5):
        await store.append([envelope(deal_opened(), aggregate_id=f"d{n}")], expected_version=0)
    for _ in range(2):
        for n in range(5):
            history = await ledger.history("deal", f"d{n}")
            assert [h.envelope.aggregate_id for h in history] == [f"d{n}"]


async def test_the_cache_holds_at_most_its_events_even_under_concurrent_reads(store: EventStore) -> None:
    ledger = Ledger(store, cached_events=5)
    for n in range(3):
        opened = envelope(deal_opened(), aggregate_id=f"d{n}")
        await store.append([opened, envelope(stage_changed("new", "qualified"), aggregate_id=f"d{n}")], 0)
    for _ in range(2):
        await asyncio.gather(*(ledger.history("deal", f"d{n}") for n in (0, 0, 1, 1, 1, 2)))
        # Three aggregates of two events each: the oldest goes, and racing reads of one aggregate count once.
        assert ledger.events_cached == 4
