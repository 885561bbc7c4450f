"""The raw limits, measured in the same run as Dealstream's own figures: what NATS and PostgreSQL do with
no Dealstream code in between."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterable

import psycopg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from events.codec import decode, encode
from events.envelope import Envelope
from events.subjects import Naming


async def publish(
    js: JetStreamContext, naming: Naming, phases: Iterable[list[Envelope]], window: int = 256, guarded: bool = True
) -> tuple[int, float]:
    """Publish phase by phase, ``window`` acks awaited together; ``guarded`` adds the headers a Dealstream
    append sends (``Nats-Msg-Id`` and ``Nats-Expected-Last-Subject-Sequence``). Returns (events, seconds)."""
    total, start = 0, time.perf_counter()
    for phase in phases:
        for i in range(0, len(phase), window):
            part = phase[i : i + window]
            await asyncio.gather(
                *(
                    js.publish(
                        naming.aggregate_subject(e.aggregate_type, e.aggregate_id),
                        encode(e),
                        stream=naming.events_stream,
                        headers={"Nats-Msg-Id": e.event_id}
                        | ({"Nats-Expected-Last-Subject-Sequence": "0"} if guarded else {}),
                        timeout=30,
                    )
                    for e in part
                )
            )
            total += len(part)
    return total, time.perf_counter() - start


async def consume(js: JetStreamContext, naming: Naming, total: int, dsn: str | None) -> float:
    """Pull ``fetch(1000)``, then (with ``dsn``) decode each event and upsert one row per event with one
    ``executemany`` in one transaction per batch, then ack: the ceiling of a projection with a trivial fold.
    Returns events per second."""
    name = f"raw_{uuid.uuid4().hex[:8]}"
    await js.add_consumer(
        naming.events_stream,
        ConsumerConfig(
            name=name,
            durable_name=name,
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.ALL,
            max_ack_pending=1000,
            filter_subject=naming.all_events,
        ),
    )
    sub = await js.pull_subscribe_bind(durable=name, stream=naming.events_stream)
    conn = None
    table = f"raw_bench_{name}"
    if dsn is not None:
        conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
        await conn.execute(f"CREATE TABLE {table} (id text PRIMARY KEY, seq bigint NOT NULL, at timestamptz NOT NULL)")
    seen, start = 0, time.perf_counter()
    try:
        while seen < total:
            msgs = await sub.fetch(1000, timeout=10)
            if conn is not None:
                rows = []
                for m in msgs:
                    envelope = decode(m.data)
                    rows.append((envelope.aggregate_id, m.metadata.sequence.stream, envelope.occurred_at))
                async with conn.transaction(), conn.cursor() as cur:
                    await cur.executemany(
                        f"INSERT INTO {table} (id, seq, at) VALUES (%s, %s, %s) "  # noqa: S608 - our own name
                        "ON CONFLICT (id) DO UPDATE SET seq = EXCLUDED.seq, at = EXCLUDED.at",
                        rows,
                    )
            await msgs[-1].ack()
            seen += len(msgs)
        return seen / (time.perf_counter() - start)
    finally:
        await sub.unsubscribe()
        await js.delete_consumer(naming.events_stream, name)
        if conn is not None:
            await conn.execute(f"DROP TABLE IF EXISTS {table}")
            await conn.close()
