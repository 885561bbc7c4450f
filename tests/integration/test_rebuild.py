"""Rebuild and verify against real servers: a rebuild under live writes takes over and equals the live model,
the live worker follows it, and verify finds a row someone changed behind the log's back."""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
from nats.js import JetStreamContext

from events.config import NatsSettings
from events.store import EventStore
from events.subjects import Naming
from events.types import LeadCaptured
from projections.board_store import BoardProjection, read_state
from projections.versions import BuildConflict, serving_build_name
from tests.builders import envelope
from tests.faults.processes import ROOT, child_env
from tests.projection_fixtures import FAST, append_concurrently, wait_caught_up, workload
from tests.waiting import eventually
from workers.rebuild import Progress, rebuild, verify
from workers.registry import RulesUnknown, build_rules, like_serving, projection_of, serve_worker

pytestmark = pytest.mark.integration


async def test_a_rebuild_during_live_writes_takes_over_equal_to_the_live_model_and_the_worker_follows(
    store: EventStore,
    nats_conn: tuple[Any, JetStreamContext],
    nats_settings: NatsSettings,
    naming: Naming,
    pg_dsn: str,
) -> None:
    _, js = nats_conn
    await append_concurrently(store, workload(200, seed=11))
    stop = asyncio.Event()
    live = asyncio.create_task(serve_worker("board", "0/1", nats_settings, pg_dsn, FAST, stop, instance=""))
    try:
        await wait_caught_up(js, pg_dsn, naming, BoardProjection())
        writes = asyncio.create_task(append_concurrently(store, workload(200, seed=12)))
        seen: list[Progress] = []
        assert await rebuild(BoardProjection("r1"), nats_settings, pg_dsn, seen.append)
        await writes
        assert seen and seen[-1].serving and seen[-1].done <= seen[-1].total

        async def serving_r1() -> bool:
            async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
                return await serving_build_name(conn, "board", "") == "board_v2_r1"

        await eventually(serving_r1)
        # The live worker followed the rebuild: it keeps board_v2_r1 up to date from here on.
        await append_concurrently(store, workload(30, seed=13))
        await wait_caught_up(js, pg_dsn, naming, BoardProjection("r1"))
        result = await verify(BoardProjection("v1"), nats_settings, pg_dsn)
        assert result.live == "board_v2_r1" and result.same, result
        assert {t.table for t in result.tables} == {"deals", "deal_leads", "pipelines"}
        async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
            rebuilt = await read_state(conn, "board_v2_r1")
        assert len(rebuilt.deals) == 430  # every deal of the three workloads, the last ones from the follower

        # A row changed behind the log's back is found.
        async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
            await conn.execute("UPDATE board_v2_r1_deals SET amount = amount + 1 WHERE deal_id = 'w11-0'")
        result = await verify(BoardProjection("v2"), nats_settings, pg_dsn)
        deals = next(t for t in result.tables if t.table == "deals")
        assert not result.same and deals.only_live == 1 and deals.only_rebuilt == 1
        assert "w11-0" in deals.sample_only_live[0]
        async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
            cur = await conn.execute("SELECT count(*) FROM projection_checkpoints WHERE projection LIKE 'board_v2_v%'")
            assert await cur.fetchone() == (0,)  # the shadow builds are gone
    finally:
        stop.set()
        await asyncio.wait_for(live, 30)


SCORING = """
[scoring]
version = 1
threshold = 30
half_life_days = 14
[[scoring.fit]]
name = "leader"
field = "job_title"
pattern = "head|director"
points = 40
"""


async def _leads(store: EventStore, count: int) -> None:
    at = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    for n in range(count):
        title = "Head of Sales" if n % 2 else "Intern"
        data = LeadCaptured(email=f"lead{n}@acme.example", job_title=title)
        await store.append([envelope(data, "lead", f"lead-{n}", at)], 0)


def _verify_cli(nats_settings: NatsSettings, dsn: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", "verify", "scores"],
        cwd=ROOT,
        env=child_env(
            DEALSTREAM_NATS_URL=nats_settings.servers[0],
            DEALSTREAM_PREFIX=nats_settings.naming.prefix,
            DATABASE_URL=dsn,
            **env,
        ),
        capture_output=True,
        text=True,
        timeout=300,
    )


async def test_verify_rebuilds_from_the_rules_the_serving_build_recorded_or_refuses(
    store: EventStore,
    nats_conn: tuple[Any, JetStreamContext],
    nats_settings: NatsSettings,
    naming: Naming,
    pg_dsn: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``dealstream verify scores`` without DEALSTREAM_RULES used to rebuild under empty rules (the same version,
    1) and report every scored lead as a difference."""
    _, js = nats_conn
    rules_file = tmp_path / "sales.toml"
    rules_file.write_text(SCORING, encoding="utf-8")
    await _leads(store, 12)
    monkeypatch.setenv("DEALSTREAM_RULES", str(rules_file))
    # The live worker keeps running, as beside any verify: its actor appends qualifications as it goes.
    stop = asyncio.Event()
    live = asyncio.create_task(serve_worker("scores", "0/1", nats_settings, pg_dsn, FAST, stop, instance=""))
    try:
        await wait_caught_up(js, pg_dsn, naming, projection_of("scores", ""))
        monkeypatch.delenv("DEALSTREAM_RULES")
        await _verify_scores(nats_settings, pg_dsn, rules_file)
    finally:
        stop.set()
        await asyncio.wait_for(live, 30)


async def _verify_scores(nats_settings: NatsSettings, pg_dsn: str, rules_file: Path) -> None:

    # What verify compared before: a build from this environment's rules (none) differs by the rules alone.
    blind = await verify(projection_of("scores", "blind"), nats_settings, pg_dsn)
    assert blind.live == "scores_v101" and not blind.same

    # The build recorded its rules; verify rebuilds from them, whatever the environment says.
    shadow, rules = await like_serving("scores", "v1", pg_dsn)
    assert rules is not None and rules.text == SCORING and rules.source == str(rules_file)
    assert (await verify(shadow, nats_settings, pg_dsn, rules=rules)).same
    cli = _verify_cli(nats_settings, pg_dsn)
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert f"from the serving build's recorded rules {rules.sha256[:12]} from {rules_file}" in cli.stdout
    assert "leads" in cli.stdout and "same" in cli.stdout

    # Rules other than the build's are refused before anything is built.
    empty = build_rules("scores", "", "")
    with pytest.raises(RuntimeError, match=r"scores_v101 was made from rules \w+ from .*sales\.toml, not rules"):
        await verify(projection_of("scores", "v2", empty), nats_settings, pg_dsn, rules=empty)

    # A build without recorded rules cannot be rebuilt like itself: the command names what is missing.
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        await conn.execute("UPDATE projection_builds SET rules = NULL, rules_source = NULL, rules_sha256 = NULL")
    with pytest.raises(RulesUnknown, match="scores_v101 serves scores but has no recorded rules"):
        await like_serving("scores", "v3", pg_dsn)
    refused = _verify_cli(nats_settings, pg_dsn)
    assert refused.returncode == 2 and "scores_v101 serves scores but has no recorded rules" in refused.stderr
    async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
        cur = await conn.execute("SELECT count(*) FROM projection_checkpoints WHERE projection <> 'scores_v101'")
        assert await cur.fetchone() == (0,)  # every shadow build is gone, and the refused ones never started


async def test_a_build_is_continued_only_under_the_rules_it_was_made_from(
    store: EventStore,
    nats_conn: tuple[Any, JetStreamContext],
    nats_settings: NatsSettings,
    naming: Naming,
    pg_dsn: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, js = nats_conn
    rules_file = tmp_path / "sales.toml"
    rules_file.write_text(SCORING, encoding="utf-8")
    monkeypatch.setenv("DEALSTREAM_RULES", str(rules_file))
    await _leads(store, 4)

    async def run_until_caught_up() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(serve_worker("scores", "0/1", nats_settings, pg_dsn, FAST, stop, instance=""))
        try:
            await wait_caught_up(js, pg_dsn, naming, projection_of("scores", ""))
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)

    await run_until_caught_up()
    # Another section of the shared rules file changes: the scores build is made from the same rules.
    rules_file.write_text(SCORING + "\n[sla]\nversion = 2\n", encoding="utf-8")
    await run_until_caught_up()
    # The scoring rules change under the same version: the build was not made from them, and is left untouched.
    stored_rules = await _scores_rules(pg_dsn)
    rules_file.write_text(SCORING.replace("points = 40", "points = 10"), encoding="utf-8")
    with pytest.raises(BuildConflict, match=r"scores_v101 was made from rules \w+ from .*; this process has rules"):
        await asyncio.wait_for(serve_worker("scores", "0/1", nats_settings, pg_dsn, FAST, instance=""), 30)
    assert await _scores_rules(pg_dsn) == stored_rules


async def _scores_rules(dsn: str) -> str:
    """The rules the scores build keeps beside its rows."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute("SELECT rules::text FROM scores_v101_rules")
        row = await cur.fetchone()
        assert row is not None and "40" in str(row[0])
        return str(row[0])
