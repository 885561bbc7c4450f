"""Erasing a lead's personal data from an immutable log: nothing readable is left anywhere, the chain holds,
and the metrics stay."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from nats.js import JetStreamContext

from events.audit import audit_stream, scan
from events.config import NatsSettings
from events.subjects import Naming
from services.config import Settings
from tests.conftest import ADMIN_KEY, api_config, wait_healthy
from tests.waiting import eventually
from workers.registry import serve_worker

pytestmark = pytest.mark.integration

Client = AsyncTestClient[Litestar]
LEAD = {
    "email": "jan.kowalski@firma.pl",
    "first_name": "Jan",
    "last_name": "Kowalski",
    "phone": "+48 600 100 200",
    "message": "Proszę o wycenę",
    "job_title": "Head of Sales",
    "occurred_at": "2026-11-02T10:00:00+01:00",
}


@pytest.fixture
async def client(nats_settings: NatsSettings, pg_dsn: str) -> AsyncIterator[Client]:
    from services.api.app import create_app

    stop = asyncio.Event()
    workers = [
        asyncio.create_task(serve_worker(name, "0/1", nats_settings, pg_dsn, stop=stop, instance=""))
        for name in ("velocity", "scores")
    ]
    app = create_app(Settings(nats=nats_settings, config=api_config(), database_url=pg_dsn))
    try:
        async with AsyncTestClient(app, raise_server_exceptions=False) as c:
            c.headers["Authorization"] = f"Bearer {ADMIN_KEY}"
            await wait_healthy(c)
            yield c
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*workers), 30)


async def test_an_erased_lead_shows_no_personal_data_anywhere_while_its_metrics_stay(
    client: Client, nats_conn: tuple[Any, JetStreamContext], naming: Naming
) -> None:
    _, js = nats_conn
    r = await client.post("/v1/leads", json=LEAD)
    assert r.status_code == 202, r.text
    lead_id = r.json()["aggregate_id"]
    [captured] = (await client.get(f"/v1/leads/{lead_id}/events", params={"include_raw": "true"})).json()["events"]
    assert captured["data"]["last_name"] == "Kowalski" and "Kowalski" in captured["raw"]["body"]
    log = b"".join([m.data async for m in scan(js, naming.events_stream)])
    assert b"Kowalski" not in log and b"jan.kowalski" not in log and b"600 100 200" not in log

    params = {"from": "2026-11-01T00:00:00+01:00", "to": "2026-12-01T00:00:00+01:00", "group_by": "source"}

    async def counted() -> bool:
        r = await client.get("/v1/metrics/velocity", params=params)
        score = await client.get(f"/v1/leads/{lead_id}/score")
        return r.status_code == 200 and bool(r.json()["groups"]) and score.status_code == 200

    await eventually(counted)
    before = (await client.get("/v1/metrics/velocity", params=params)).json()
    score_before = (await client.get(f"/v1/leads/{lead_id}/score")).json()

    r = await client.post(f"/v1/leads/{lead_id}/erase", json={"reason": "data subject request 2026-11-22"})
    assert r.status_code == 202, r.text
    assert (await client.post(f"/v1/leads/{lead_id}/erase", json={})).status_code == 409
    history = (await client.get(f"/v1/leads/{lead_id}/events", params={"include_raw": "true"})).json()["events"]
    assert [e["type"] for e in history] == ["lead.captured.v1", "lead.erased.v1"]
    data = history[0]["data"]
    assert {data[f] for f in ("email", "first_name", "last_name", "phone", "message")} == {"[erased]"}
    assert history[0]["raw"]["body"] == "[erased]" and "Kowalski" not in repr(history)

    async def marked() -> bool:
        return bool((await client.get(f"/v1/leads/{lead_id}/score")).json()["erased"])

    await eventually(marked)
    score_after = (await client.get(f"/v1/leads/{lead_id}/score")).json()
    assert score_after["fit"] == score_before["fit"]  # scored on what stays: the title, the e-mail's domain
    assert (await client.get("/v1/metrics/velocity", params=params)).json()["groups"] == before["groups"]
    report = await audit_stream(js, naming.events_stream)
    assert report.intact and report.events == 2
