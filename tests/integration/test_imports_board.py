"""Each CRM's export imported through the handlers into a real nats-server, folded by the board worker into a real
PostgreSQL: the board's figures are the README's, and a second import appends nothing."""

from __future__ import annotations

import csv
import datetime as dt
import io
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from litestar.testing import AsyncTestClient
from nats.js import JetStreamContext

from events import commands as cmd
from events import handlers
from events.aggregates import fold_pipeline
from events.config import NatsSettings
from events.ids import derived_id
from events.ledger import Context, Ledger
from events.store import EventStore
from events.subjects import Naming
from events.types import LeadAssigned, LeadCaptured, StageDefinition
from projections.board_store import BoardProjection, read_state
from projections.velocity_queries import metrics
from projections.velocity_store import VelocityProjection
from services.api.app import create_app
from services.config import Settings
from services.imports.runner import read_plan, run, steps_of
from tests.builders import T0
from tests.conftest import ADMIN_KEY, api_config, wait_healthy
from tests.imports_oracle import README_FIGURES, figures, files_of
from tests.projection_fixtures import FAST, board_engine, running, wait_caught_up
from workers.engine import ProjectionEngine

pytestmark = pytest.mark.integration

YEAR_2025 = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
YEAR_2026 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
CTX = Context(actor="import-test", source="system", correlation_id="c-import", now=T0)


def export_cli(args: list[str], pg_dsn: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": pg_dsn}
    cli = [sys.executable, "-m", "services.cli", "export", *args]
    return subprocess.run(cli, env=env, capture_output=True, text=True, timeout=60)


async def messages(js: JetStreamContext, naming: Naming) -> int:
    return (await js.stream_info(naming.events_stream)).state.messages


@pytest.mark.parametrize("crm", sorted(README_FIGURES))
async def test_an_imported_export_gives_the_readme_figures_on_the_board_and_imports_once(
    crm: str,
    store: EventStore,
    nats_conn: tuple[Any, JetStreamContext],
    nats_settings: NatsSettings,
    naming: Naming,
    pg_dsn: str,
) -> None:
    _, js = nats_conn
    plan = read_plan(crm, files_of(crm), ZoneInfo("Europe/Warsaw"))
    ticks: list[int] = []
    report = await run(plan, Ledger(store), CTX, advance=lambda: ticks.append(1))
    assert report.rejected == [] and report.already_there == 0
    assert len(ticks) == steps_of(plan)
    written = await messages(js, naming)
    assert written == report.appended

    again = await run(read_plan(crm, files_of(crm), ZoneInfo("Europe/Warsaw")), Ledger(store), CTX)
    assert (again.appended, again.already_there) == (0, report.appended)
    assert await messages(js, naming) == written

    velocity = ProjectionEngine(VelocityProjection(), nats_settings, pg_dsn, None, FAST)
    async with running(board_engine(nats_settings, pg_dsn, settings=FAST)), running(velocity):
        await wait_caught_up(js, pg_dsn, naming, BoardProjection())
        await wait_caught_up(js, pg_dsn, naming, VelocityProjection())
    async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
        state = await read_state(conn)
        [year] = (await metrics(conn, YEAR_2025, YEAR_2026)).groups
    rows = list(state.deals.values())
    expected = README_FIGURES[crm]
    assert figures([(d.status, d.currency, d.amount, d.lost_reason) for d in rows]) == expected
    # The velocity metrics of 2025, the year the exported deals were opened and closed in.
    assert (year.deals_opened, year.deals_won, year.deals_lost) == (25, expected.won, expected.lost)
    assert (year.open_deals, year.won_value, year.lost_by_reason) == (
        expected.open,
        expected.won_sums,
        dict(sorted(expected.lost_reasons.items())),
    )
    # Business time, not the import's: every deal opened and closed in 2025.
    assert all(d.opened_at.year == 2025 and (d.closed_at is None or d.closed_at.year == 2025) for d in rows)


async def test_the_imported_deals_export_as_csv_with_a_bom_for_excel(
    tmp_path: Path,
    store: EventStore,
    nats_conn: tuple[Any, JetStreamContext],
    nats_settings: NatsSettings,
    naming: Naming,
    pg_dsn: str,
) -> None:
    _, js = nats_conn
    await run(read_plan("hubspot", files_of("hubspot"), ZoneInfo("UTC")), Ledger(store), CTX)
    async with running(board_engine(nats_settings, pg_dsn, settings=FAST)):
        await wait_caught_up(js, pg_dsn, naming, BoardProjection())
    app = create_app(Settings(nats=nats_settings, config=api_config(), database_url=pg_dsn))
    async with AsyncTestClient(app, raise_server_exceptions=False) as client:
        client.headers["Authorization"] = f"Bearer {ADMIN_KEY}"
        await wait_healthy(client)
        answer = await client.get("/v1/exports/deals.csv", params={"bom": "true"})
        won = await client.get("/v1/exports/deals.csv", params={"status": "won"})
        unknown = await client.get("/v1/exports/deals.csv", params={"colour": "red"})
        bad = await client.get("/v1/exports/deals.csv", params={"status": "maybe"})
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/csv")
    assert answer.content.startswith(b"\xef\xbb\xbf")
    rows = list(csv.DictReader(io.StringIO(answer.content.decode("utf-8-sig"))))
    assert len(rows) == 25
    outcomes = [(r["status"], r["currency"], Decimal(r["amount"]), r["lost_reason"] or None) for r in rows]
    assert figures(outcomes) == README_FIGURES["hubspot"]
    assert 'Renewal, 3 seats "Team" plan' in {r["name"] for r in rows}
    assert len(list(csv.DictReader(io.StringIO(won.text)))) == 8 and not won.content.startswith(b"\xef")
    assert unknown.status_code == 422 and bad.status_code in (400, 422)
    assert bad.json()["errors"][0]["field"] == "status"
    out = tmp_path / "lost.csv"
    done = export_cli(["deals", "--status", "lost", "--bom", "--out", str(out)], pg_dsn)
    assert done.returncode == 0, done.stderr
    lost = list(csv.DictReader(io.StringIO(out.read_bytes().decode("utf-8-sig"))))
    assert sorted(r["lost_reason"] for r in lost) == sorted(
        reason for reason, n in README_FIGURES["hubspot"].lost_reasons.items() for _ in range(n)
    )


async def test_a_later_file_with_a_new_stage_adds_it_and_keeps_the_stages_of_earlier_deals(store: EventStore) -> None:
    first = read_plan("pipedrive", {"deals": files_of("pipedrive")["deals"]}, ZoneInfo("UTC"))
    await run(first, Ledger(store), CTX)
    header = "Deal - ID,Deal - Title,Deal - Currency,Deal - Pipeline,Deal - Stage,Deal - Status,Deal - Deal created on"
    later = f"{header}\n900,Late,EUR,Sales pipeline,Pilot,Open,2025-10-01 09:00:00\n".encode()
    report = await run(read_plan("pipedrive", {"deals": ("later.csv", later)}, ZoneInfo("UTC")), Ledger(store), CTX)
    assert report.rejected == []
    pipeline = fold_pipeline(s.envelope for s in await store.read("pipeline", "pipedrive-sales-pipeline"))
    assert [s.id for s in pipeline.stages] == [
        "qualified",
        "contact-made",
        "demo-scheduled",
        "proposal-made",
        "negotiations-started",
        "pilot",
    ]


async def test_imported_leads_are_captured_at_their_crm_creation_time_with_their_owner(store: EventStore) -> None:
    plan = read_plan("zendesk-sell", {"leads": files_of("zendesk-sell")["leads"]}, ZoneInfo("UTC"))
    await run(plan, Ledger(store), CTX)
    record = next(r for r in plan.leads if r.record_id == "60120317")
    captured, assigned = (s.envelope for s in await store.read("lead", record.aggregate_id))
    assert captured.occurred_at == dt.datetime(2025, 4, 1, 14, 52, 24, tzinfo=dt.UTC)
    assert isinstance(captured.data, LeadCaptured) and captured.data.email == "adam@pietrzak-meble.example"
    assert captured.data.source == "facebook-lead-ads"
    assert isinstance(assigned.data, LeadAssigned) and assigned.data.owner == "Marta Zielińska"
    assert assigned.occurred_at == captured.occurred_at


async def test_a_mapped_pipeline_takes_the_deals_in_its_stages_and_refuses_the_rest(store: EventStore) -> None:
    stages = [StageDefinition(id=s, name=s, probability=0.5) for s in ("qualified", "contact-made", "proposal-made")]
    ledger = Ledger(store)
    await handlers.handle(ledger, CTX, cmd.DefinePipeline(pipeline_id="default", name="Default", stages=stages))
    files = {"deals": files_of("pipedrive")["deals"]}
    plan = read_plan("pipedrive", files, ZoneInfo("UTC"), pipeline_map={"Sales pipeline": "default"})
    assert [s.command.pipeline_id for s in plan.pipelines if isinstance(s.command, cmd.DefinePipeline)] == [
        "pipedrive-partners"
    ]
    report = await run(plan, ledger, CTX)
    # Demo Scheduled and Negotiations Started are no stages of "default": those 9 deals are refused before any of
    # their commands, named by row; the other 16 are imported.
    assert {p.column for p in report.rejected} == {"stage"} and len(report.rejected) == 9
    assert all(p.file.endswith("deals.csv") and p.row > 1 and p.record_id for p in report.rejected)
    refused = {derived_id("import", "pipedrive", "deal", p.record_id or "") for p in report.rejected}
    for record in plan.deals:
        assert bool(await store.read("deal", record.aggregate_id)) == (record.aggregate_id not in refused)
