"""The one check every fault test ends with: the log holds each acknowledged event exactly once and nothing
else of the load, its hash chains hold, and each read model under test equals a from-scratch rebuild.

The rebuild and the row-by-row comparison are ``dealstream verify``'s own (workers/rebuild.py).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import nats.errors
from nats.js import JetStreamContext

from events.audit import audit_stream, scan
from events.codec import decode
from events.config import NatsSettings, connect
from events.envelope import StoredEvent
from tests.faults.load import Ack, LoadReport
from tests.faults.processes import CALLER
from tests.projection_fixtures import wait_caught_up
from workers.rebuild import verify
from workers.registry import projection_of

T = TypeVar("T")


async def patiently(read: Callable[[JetStreamContext], Awaitable[T]], nats_settings: NatsSettings) -> T:
    """``read`` retried while NATS cannot answer yet (a cluster that lost a node may still be electing the
    leader that creates consumers): a read that fails says nothing about what the log holds."""
    nc, js = await connect(nats_settings, "faults-check")
    try:
        async with asyncio.timeout(90):
            while True:
                try:
                    return await read(js)
                except nats.errors.Error:
                    await asyncio.sleep(0.5)
    finally:
        await nc.close()


async def read_log(nats_settings: NatsSettings) -> list[StoredEvent]:
    """Every event of the log, in order, read by a consumer of the whole stream."""

    async def read(js: JetStreamContext) -> list[StoredEvent]:
        return [
            StoredEvent(sequence=m.sequence, subject=m.subject, envelope=decode(m.data))
            async for m in scan(js, nats_settings.naming.events_stream)
        ]

    return await patiently(read, nats_settings)


def log_problems(acks: Sequence[Ack], log: Sequence[StoredEvent]) -> list[str]:
    """What is wrong with the log given the answers: an acknowledged event missing, doubled or on another
    aggregate; a request (by aggregate and idempotency key) that landed more than once; an event nobody
    acknowledged. Empty when the log is exactly the acknowledged events."""
    problems: list[str] = []
    by_id: dict[str, list[StoredEvent]] = defaultdict(list)
    by_key: dict[tuple[str, str, str | None], list[StoredEvent]] = defaultdict(list)
    for event in log:
        e = event.envelope
        by_id[e.event_id].append(event)
        by_key[(e.aggregate_type, e.aggregate_id, e.idempotency_key)].append(event)
    claimed: set[tuple[str, str, str | None]] = set()
    for ack in acks:
        key: tuple[str, str, str | None] = (ack.aggregate_type, ack.aggregate_id, f"{CALLER}:{ack.request.key}")
        claimed.add(key)
        found = by_id.get(ack.event_id, [])
        if len(found) != 1:
            problems.append(f"acknowledged {ack.event_id} ({ack.request.key}) is in the log {len(found)} times")
        landed = by_key.get(key, [])
        if len(landed) != 1:
            seqs = [e.sequence for e in landed]
            problems.append(f"{ack.request.key} on {key[0]} {key[1]} landed {len(landed)} times, at {seqs}")
        elif landed[0].envelope.event_id != ack.event_id:
            problems.append(f"{ack.request.key}: answered {ack.event_id}, the log holds {landed[0].envelope.event_id}")
    for logged, events in by_key.items():
        if logged not in claimed:
            problems.append(f"{[e.sequence for e in events]}: in the log, never acknowledged ({logged})")
    return problems


async def read_model_problems(name: str, nats_settings: NatsSettings, database_url: str) -> list[str]:
    """Wait for the live build of worker ``name`` to reach the log's end, then compare it row by row with a
    shadow build replayed from sequence 1 (``dealstream verify``)."""
    nc, js = await connect(nats_settings, "faults-check")
    try:
        await wait_caught_up(js, database_url, nats_settings.naming, projection_of(name, ""), within=90)
    finally:
        await nc.close()
    result = await verify(projection_of(name, "faultcheck"), nats_settings, database_url)
    problems = []
    for t in result.tables:
        if t.only_live or t.only_rebuilt:
            problems.append(
                f"{name}.{t.table}: {t.only_live} rows only live {t.sample_only_live}, "
                f"{t.only_rebuilt} only rebuilt {t.sample_only_rebuilt}"
            )
    if not any(t.live_rows for t in result.tables):
        problems.append(f"{name} is empty: comparing it with a rebuild proves nothing")
    return problems


async def assert_consistent(
    report: LoadReport,
    nats_settings: NatsSettings,
    database_url: str | None = None,
    read_models: Sequence[str] = ("board",),
) -> list[StoredEvent]:
    """The shared check (see the module's docstring); returns the log it read."""
    assert not report.refused, f"refused answers: {report.refused[:5]}"
    assert report.acks, "nothing was acknowledged: the load never ran"
    log = await read_log(nats_settings)
    problems = log_problems(report.acks, log)
    assert not problems, f"{len(problems)} problems in the log, e.g.\n" + "\n".join(problems[:20])
    audit = await patiently(lambda js: audit_stream(js, nats_settings.naming.events_stream), nats_settings)
    assert audit.intact and audit.events == len(log), audit.breaks[:5]
    if database_url is not None:
        for name in read_models:
            problems = await read_model_problems(name, nats_settings, database_url)
            assert not problems, "\n".join(problems)
    return log
