"""``dealstream bench``: Dealstream's figures beside the raw limits of this machine, measured in one run.

Starts its own nats-server (and PostgreSQL, unless ``DATABASE_URL`` is set), then:

1. raw limits: JetStream publish with the headers an append sends; pull consume + decode + one
   ``executemany`` per batch of 1,000 in one transaction;
2. capture through the HTTP API (a real ``dealstream api`` process): single-lead requests, then batches;
   then the rest of the sales mix (touchpoints, deals opened, moved, won or lost) as single commands;
3. each projection's apply rate over that log, from sequence 0 into a fresh build;
4. end-to-end latency at a steady rate: from the API's 202 to the board worker's commit holding the event;
5. SLA alert lateness: how long after a deadline the SLA worker's alert is in the log;
6. rebuild of every projection over a log of ``--rebuild-events`` (1,000,000 by default);
7. the same workload on the ``eventsourcing`` library (``pip install -e '.[bench]'``), if installed.

Prints each figure as it is measured, then a Markdown table; ``--json FILE`` writes the whole report.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import datetime as dt
import functools
import importlib
import inspect
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import msgspec
import psycopg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy

from bench import raw
from bench.deal_list import deal_list_figures
from bench.http import Answer, LeanClient
from bench.lead_list import lead_list_figures
from bench.report import Report, Row, machine, percentile, ratio_row, render
from bench.workload import PIPELINE, PIPELINE_ID, STAGES, LeadPlan, plans, synthetic_log
from devstack.servers import NatsServer, PostgresServer, free_port
from events import aggregates as agg
from events.codec import decode
from events.config import NatsSettings, connect
from events.envelope import Envelope
from events.ids import uuid7
from events.ledger import Context, Ledger, new_envelope
from events.logs import configure_logging
from events.personal import Vault
from events.store import EventStore
from events.streams import StreamSettings, ensure_streams
from events.subjects import Naming
from events.types import AlertRaised, DealOpened, Event, LeadCaptured, TouchpointLogged
from projections.board_store import BoardProjection
from projections.contract import Projection, Shard
from services.auth import hash_key
from workers.engine import EngineSettings, ProjectionEngine
from workers.lag import measure_lag

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
KEY = "bench-key"
PROJECTIONS = ("board", "velocity", "scores", "sla", "routing", "notify")

SLA_RULES = """
[sla]
version = 1
[[sla.policies]]
name = "bench-first-touch"
kind = "first_touch"
within_minutes = 0.5
business_hours = false
"""


# --- servers and processes ---------------------------------------------------------------------------


def _env(nats_url: str, prefix: str, dsn: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "DEALSTREAM_NATS_URL": nats_url,
        "DEALSTREAM_PREFIX": prefix,
        "DATABASE_URL": dsn,
        "DEALSTREAM_LOG_LEVEL": "warning",
        "DEALSTREAM_ENGINE_LAG_INTERVAL": "3600",
        **extra,
    }


def _api_config(folder: Path) -> Path:
    # The bench is one credential sending as fast as it can: lift the per-credential rate limit for it.
    lines = ["rate_per_second = 1000000.0", "rate_burst = 1000000"]
    lines += [
        "",
        "[[api_keys]]",
        'id = "bench"',
        f'sha256 = "{hash_key(KEY)}"',
        'scopes = ["leads:capture", "leads:write", "deals:write", "pipelines:write", "history:read", "read"]',
    ]
    path = folder / "bench-api.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@contextlib.contextmanager
def _process(args: list[str], env: dict[str, str], log: Path) -> Any:
    out = open(log, "ab")  # noqa: SIM115 - the child owns it
    proc = subprocess.Popen([sys.executable, "-m", "services.cli", *args], env=env, stdout=out, stderr=out)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        out.close()


async def _wait_healthy(base: str, proc: subprocess.Popen[bytes], within: float = 60) -> None:
    deadline = time.monotonic() + within
    async with httpx.AsyncClient(base_url=base) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the API exited with code {proc.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get("/v1/health")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise RuntimeError("the API did not become healthy")


async def _new_schema(pg_url: str) -> str:
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
    return psycopg.conninfo.make_conninfo(pg_url, options=f"-c search_path={schema}")


async def _stream_last(js: JetStreamContext, naming: Naming) -> int:
    return int((await js.stream_info(naming.events_stream)).state.last_seq)


# --- HTTP load ------------------------------------------------------------------------------------------


class Calls:
    """Answers and latencies of a run of requests."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.statuses: dict[int, int] = {}
        self.events = 0

    def record(self, started: float, response: Answer, events: int) -> Answer:
        self.latencies.append((time.perf_counter() - started) * 1000)
        self.statuses[response.status] = self.statuses.get(response.status, 0) + 1
        if response.status in (200, 202):
            self.events += events
        return response

    def failures(self) -> str:
        bad = {s: n for s, n in self.statuses.items() if s not in (200, 202)}
        return "" if not bad else f"non-2xx answers: {bad}"


async def _call(client: LeanClient, calls: Calls, method: str, path: str, events: int = 1, **kw: Any) -> Answer:
    started = time.perf_counter()
    return calls.record(started, await client.request(method, path, **kw), events)


async def _bounded(jobs: Sequence[Callable[[], Awaitable[Any]]], concurrency: int) -> float:
    """Run the jobs, at most ``concurrency`` at a time; returns the wall time in seconds."""
    gate = asyncio.Semaphore(concurrency)

    async def one(job: Callable[[], Awaitable[Any]]) -> None:
        async with gate:
            await job()

    start = time.perf_counter()
    await asyncio.gather(*(one(j) for j in jobs))
    return time.perf_counter() - start


def _client(base: str, size: int) -> LeanClient:
    host, port = base.removeprefix("http://").split(":")
    return LeanClient(host, int(port), size, {"Authorization": f"Bearer {KEY}"})


def _headers(key: str | None = None, **extra: str) -> dict[str, str]:
    return ({"Idempotency-Key": key} if key else {}) | extra


async def _deal_life(client: LeanClient, calls: Calls, plan: LeadPlan, lead_id: str) -> None:
    assert plan.deal_moves is not None
    deal_id = f"deal-{plan.n}"
    body = {
        "deal_id": deal_id,
        "name": f"Deal {plan.n}",
        "pipeline_id": PIPELINE_ID,
        "stage": STAGES[0],
        "amount": str(plan.amount),
        "currency": "EUR",
        "owner": plan.owner,
        "lead_id": lead_id,
    }
    r = await _call(client, calls, "POST", "/v1/deals", json=body, headers=_headers(f"open-{deal_id}"))
    for stage in plan.deal_moves:
        if r.status != 202:
            return
        r = await _call(
            client,
            calls,
            "POST",
            f"/v1/deals/{deal_id}/stage",
            json={"to_stage": stage},
            headers=_headers(f"{deal_id}-{stage}", **{"If-Match": r.headers["etag"]}),
        )
    if r.status == 202 and plan.n % 3 != 2:  # a third of the deals stay open, on the board
        if plan.won:
            await _call(client, calls, "POST", f"/v1/deals/{deal_id}/won", json={}, headers=_headers(f"{deal_id}-w"))
        else:
            await _call(
                client,
                calls,
                "POST",
                f"/v1/deals/{deal_id}/lost",
                json={"reason": "price"},
                headers=_headers(f"{deal_id}-l"),
            )


def _lat(calls: Calls) -> dict[str, float]:
    return {"p50_ms": percentile(calls.latencies, 50), "p99_ms": percentile(calls.latencies, 99)}


async def capture_figures(
    report: Report, base: str, raw_publish: float, leads: int, concurrency: int, batch: int
) -> dict[str, str]:
    """Leads one per request, then (other leads) in batches, then the rest of the mix; returns lead ids."""
    lead_ids: dict[str, str] = {}
    async with _client(base, concurrency) as client:
        body = {"name": PIPELINE.name, "stages": msgspec.to_builtins(PIPELINE.stages)}
        r = await client.request("PUT", f"/v1/pipelines/{PIPELINE_ID}", json=body)
        if r.status not in (200, 202):
            raise RuntimeError(f"defining the pipeline: {r.status} {r.body!r}")
        singles = plans(leads, seed=1)
        calls = Calls()

        async def capture(plan: LeadPlan) -> None:
            answer = await _call(client, calls, "POST", "/v1/leads", json=plan.form)
            if answer.status == 202:
                lead_ids[plan.form["source_ref"]] = answer.json()["aggregate_id"]

        wall = await _bounded([functools.partial(capture, p) for p in singles], concurrency)
        report.add(
            ratio_row(
                "capture",
                f"HTTP POST /v1/leads, 1 lead per request, {concurrency} in flight",
                calls.events / wall,
                "raw publish",
                raw_publish,
                note=calls.failures(),
                **_lat(calls),
            )
        )
        batched = plans(leads, seed=2)
        calls = Calls()

        async def capture_batch(part: list[LeadPlan]) -> None:
            answer = await _call(
                client, calls, "POST", "/v1/leads/batch", events=len(part), json={"leads": [p.form for p in part]}
            )
            if answer.status == 202:
                for p, a in zip(part, answer.json(), strict=True):
                    lead_ids[p.form["source_ref"]] = a["aggregate_id"]

        parts = [batched[i : i + batch] for i in range(0, len(batched), batch)]
        wall = await _bounded([functools.partial(capture_batch, p) for p in parts], max(2, concurrency // 8))
        report.add(
            ratio_row(
                "capture",
                f"HTTP POST /v1/leads/batch, {batch} leads per request",
                calls.events / wall,
                "raw publish",
                raw_publish,
                goal_ratio=0.5,
                note=("latency per request; " + calls.failures()).strip("; "),
                **_lat(calls),
            )
        )
        calls = Calls()
        jobs: list[Callable[[], Awaitable[Any]]] = []
        for plan in singles:
            lead_id = lead_ids.get(plan.form["source_ref"])
            if lead_id is None:
                continue
            jobs.append(
                functools.partial(
                    _call,
                    client,
                    calls,
                    "POST",
                    f"/v1/leads/{lead_id}/touchpoints",
                    json={"kind": "call", "direction": "outbound", "outcome": "connected"},
                    headers=_headers(f"touch-{plan.n}"),
                )
            )
            if plan.deal_moves is not None:
                jobs.append(functools.partial(_deal_life, client, calls, plan, lead_id))
        wall = await _bounded(jobs, concurrency)
        report.add(
            ratio_row(
                "capture",
                "HTTP commands: touchpoints, deals opened, moved (If-Match), won/lost",
                calls.events / wall,
                "raw publish",
                raw_publish,
                note=("each reads its aggregate, decides, appends; " + calls.failures()).strip("; "),
                **_lat(calls),
            )
        )
    return lead_ids


# --- commands in process (the peer's terms) -------------------------------------------------------------


def _move(pipeline: agg.PipelineState, stage: str, history: list[Envelope]) -> Event:
    return agg.move_stage(agg.fold_deal(history), pipeline, stage)


async def ledger_figures(report: Report, nats_url: str, leads: int, concurrency: int, raw_publish: float) -> Row:
    """The same mix through the ledger in this process, without HTTP: what the eventsourcing peer measures."""
    naming = Naming(f"bled{uuid.uuid4().hex[:6]}")
    settings = NatsSettings(servers=(nats_url,), naming=naming, streams=StreamSettings())
    nc, js = await connect(settings, "bench-ledger")
    await ensure_streams(js, naming, settings.streams)
    store = EventStore(nc, js, naming)
    ledger = Ledger(store, Vault(js, naming))
    ctx = Context(actor="bench", source="api", correlation_id=uuid7(), now=dt.datetime.now(dt.UTC))
    [defined] = await store.append([new_envelope(ctx, "pipeline", PIPELINE_ID, PIPELINE)], expected_version=0)
    pipeline = agg.fold_pipeline([(await store.read("pipeline", PIPELINE_ID))[0].envelope])
    events = 0

    async def life(plan: LeadPlan) -> None:
        nonlocal events
        lead_id, deal_id = f"lead-{plan.n}", f"deal-{plan.n}"
        captured = LeadCaptured(email=plan.form["email"], company=plan.form["company"], source_ref=f"l{plan.n}")
        await ledger.capture(ctx, lead_id, captured, ctx.now, None)
        touch = TouchpointLogged(touchpoint_id="t1", kind="call", direction="outbound", outcome="connected")
        await ledger.execute(ctx, "lead", lead_id, lambda h: agg.log_touchpoint(agg.fold_lead(h), touch))
        events += 2
        if plan.deal_moves is None:
            return
        opened = DealOpened(
            name=f"Deal {plan.n}", pipeline_id=PIPELINE_ID, stage=STAGES[0], amount=Decimal(plan.amount), currency="EUR"
        )
        await ledger.execute(ctx, "deal", deal_id, lambda h: agg.open_deal(agg.fold_deal(h), pipeline, opened))
        events += 1
        for stage in plan.deal_moves:
            await ledger.execute(ctx, "deal", deal_id, functools.partial(_move, pipeline, stage))
            events += 1
        if plan.n % 3 != 2:
            await ledger.execute(ctx, "deal", deal_id, lambda h: agg.win_deal(agg.fold_deal(h), None))
            events += 1

    wall = await _bounded([functools.partial(life, p) for p in plans(leads, seed=3)], concurrency)
    await nc.close()
    assert defined.sequence == 1
    return report.add(
        ratio_row(
            "capture",
            "Ledger commands in process (no HTTP): capture, touch, open, move, win",
            events / wall,
            "raw publish",
            raw_publish,
            note="each reads its aggregate, decides, appends with its expected version",
        )
    )


# --- projections -------------------------------------------------------------------------------------


async def time_build(projection: Projection, nats: NatsSettings, dsn: str, poll: float = 0.05) -> tuple[float, int]:
    """Replay the log from sequence 0 into a fresh (shadow) build of ``projection`` until it has caught up
    with the stream's last sequence at the start; returns (seconds, events)."""
    nc, js = await connect(nats, "bench-build")
    target = await _stream_last(js, nats.naming)
    engine = ProjectionEngine(projection, nats, dsn, Shard(), EngineSettings(mode="shadow", lag_interval=3600.0))
    halt = asyncio.Event()
    start = time.perf_counter()
    task = asyncio.create_task(engine.run(halt))
    try:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            while True:
                await asyncio.sleep(poll)
                if task.done():
                    task.result()
                    raise RuntimeError(f"{projection.build} stopped before catching up")
                try:
                    lag = await measure_lag(js, conn, nats.naming, projection, Shard())
                except psycopg.errors.UndefinedTable:
                    continue
                if lag.checkpoint >= target or lag.caught_up:
                    return time.perf_counter() - start, target
    finally:
        halt.set()
        await asyncio.wait_for(task, 60)
        await nc.close()


async def projection_figures(
    report: Report, section: str, nats: NatsSettings, pg_url: str, limit_name: str, limit: float, goal: float | None
) -> list[Row]:
    from workers.registry import projection_of

    rows = []
    for name in PROJECTIONS:
        projection = projection_of(name, instance=f"b{uuid.uuid4().hex[:6]}")
        seconds, events = await time_build(projection, nats, await _new_schema(pg_url))
        rows.append(
            report.add(
                ratio_row(
                    section,
                    f"{name} worker, one process" if section == "projections" else f"rebuild {name}",
                    events / seconds,
                    limit_name,
                    limit,
                    goal_ratio=goal,
                    note=f"{events:,} events in {seconds:.1f} s",
                )
            )
        )
    return rows


# --- end-to-end latency ----------------------------------------------------------------------------------


class CheckpointWatch(threading.Thread):
    """Polls one build's checkpoint in its own thread and connection: when each sequence became visible."""

    def __init__(self, dsn: str, build: str, interval: float = 0.002) -> None:
        super().__init__(daemon=True)
        self.dsn, self.build, self.interval = dsn, build, interval
        self.samples: list[tuple[float, int]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self.halt.is_set():
                row = conn.execute(
                    "SELECT max(last_sequence) FROM projection_checkpoints WHERE projection = %s", (self.build,)
                ).fetchone()
                self.samples.append((time.perf_counter(), int(row[0] or 0) if row else 0))
                time.sleep(self.interval)

    def seen_at(self, sequence: int) -> float | None:
        # A checkpoint only grows, so the samples are sorted by it too.
        i = bisect.bisect_left(self.samples, sequence, key=lambda sample: sample[1])
        return self.samples[i][0] if i < len(self.samples) else None


async def e2e_figures(
    report: Report, base: str, dsn: str, deal_ids: list[str], rate: float, seconds: float, concurrency: int
) -> None:
    """Touchpoints on open deals at ``rate`` per second through the API, with the board worker running."""
    watch = CheckpointWatch(dsn, BoardProjection().build)
    watch.start()
    acked: list[tuple[float, float, int]] = []
    calls = Calls()
    # Enough connections that a slow answer never holds back the next send: the rate stays the offered one.
    async with _client(base, 4 * concurrency) as client:

        async def touch(i: int) -> None:
            sent = time.perf_counter()
            r = await _call(
                client,
                calls,
                "POST",
                f"/v1/deals/{deal_ids[i % len(deal_ids)]}/touchpoints",
                json={"kind": "email", "direction": "outbound"},
            )
            if r.status == 202:
                acked.append((sent, time.perf_counter(), int(r.json()["sequence"])))

        total = int(rate * seconds)
        start = time.perf_counter()
        tasks = []
        for i in range(total):
            due = start + i / rate
            if (wait := due - time.perf_counter()) > 0:
                await asyncio.sleep(wait)
            tasks.append(asyncio.create_task(touch(i)))
        await asyncio.gather(*tasks)
        achieved = calls.events / (time.perf_counter() - start)
    last = max(seq for _, _, seq in acked)
    deadline = time.monotonic() + 60
    while watch.seen_at(last) is None and time.monotonic() < deadline:  # noqa: ASYNC110 - a thread fills it
        await asyncio.sleep(0.05)
    watch.halt.set()
    watch.join(5)
    # Negative: the board had committed the event before the client had read its 202; it counts as 0.
    seen = [(sent, at, watch.seen_at(seq)) for sent, at, seq in acked]
    raw_latencies = [(on_board - at) * 1000 for _, at, on_board in seen if on_board is not None]
    from_send = [(on_board - sent) * 1000 for sent, _, on_board in seen if on_board is not None]
    latencies = [max(0.0, x) for x in raw_latencies]
    before = sum(1 for x in raw_latencies if x <= 0)
    p99 = percentile(latencies, 99)
    report.add(
        Row(
            section="end-to-end",
            name=f"202 to board commit, {rate:,.0f} ev/s offered",
            value=achieved,
            unit="ev/s",
            p50_ms=percentile(latencies, 50),
            p99_ms=p99,
            goal="p99 < 100 ms at 1,000 ev/s",
            met=p99 < 100 and achieved >= 0.95 * rate,
            note=(
                f"{len(latencies)} events, {before} on the board before their 202 was read; from the request's "
                f"send: p50 {percentile(from_send, 50):.1f} ms, p99 {percentile(from_send, 99):.1f} ms; checkpoint "
                f"polled every ~2 ms; {calls.failures()}"
            ).strip("; "),
        )
    )


# --- SLA lateness ----------------------------------------------------------------------------------------


async def sla_figures(report: Report, nats_url: str, pg_url: str, folder: Path, leads: int) -> None:
    """Leads whose 30-second first-touch deadline falls 5-15 s ahead; how late each alert reached the log."""
    naming = Naming(f"bsla{uuid.uuid4().hex[:6]}")
    settings = NatsSettings(servers=(nats_url,), naming=naming, streams=StreamSettings())
    nc, js = await connect(settings, "bench-sla")
    await ensure_streams(js, naming, settings.streams)
    rules = folder / "bench-sla.toml"
    rules.write_text(SLA_RULES, encoding="utf-8")
    dsn = await _new_schema(pg_url)
    env = _env(nats_url, naming.prefix, dsn, DEALSTREAM_RULES=str(rules))
    with _process(["worker", "sla"], env, folder / "sla-worker.log"):
        store = EventStore(nc, js, naming)
        now = dt.datetime.now(dt.UTC)
        window = 10.0
        envelopes = [
            new_envelope(
                Context(actor="bench", source="api", correlation_id=uuid7(), now=now),
                "lead",
                f"sla-lead-{i}",
                LeadCaptured(company="Acme", email_domain="example.com"),
                occurred_at=now - dt.timedelta(seconds=25 - window * i / leads),
            )
            for i in range(leads)
        ]
        await asyncio.gather(*(store.append([e], expected_version=0) for e in envelopes))
        lateness = await _alert_lateness(js, naming, leads, within=60 + window)
    await nc.close()
    p99 = percentile(lateness, 99)
    report.add(
        Row(
            section="sla",
            name="alert in the log after its deadline",
            value=len(lateness),
            unit="alerts",
            p50_ms=percentile(lateness, 50),
            p99_ms=p99,
            goal="p99 < 1 s",
            met=len(lateness) == leads and p99 < 1000,
            note=f"{len(lateness)}/{leads} alerts; the scheduler polls every 0.25 s",
        )
    )


async def _alert_lateness(js: JetStreamContext, naming: Naming, expected: int, within: float) -> list[float]:
    sub = await js.pull_subscribe(
        naming.events_of_type("alert"),
        stream=naming.events_stream,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
    )
    late: list[float] = []
    deadline = time.monotonic() + within
    while len(late) < expected and time.monotonic() < deadline:
        with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
            for m in await sub.fetch(100, timeout=1):
                await m.ack()
                envelope = decode(m.data)
                if isinstance(envelope.data, AlertRaised):
                    late.append((envelope.recorded_at - envelope.data.deadline).total_seconds() * 1000)
    await sub.unsubscribe()
    return late


# --- the peer ------------------------------------------------------------------------------------------


async def peer_figures(report: Report, pg_url: str, leads: int, ours_append: float, ours_board: float) -> None:
    try:
        peer = importlib.import_module("bench.peer")
    except ImportError as exc:
        report.add(Row(section="peer", name="eventsourcing", value=0, unit="ev/s", note=f"skipped: {exc}"))
        return
    run: Any = peer.run_peer
    args: tuple[Any, ...] = (pg_url, leads, 1, len(STAGES) - 1)
    result = await run(*args) if inspect.iscoroutinefunction(run) else await asyncio.to_thread(run, *args)
    for name, theirs, ours in (
        ("commands: read, decide, append with optimistic concurrency", result.append_events_per_s, ours_append),
        ("projection with its checkpoint in the same transaction", result.projection_events_per_s, ours_board),
    ):
        report.add(
            Row(
                section="peer",
                name=f"Dealstream vs eventsourcing: {name}",
                value=ours,
                unit="ev/s",
                limit="eventsourcing",
                limit_value=theirs,
                ratio=ours / theirs if theirs else None,
                goal="Dealstream ahead",
                met=ours > theirs,
                note=f"eventsourcing: {result.notes}",
            )
        )


# --- the run ---------------------------------------------------------------------------------------------


async def bench(args: argparse.Namespace, nats_url: str, pg_url: str, folder: Path) -> Report:
    report = Report(
        machine=machine(),
        settings={k: v for k, v in vars(args).items() if isinstance(v, int | float | str) and k != "command"},
    )
    os.environ.setdefault("DEALSTREAM_RULES", str(DEPLOY / "sales.toml"))

    print("raw limits", flush=True)
    limit_naming = Naming(f"braw{uuid.uuid4().hex[:6]}")
    limit_settings = NatsSettings(servers=(nats_url,), naming=limit_naming, streams=StreamSettings())
    nc, js = await connect(limit_settings, "bench-raw")
    await ensure_streams(js, limit_naming, limit_settings.streams)
    firsts: dict[str, Envelope] = {}
    for phase in synthetic_log(args.leads * 2, dt.datetime(2026, 1, 5, tzinfo=dt.UTC)):
        for e in phase:
            firsts.setdefault(f"{e.aggregate_type}/{e.aggregate_id}", e)
    count, seconds = await raw.publish(js, limit_naming, [list(firsts.values())], window=256)
    raw_publish = report.add(
        Row(
            section="raw",
            name="JetStream publish, Nats-Msg-Id + expected-sequence headers, 256 in flight",
            value=count / seconds,
            unit="ev/s",
        )
    ).value
    await nc.close()

    print("commands in process", flush=True)
    ledger_row = await ledger_figures(report, nats_url, args.leads, args.concurrency, raw_publish)

    print("capture through the API", flush=True)
    naming = Naming(f"bapi{uuid.uuid4().hex[:6]}")
    nats = NatsSettings(servers=(nats_url,), naming=naming, streams=StreamSettings())
    nc, js = await connect(nats, "bench")
    await ensure_streams(js, naming, nats.streams)
    dsn = await _new_schema(pg_url)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = _env(nats_url, naming.prefix, dsn, DEALSTREAM_CONFIG=str(_api_config(folder)), DEALSTREAM_PORT=str(port))
    with _process(["api", "--workers", str(args.api_workers)], env, folder / "api.log") as api:
        await _wait_healthy(base, api)
        await capture_figures(report, base, raw_publish, args.leads, args.concurrency, args.batch)
        total = await _stream_last(js, naming)
        consume_write = report.add(
            Row(
                section="raw",
                name="pull fetch(1000) + decode + executemany upsert + ack, per batch",
                value=await raw.consume(js, naming, total, await _new_schema(pg_url)),
                unit="ev/s",
                note=f"over the API's log of {total:,} events",
            )
        ).value
        print("projection workers", flush=True)
        rows = await projection_figures(
            report, "projections", nats, pg_url, "raw consume+write", consume_write, goal=0.6
        )
        print("end-to-end latency", flush=True)
        with _process(["worker", "board"], env, folder / "board-worker.log"):
            async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
                while True:
                    with contextlib.suppress(psycopg.errors.UndefinedTable):
                        lag = await measure_lag(js, conn, naming, BoardProjection(), Shard())
                        if lag.caught_up:
                            break
                    await asyncio.sleep(0.2)
            open_deals = [f"deal-{p.n}" for p in plans(args.leads, seed=1) if p.deal_moves and p.n % 3 == 2]
            await e2e_figures(report, base, dsn, open_deals, args.e2e_rate, args.e2e_seconds, args.concurrency)
    await nc.close()

    if args.list_deals:
        print(f"the deal list over {args.list_deals:,} deals", flush=True)
        await deal_list_figures(report, pg_url, args.list_deals)

    print("SLA alert lateness", flush=True)
    await sla_figures(report, nats_url, pg_url, folder, args.sla_leads)

    if args.list_leads:
        print(f"lead list over {args.list_leads:,} leads", flush=True)
        await lead_list_figures(report, await _new_schema(pg_url), args.list_leads, args.list_rounds)

    if args.rebuild_events:
        print(f"rebuild over {args.rebuild_events:,} events", flush=True)
        naming = Naming(f"bre{uuid.uuid4().hex[:6]}")
        nats = NatsSettings(servers=(nats_url,), naming=naming, streams=StreamSettings())
        nc, js = await connect(nats, "bench-rebuild")
        await ensure_streams(js, naming, nats.streams)
        count, seconds = await raw.publish(
            js, naming, synthetic_log(args.rebuild_events, dt.datetime(2025, 1, 1, tzinfo=dt.UTC)), 512, guarded=False
        )
        print(f"  (log of {count:,} events written in {seconds:.0f} s)", flush=True)
        consume = report.add(
            Row(
                section="rebuild",
                name="raw pull fetch(1000) + decode + executemany + ack",
                value=await raw.consume(js, naming, count, await _new_schema(pg_url)),
                unit="ev/s",
                note=f"{count:,} events",
            )
        ).value
        started = time.perf_counter()
        await projection_figures(report, "rebuild", nats, pg_url, "raw consume+write", consume, goal=None)
        wall = time.perf_counter() - started
        report.add(
            Row(
                section="rebuild",
                name="all projections, one after another",
                value=wall,
                unit="s",
                note=f"{count:,} events each, {len(PROJECTIONS)} projections",
            )
        )
        await nc.close()

    if not args.skip_peer:
        print("the eventsourcing peer", flush=True)
        board = next(r for r in rows if r.name.startswith("board"))
        await peer_figures(report, pg_url, args.leads, ledger_row.value, board.value)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="dealstream bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--leads", type=int, default=10_000, help="leads captured through the API (default 10,000)")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight (default 32)")
    parser.add_argument("--api-workers", type=int, default=1, help="API processes (dealstream api --workers)")
    parser.add_argument("--batch", type=int, default=100, help="leads per batch request (default 100)")
    parser.add_argument("--e2e-rate", type=float, default=1000.0, help="events/s offered for latency (1,000)")
    parser.add_argument("--e2e-seconds", type=float, default=10.0, help="seconds of steady load (10)")
    parser.add_argument("--sla-leads", type=int, default=200, help="leads whose SLA deadline passes (200)")
    parser.add_argument("--rebuild-events", type=int, default=1_000_000, help="log size for rebuilds (0: skip)")
    parser.add_argument("--list-leads", type=int, default=100_000, help="leads behind the lead list (0: skip)")
    parser.add_argument("--list-rounds", type=int, default=2_000, help="lead list pages asked (2,000)")
    parser.add_argument("--skip-peer", action="store_true", help="do not run the eventsourcing peer")
    parser.add_argument("--pg-fsync-off", action="store_true", help="private PostgreSQL without fsync")
    parser.add_argument("--json", type=Path, help="also write the report as JSON to this file")
    parser.add_argument("--list-deals", type=int, default=50_000, help="deals in the deal list's board (0: skip)")


def run(args: argparse.Namespace) -> int:
    configure_logging(json=False, level="warning")
    folder = Path(tempfile.mkdtemp(prefix="dealstream-bench-"))
    print(f"logs of the servers and processes: {folder}", flush=True)
    nats_server = NatsServer(folder / "nats", name="bench", log_file=folder / "nats-server.log").start()
    pg_server = None
    pg_url = os.environ.get("DATABASE_URL")
    if not pg_url:
        pg_server = PostgresServer(
            Path(tempfile.mkdtemp(prefix="dealstream-bench-pg-")) / "data", durable=not args.pg_fsync_off
        ).start()
        pg_url = pg_server.url
    try:
        report = asyncio.run(bench(args, nats_server.url, pg_url, folder))
    finally:
        nats_server.stop()
        if pg_server is not None:
            pg_server.stop()
    print()
    print(render(report))
    if args.json:
        args.json.write_bytes(msgspec.json.format(msgspec.json.encode(report)))
        print(f"\nJSON report: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
