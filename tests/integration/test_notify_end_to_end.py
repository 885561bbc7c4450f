"""A lead captured with a past business time, through the API and the real SLA, routing and notify workers: the
first-touch alert, raised before or after routing assigned the lead, reaches the owner routing chose."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from events.config import NatsSettings
from services.config import Settings
from tests.conftest import ADMIN_KEY, api_config, wait_healthy
from tests.integration.test_notify_worker import Receiver
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
name = "speed"
kind = "first_touch"
within_minutes = 1
business_hours = false
[routing]
[[routing.rules]]
name = "all-to-inside"
team = "inside"
[notify]
public_url = "https://crm.example.com"
[notify.recipients.ana]
webhook = "{hook}"
timezone = "Europe/Warsaw"
[notify.recipients.boss]
webhook = "{hook}"
"""


@pytest.fixture
def hooks() -> Iterator[Receiver]:
    server = Receiver(failures=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
async def notify_api(
    nats_settings: NatsSettings, pg_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hooks: Receiver
) -> AsyncIterator[Client]:
    from services.api.app import create_app

    rules = tmp_path / "sales.toml"
    rules.write_text(RULES.format(hook=hooks.url))
    monkeypatch.setenv("DEALSTREAM_RULES", str(rules))
    monkeypatch.setenv("DEALSTREAM_NOTIFY_SECRET", "test-secret")
    stop = asyncio.Event()
    workers = [
        asyncio.create_task(serve_worker(name, "0/1", nats_settings, pg_dsn, stop=stop))
        for name in ("sla", "routing", "notify")
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


async def test_a_past_time_capture_alerts_the_owner_routing_chose_by_name_with_a_link(
    notify_api: Client, hooks: Receiver
) -> None:
    api = notify_api
    captured = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
    lead = {
        "first_name": "Marta",
        "last_name": "Kowalska",
        "company": "Kowalski i Synowie",
        "email": "marta@example.com",
        "occurred_at": captured.isoformat(),
    }
    r = await api.post("/v1/leads", json=lead)
    assert r.status_code == 202, r.text
    lead_id = r.json()["aggregate_id"]

    async def announced() -> bool:
        notices = (await api.get("/v1/notices", params={"status": "addressed"})).json()
        return any(n["type"] == "alert.raised.v1" for n in notices)

    await eventually(announced)
    [notice] = (await api.get("/v1/notices")).json()
    assert (notice["subject_id"], notice["recipient"], notice["why"], notice["deliveries"]) == (
        lead_id,
        "ana",
        "owner",
        1,
    )

    async def delivered() -> bool:
        rows = (await api.get("/v1/notifications", params={"recipient": "ana"})).json()
        return [d["state"] for d in rows] == ["delivered"]

    await eventually(delivered)
    assert len(hooks.requests) == 1
    message = json.loads(hooks.requests[0][1])
    assert message["recipient"] == "ana"
    assert message["text"].startswith("Call Marta Kowalska (Kowalski i Synowie): first touch due ")
    assert "Warsaw time" in message["text"] and message["link"] == f"https://crm.example.com/leads/{lead_id}"
    bad = await api.get("/v1/notices", params={"status": "lost"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "status"
    assert (await api.get("/v1/notices", params={"owner": "ana"})).status_code == 422
