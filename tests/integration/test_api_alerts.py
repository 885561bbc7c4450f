"""Alerts over HTTP: raised by the real SLA worker, listed by rep, shown on the board's deals."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from events.config import NatsSettings
from services.config import Settings
from tests.conftest import ADMIN_KEY, api_config, wait_healthy
from tests.waiting import eventually
from workers.registry import serve_worker

pytestmark = pytest.mark.integration

Client = AsyncTestClient[Litestar]

RULES = """
manager = "boss"
[teams.inside]
members = ["ana"]
manager = "maria"
[sla]
version = 1
[[sla.policies]]
name = "tasks-on-time"
kind = "task_due"
business_hours = false
[[sla.policies]]
name = "speed"
kind = "first_touch"
within_minutes = 0.02
business_hours = false
"""


@pytest.fixture
async def alerts_api(
    nats_settings: NatsSettings, pg_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Client]:
    from services.api.app import create_app

    rules = tmp_path / "sales.toml"
    rules.write_text(RULES)
    monkeypatch.setenv("DEALSTREAM_RULES", str(rules))
    stop = asyncio.Event()
    workers = [
        asyncio.create_task(serve_worker(name, "0/1", nats_settings, pg_dsn, stop=stop)) for name in ("board", "sla")
    ]
    app = create_app(Settings(nats=nats_settings, config=api_config(), database_url=pg_dsn))
    try:
        async with AsyncTestClient(app, raise_server_exceptions=False) as client:
            client.headers["Authorization"] = f"Bearer {ADMIN_KEY}"
            await wait_healthy(client)
            yield client
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*workers), 30)


async def test_an_overdue_task_raises_an_alert_listed_by_rep_and_shown_on_the_deal_card(alerts_api: Client) -> None:
    api = alerts_api
    now = dt.datetime.now(dt.UTC)
    pipeline = {"name": "Sales", "stages": [{"id": "new", "name": "New", "probability": 0.1}]}
    assert (await api.put("/v1/pipelines/sales", json=pipeline)).status_code == 202
    r = await api.post(
        "/v1/deals",
        json={
            "deal_id": "acme",
            "name": "Acme",
            "pipeline_id": "sales",
            "amount": "1000",
            "currency": "EUR",
            "owner": "ana",
            "occurred_at": now.isoformat(),
        },
    )
    assert r.status_code == 202, r.text
    due = now + dt.timedelta(seconds=1)
    r = await api.post(
        "/v1/deals/acme/tasks",
        json={"task_id": "call-back", "title": "Call back", "due_at": due.isoformat(), "occurred_at": now.isoformat()},
    )
    assert r.status_code == 202, r.text
    lead = await api.post("/v1/leads", json={"email": "x@example.com", "occurred_at": now.isoformat()})
    assert lead.status_code == 202, lead.text

    async def two_alerts() -> bool:
        r = await api.get("/v1/alerts", params={"status": "open"})
        return r.status_code == 200 and len(r.json()["alerts"]) == 2

    await eventually(two_alerts)
    by_rep = (await api.get("/v1/alerts", params={"rep": "ana"})).json()
    [task_alert] = by_rep["alerts"]
    assert task_alert["kind"] == "task_due" and task_alert["subject_id"] == "acme" and task_alert["status"] == "open"
    assert dt.datetime.fromisoformat(task_alert["raised_at"]) >= dt.datetime.fromisoformat(task_alert["deadline"])
    page = (await api.get("/v1/alerts", params={"limit": 1})).json()
    rest = (await api.get("/v1/alerts", params={"limit": 1, "cursor": page["next_cursor"]})).json()
    assert len(page["alerts"]) == len(rest["alerts"]) == 1 and rest["next_cursor"] is None
    assert {page["alerts"][0]["alert_id"], rest["alerts"][0]["alert_id"]} == {
        a["alert_id"] for a in (await api.get("/v1/alerts")).json()["alerts"]
    }

    async def on_the_card() -> bool:
        board: list[dict[str, Any]] = (await api.get("/v1/board")).json()
        cards = [d for b in board for c in b["columns"] for d in c["deals"] if d["deal_id"] == "acme"]
        return bool(cards and cards[0]["alerts"])

    await eventually(on_the_card)

    # Completing the task answers the alert.
    r = await api.post("/v1/deals/acme/tasks/call-back/complete", json={})
    assert r.status_code == 202, r.text

    async def resolved() -> bool:
        alerts = (await api.get("/v1/alerts", params={"status": "resolved", "deal_id": "acme"})).json()["alerts"]
        return [a["resolution"] for a in alerts] == ["task_completed"]

    await eventually(resolved)
    assert (await api.get("/v1/alerts", params={"lead_id": "a", "deal_id": "b"})).status_code == 422
    assert (await api.get("/v1/alerts", params={"cursor": "garbage"})).status_code == 422


@pytest.mark.parametrize("field", ["event_id", "recipient"])
async def test_a_nul_in_a_notifications_filter_is_a_422_naming_it(api: Client, field: str) -> None:
    """Found by the schemathesis fuzz: PostgreSQL text cannot hold NUL, and the driver's refusal was a 500."""
    r = await api.get("/v1/notifications", params={field: "abc\x00def"})
    assert r.status_code == 422, r.text
    assert [e["field"] for e in r.json()["errors"]] == [field]
