"""A rep's day in one call: GET /v1/tasks from the tasks read model, with the real tasks worker running."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from events.config import NatsSettings
from projections.rules import sales_rules_from_toml
from projections.sla_rules import SlaRules
from services.api.tasks import owners_day
from services.config import Settings
from tests.conftest import ADMIN_KEY, api_config, wait_healthy
from tests.integration.test_api_reads import PIPELINE
from tests.waiting import eventually
from workers.registry import serve_worker

pytestmark = pytest.mark.integration

Client = AsyncTestClient[Litestar]


@pytest.fixture
async def tasks_api(nats_settings: NatsSettings, pg_dsn: str) -> AsyncIterator[Client]:
    from services.api.app import create_app

    stop = asyncio.Event()
    worker = asyncio.create_task(serve_worker("tasks", "0/1", nats_settings, pg_dsn, stop=stop))
    app = create_app(Settings(nats=nats_settings, config=api_config(), database_url=pg_dsn))
    try:
        async with AsyncTestClient(app, raise_server_exceptions=False) as client:
            client.headers["Authorization"] = f"Bearer {ADMIN_KEY}"
            await wait_healthy(client)
            yield client
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(worker, 30)


async def _tasks(client: Client, **params: str) -> list[str]:
    r = await client.get("/v1/tasks", params=params)
    assert r.status_code == 200, r.text
    return [t["task_id"] for t in r.json()["tasks"]]


async def test_a_reps_open_overdue_and_due_today_tasks(tasks_api: Client) -> None:
    client = tasks_api
    now = dt.datetime.now(dt.UTC)
    _, end_of_today = owners_day("ana", now, SlaRules())
    assert (await client.put("/v1/pipelines/sales", json=PIPELINE)).status_code == 202
    deal = {"deal_id": "acme", "name": "Acme", "pipeline_id": "sales", "amount": "1", "currency": "EUR"}
    assert (await client.post("/v1/deals", json={**deal, "owner": "ana"})).status_code == 202
    lead = await client.post("/v1/leads", json={"email": "jan@firma.pl"})
    lead_id = lead.json()["aggregate_id"]
    assert (await client.post(f"/v1/leads/{lead_id}/assign", json={"owner": "ana"})).status_code == 202

    def due(at: dt.datetime) -> str:
        return at.isoformat()

    schedule = [
        ("deals/acme", {"task_id": "late", "title": "Send quote", "due_at": due(now - dt.timedelta(days=2))}),
        (
            "deals/acme",
            {"task_id": "today", "title": "Call back", "due_at": due(end_of_today - dt.timedelta(seconds=1))},
        ),
        ("deals/acme", {"task_id": "later", "title": "Demo", "due_at": due(end_of_today + dt.timedelta(days=3))}),
        (
            f"leads/{lead_id}",
            {"task_id": "intro", "title": "Intro", "due_at": due(end_of_today + dt.timedelta(days=1))},
        ),
        (f"leads/{lead_id}", {"task_id": "bo", "title": "Bo's", "owner": "bo", "due_at": due(now)}),
        (f"leads/{lead_id}", {"task_id": "done", "title": "Done", "due_at": due(now - dt.timedelta(days=1))}),
    ]
    for path, body in schedule:
        r = await client.post(f"/v1/{path}/tasks", json=body)
        assert r.status_code == 202, r.text
    done = await client.post(f"/v1/leads/{lead_id}/tasks/done/complete", json={})
    assert done.status_code == 202, done.text

    async def caught_up() -> bool:
        r = await client.get("/v1/tasks")  # 503 until the worker has made its tables
        return r.status_code == 200 and len(r.json()["tasks"]) == 5

    await eventually(caught_up)
    assert await _tasks(client, owner="ana") == ["late", "today", "intro", "later"]
    assert await _tasks(client, owner="ana", status="overdue") == ["late"]
    assert await _tasks(client, owner="ana", status="due_today") == ["today"]
    assert await _tasks(client, owner="bo") == ["bo"]
    first = (await client.get("/v1/tasks", params={"owner": "ana", "limit": 3})).json()
    assert [t["task_id"] for t in first["tasks"]] == ["late", "today", "intro"] and first["tasks"][0]["overdue"]
    rest = await _tasks(client, owner="ana", limit="3", cursor=first["next_cursor"])
    assert rest == ["later"]

    # The deal's tasks follow its owner; the task scheduled for bo stays bo's.
    version = (await client.get("/v1/deals/acme")).json()["version"]
    r = await client.patch("/v1/deals/acme", json={"owner": "chen"}, headers={"If-Match": str(version)})
    assert r.status_code == 202, r.text

    async def followed() -> bool:
        return await _tasks(client, owner="chen") == ["late", "today", "later"]

    await eventually(followed)
    assert await _tasks(client, owner="ana") == ["intro"]

    bad = await client.get("/v1/tasks", params={"status": "someday"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "status"
    bad = await client.get("/v1/tasks", params={"due": "today"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "due"


def test_today_is_the_owners_day_in_their_team_time_zone() -> None:
    text = '[teams.enterprise]\nmembers = ["chen"]\nmanager = "li"\ncalendar = { timezone = "Asia/Shanghai" }\n'
    sla = sales_rules_from_toml(text).sla
    # 20:00 UTC on the 23rd is already the 24th in Shanghai (UTC+8): chen's day starts at 16:00 UTC.
    now = dt.datetime(2026, 11, 23, 20, 0, tzinfo=dt.UTC)
    assert owners_day("chen", now, sla) == (
        dt.datetime(2026, 11, 23, 16, 0, tzinfo=dt.UTC),
        dt.datetime(2026, 11, 24, 16, 0, tzinfo=dt.UTC),
    )
    assert owners_day("ana", now, sla)[0] == dt.datetime(2026, 11, 23, 0, 0, tzinfo=dt.UTC)
