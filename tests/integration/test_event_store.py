"""The event store against a real nats-server: guarded appends, idempotent retries, immutable streams."""

from __future__ import annotations

import asyncio

import pytest
from nats.js import JetStreamContext
from nats.js.errors import APIError

from events.store import ConcurrencyError, EventStore
from events.subjects import Naming
from tests.builders import deal_opened, envelope, stage_changed

pytestmark = pytest.mark.integration


async def test_append_and_read_back_in_order(store: EventStore) -> None:
    opened = envelope(deal_opened())
    [first] = await store.append([opened], expected_version=0)
    moves = [envelope(stage_changed("new", "qualified")), envelope(stage_changed("qualified", "proposal"))]
    appended = await store.append(moves, expected_version=first.sequence)
    history = await store.read("deal", "deal-1")
    assert [h.envelope for h in history] == [opened, *moves]
    assert [h.sequence for h in history] == [first.sequence, *(a.sequence for a in appended)]
    assert await store.version("deal", "deal-1") == appended[-1].sequence


async def test_a_long_history_interleaved_with_other_aggregates_reads_back_whole_and_in_order(
    store: EventStore,
) -> None:
    # More events than one batched direct get returns, with another deal's events between them.
    opened = envelope(deal_opened())
    [head] = await store.append([opened], expected_version=0)
    await store.append([envelope(deal_opened(), aggregate_id="deal-2")], expected_version=0)
    moves = [envelope(stage_changed(f"s{i}", f"s{i + 1}")) for i in range(600)]
    version = head.sequence
    for i in range(0, len(moves), 100):
        appended = await store.append(moves[i : i + 100], expected_version=version)
        version = appended[-1].sequence
        await store.append([envelope(stage_changed("a", "b"), aggregate_id="deal-2")], expected_version=None)
    history = await store.read("deal", "deal-1")
    assert [h.envelope for h in history] == [opened, *moves]
    assert [h.sequence for h in history] == sorted(h.sequence for h in history)
    tail = await store.read("deal", "deal-1", after=history[300].sequence)
    assert [h.envelope for h in tail] == moves[300:]
    assert await store.read("deal", "no-such-deal") == []


async def test_stale_expected_version_is_a_conflict_with_the_current_version(store: EventStore) -> None:
    [first] = await store.append([envelope(deal_opened())], expected_version=0)
    [second] = await store.append([envelope(stage_changed("new", "won"))], expected_version=first.sequence)
    with pytest.raises(ConcurrencyError) as caught:
        await store.append([envelope(stage_changed("new", "lost"))], expected_version=first.sequence)
    assert caught.value.current == second.sequence
    assert len(await store.read("deal", "deal-1")) == 2


async def test_retry_of_a_landed_append_returns_the_first_sequence(store: EventStore) -> None:
    opened = envelope(deal_opened())
    [first] = await store.append([opened], expected_version=0)
    [again] = await store.append([opened], expected_version=0)
    assert again.sequence == first.sequence and again.duplicate
    assert len(await store.read("deal", "deal-1")) == 1


async def test_of_concurrent_writers_on_one_version_exactly_one_wins(store: EventStore) -> None:
    [first] = await store.append([envelope(deal_opened())], expected_version=0)
    attempts = [store.append([envelope(stage_changed("new", f"s{i}"))], first.sequence) for i in range(8)]
    results = await asyncio.gather(*attempts, return_exceptions=True)
    assert sum(not isinstance(r, BaseException) for r in results) == 1
    assert all(isinstance(r, ConcurrencyError) for r in results if isinstance(r, BaseException))
    assert len(await store.read("deal", "deal-1")) == 2


async def test_aggregates_are_read_alone(store: EventStore) -> None:
    await store.append([envelope(deal_opened(), aggregate_id="a")], expected_version=0)
    await store.append([envelope(deal_opened(), aggregate_id="b")], expected_version=0)
    assert [h.envelope.aggregate_id for h in await store.read("deal", "a")] == ["a"]
    assert await store.read("deal", "missing") == []
    assert await store.version("deal", "missing") == 0


async def test_the_log_denies_delete_and_purge(
    store: EventStore, nats_conn: tuple[object, JetStreamContext], naming: Naming
) -> None:
    _, js = nats_conn
    [first] = await store.append([envelope(deal_opened())], expected_version=0)
    info = await js.stream_info(naming.events_stream)
    assert info.config.deny_delete and info.config.deny_purge
    with pytest.raises(APIError):
        await js.delete_msg(naming.events_stream, first.sequence)
    with pytest.raises(APIError):
        await js.purge_stream(naming.events_stream)
    assert len(await store.read("deal", "deal-1")) == 1
