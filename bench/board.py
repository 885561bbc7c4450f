"""Throughput of the board worker next to the raw limits, measured in the same run on this machine.

``python -m bench.board [--events 100000] [--runs 3] [--shards 2]``

Starts a private nats-server (and a private PostgreSQL unless ``DATABASE_URL`` is set), appends a deal
workload, then times, each from sequence 1 into a fresh schema, median of ``--runs``:

- ``fetch+ack``: pull consumer, fetch(1000), ack the batch: the NATS ceiling;
- ``raw``: the same plus typed decode and one ``executemany`` upsert per batch in one transaction: the
  ceiling of this design with a trivial fold;
- ``board``: the projection engine with the board projection (load rows, fold, upsert, checkpoint);
- ``board xN``: N worker processes (``python -m workers board --partition k/N``) together;
- the board query over the resulting board (``board()``, default page of 50 per column), median latency.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
from nats.js import JetStreamContext

from bench import raw
from devstack.servers import NatsServer, PostgresServer
from events.config import NatsSettings, connect
from events.envelope import Envelope
from events.ids import uuid7
from events.ledger import Context, new_envelope
from events.logs import configure_logging
from events.streams import StreamSettings, ensure_streams
from events.subjects import Naming
from events.types import (
    DealAmountChanged,
    DealOpened,
    DealStageChanged,
    Event,
    PipelineDefined,
    StageDefinition,
    TaskScheduled,
    TouchpointLogged,
)
from projections.board_queries import board
from projections.board_store import BoardProjection, BoardSql
from projections.contract import Shard
from workers.engine import EngineSettings, ProjectionEngine
from workers.lag import measure_lag

T0 = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)
STAGES = ["new", "qualified", "proposal", "negotiation"]


def _envelope(aggregate_type: Any, aggregate_id: str, data: Event, at: dt.datetime) -> Envelope:
    return new_envelope(
        Context(actor="bench", source="system", correlation_id=uuid7(), now=at), aggregate_type, aggregate_id, data
    )


def workload(events: int, seed: int = 1) -> list[list[Envelope]]:
    """Rounds of envelopes; round r holds the r-th event of each deal, so rounds keep each deal in order.

    Five events per deal: opened, then a mix of touchpoints, stage moves, tasks and amount changes.
    """
    rng = random.Random(seed)
    pipeline = PipelineDefined(
        name="Sales",
        stages=[
            StageDefinition(id=s, name=s.title(), probability=p, rotting_days=d)
            for s, p, d in zip(STAGES, (0.1, 0.3, 0.6, 0.8), (7, 10, 14, None), strict=True)
        ],
    )
    rounds: list[list[Envelope]] = [[_envelope("pipeline", "sales", pipeline, T0)]]
    deals = max(1, (events - 1) // 5)
    for r in range(5):
        batch: list[Envelope] = []
        for i in range(deals):
            at = T0 + dt.timedelta(hours=i % 500 + 24 * r)
            data: Event
            if r == 0:
                data = DealOpened(
                    name=f"Deal {i}",
                    pipeline_id="sales",
                    stage=rng.choice(STAGES),
                    amount=Decimal(rng.randrange(100, 100_000)),
                    currency="EUR",
                    owner=rng.choice(["ana", "bo", "cy"]),
                )
            else:
                roll = rng.random()
                if roll < 0.35:
                    data = TouchpointLogged(touchpoint_id=f"tp{r}", kind="call", direction="outbound")
                elif roll < 0.6:
                    data = DealStageChanged(from_stage="x", to_stage=rng.choice(STAGES))
                elif roll < 0.85:
                    data = TaskScheduled(task_id=f"t{r}", title="Call back", due_at=at + dt.timedelta(days=3))
                else:
                    data = DealAmountChanged(
                        from_amount=Decimal(0), to_amount=Decimal(rng.randrange(100, 9000)), currency="EUR"
                    )
            batch.append(_envelope("deal", f"deal-{i}", data, at))
        rounds.append(batch)
    return rounds


async def new_schema(pg_url: str) -> str:
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
    return psycopg.conninfo.make_conninfo(pg_url, options=f"-c search_path={schema}")


async def wait_caught_up(
    js: JetStreamContext, dsn: str, naming: Naming, shards: list[Shard], projection: BoardProjection
) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        while True:
            try:
                lags = [await measure_lag(js, conn, naming, projection, s) for s in shards]
            except psycopg.errors.UndefinedTable:
                lags = []
            if lags and all(lag.caught_up for lag in lags):
                return
            await asyncio.sleep(0.02)


async def board_engine_rate(
    settings: NatsSettings, js: JetStreamContext, dsn: str, total: int, projection: BoardProjection
) -> float:
    engine = ProjectionEngine(
        projection, settings, dsn, settings=EngineSettings(batch_size=1000, fetch_timeout=0.5, lag_interval=3600)
    )
    stop = asyncio.Event()
    start = time.perf_counter()
    task = asyncio.create_task(engine.run(stop))
    await wait_caught_up(js, dsn, settings.naming, [Shard()], projection)
    elapsed = time.perf_counter() - start
    stop.set()
    await task
    return total / elapsed


async def board_processes_rate(
    settings: NatsSettings, js: JetStreamContext, dsn: str, total: int, shards: int
) -> float:
    label = f"p{uuid.uuid4().hex[:6]}"
    env = {
        **os.environ,
        "DEALSTREAM_NATS_URL": settings.servers[0],
        "DEALSTREAM_PREFIX": settings.naming.prefix,
        "DATABASE_URL": dsn,
        "DEALSTREAM_ENGINE_LAG_INTERVAL": "3600",
        "DEALSTREAM_ENGINE_FETCH_TIMEOUT": "0.5",
        "DEALSTREAM_ENGINE_INSTANCE": label,
        "DEALSTREAM_LOG_LEVEL": "warning",
    }
    start = time.perf_counter()
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-m", "workers", "board", "--partition", f"{k}/{shards}", env=env
        )
        for k in range(shards)
    ]
    try:
        await wait_caught_up(
            js, dsn, settings.naming, [Shard(k, shards) for k in range(shards)], BoardProjection(label)
        )
        elapsed = time.perf_counter() - start
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            await asyncio.wait_for(p.wait(), 30)
    return total / elapsed


async def query_latency(dsn: str, build: str, runs: int = 20) -> tuple[float, float, int]:
    """Median milliseconds of the whole open board, and of one owner's board; and the open deal count."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(f"ANALYZE {BoardSql(build).deals}")
        times, owner_times = [], []
        result = await board(conn, as_of=T0, build=build)
        for _ in range(runs):
            t = time.perf_counter()
            result = await board(conn, as_of=T0, build=build)
            times.append(time.perf_counter() - t)
            t = time.perf_counter()
            await board(conn, as_of=T0, owner="ana", build=build)
            owner_times.append(time.perf_counter() - t)
    open_deals = sum(c.count for b in result for c in b.columns)
    return statistics.median(times) * 1000, statistics.median(owner_times) * 1000, open_deals


async def bench(events: int, runs: int, shards: int, pg_url: str, nats_url: str) -> None:
    naming = Naming(f"bench{uuid.uuid4().hex[:6]}")
    settings = NatsSettings(servers=(nats_url,), naming=naming, streams=StreamSettings())
    nc, js = await connect(settings, "bench")
    await ensure_streams(js, naming, settings.streams)
    rounds = workload(events)
    total = sum(len(r) for r in rounds)
    appended, seconds = await raw.publish(js, naming, rounds, window=512, guarded=False)
    print(f"appended {appended} events at {appended / seconds:,.0f} ev/s (js.publish, windows of 512)")
    figures: dict[str, list[float]] = {"fetch+ack": [], "raw fetch+decode+executemany": [], "board engine": []}
    if shards > 1:
        figures[f"board x{shards} processes"] = []
    last_dsn, last_build = "", BoardProjection()
    for run in range(runs):
        figures["fetch+ack"].append(await raw.consume(js, naming, total, None))
        figures["raw fetch+decode+executemany"].append(await raw.consume(js, naming, total, await new_schema(pg_url)))
        last_dsn = await new_schema(pg_url)
        last_build = BoardProjection(f"b{uuid.uuid4().hex[:6]}")
        figures["board engine"].append(await board_engine_rate(settings, js, last_dsn, total, last_build))
        if shards > 1:
            figures[f"board x{shards} processes"].append(
                await board_processes_rate(settings, js, await new_schema(pg_url), total, shards)
            )
        print(f"run {run + 1}: " + ", ".join(f"{k} {v[-1]:,.0f}" for k, v in figures.items()), flush=True)
    ceiling = statistics.median(figures["raw fetch+decode+executemany"])
    print(f"\nmedians of {runs} runs, {total} events:")
    for name, values in figures.items():
        median = statistics.median(values)
        print(f"  {name:32} {median:>9,.0f} ev/s   {median / ceiling:5.2f} x raw")
    whole, owner, open_deals = await query_latency(last_dsn, last_build.build)
    print(f"  board query, {open_deals} open deals: {whole:.1f} ms whole board, {owner:.1f} ms one owner (median)")
    await nc.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.board", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--shards", type=int, default=2, help="also time N worker processes together (1: skip)")
    parser.add_argument("--pg-fsync-off", action="store_true", help="private PostgreSQL without fsync")
    args = parser.parse_args(argv)
    configure_logging(json=False, level="warning")
    tmp = Path(tempfile.mkdtemp(prefix="dealstream-bench-"))
    nats_server = NatsServer(tmp / "nats", name="bench").start()
    pg_server = None
    pg_url = os.environ.get("DATABASE_URL")
    if not pg_url:
        pg_server = PostgresServer(
            Path(tempfile.mkdtemp(prefix="dealstream-bench-pg-")) / "data", durable=not args.pg_fsync_off
        ).start()
        pg_url = pg_server.url
    try:
        asyncio.run(bench(args.events, args.runs, args.shards, pg_url, nats_server.url))
    finally:
        nats_server.stop()
        if pg_server is not None:
            pg_server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
