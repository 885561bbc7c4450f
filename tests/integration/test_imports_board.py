"""Each CRM's export imported through the handlers into a real nats-server, folded by the board worker into a real
PostgreSQL: the board's figures are the README's, and a second import appends nothing."""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from nats.js import JetStreamContext

from events.config import NatsSettings
from events.ledger import Context, Ledger
from events.store import EventStore
from events.subjects import Naming
from projections.board_store import BoardProjection, read_state
from services.imports.runner import read_plan, run, steps_of
from tests.builders import T0
from tests.imports_oracle import README_FIGURES, figures, files_of
from tests.projection_fixtures import FAST, board_engine, running, wait_caught_up

pytestmark = pytest.mark.integration

CTX = Context(actor="import-test", source="system", correlation_id="c-import", now=T0)


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

    async with running(board_engine(nats_settings, pg_dsn, settings=FAST)):
        await wait_caught_up(js, pg_dsn, naming, BoardProjection())
    async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
        state = await read_state(conn)
    rows = list(state.deals.values())
    assert figures([(d.status, d.currency, d.amount, d.lost_reason) for d in rows]) == README_FIGURES[crm]
    # Business time, not the import's: every deal opened and closed in 2025.
    assert all(d.opened_at.year == 2025 and (d.closed_at is None or d.closed_at.year == 2025) for d in rows)
