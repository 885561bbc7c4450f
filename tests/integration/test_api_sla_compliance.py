"""First-touch SLA compliance over HTTP: leads captured, assigned and touched through the API, measured by the
real compliance worker, read back per rep, team and source and as of a past date."""

from __future__ import annotations

import asyncio
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

# One working hour to the first touch; ana's team works in Warsaw, everyone else by the default UTC calendar.
RULES = """
[teams.inside]
members = ["ana"]
manager = "maria"
calendar = { timezone = "Europe/Warsaw" }
[sla]
version = 1
[[sla.policies]]
name = "speed"
kind = "first_touch"
within_minutes = 60
"""
NOVEMBER = {"period": "month", "date": "2025-11-15", "tz": "Europe/Warsaw"}


@pytest.fixture
async def compliance_api(
    nats_settings: NatsSettings, pg_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Client]:
    from services.api.app import create_app

    rules = tmp_path / "sales.toml"
    rules.write_text(RULES)
    monkeypatch.setenv("DEALSTREAM_RULES", str(rules))
    stop = asyncio.Event()
    worker = asyncio.create_task(serve_worker("compliance", "0/1", nats_settings, pg_dsn, stop=stop))
    app = create_app(Settings(nats=nats_settings, config=api_config(), database_url=pg_dsn))
    try:
        async with AsyncTestClient(app, raise_server_exceptions=False) as client:
            client.headers["Authorization"] = f"Bearer {ADMIN_KEY}"
            await wait_healthy(client)
            yield client
    finally:
        stop.set()
        await asyncio.wait_for(worker, 30)


async def _lead(client: Client, at: str, source: str | None = None) -> str:
    body = {"email": f"{at[11:13]}{source}@example.com", "occurred_at": at, **({"source": source} if source else {})}
    r = await client.post("/v1/leads", json=body)
    assert r.status_code == 202, r.text
    lead_id: str = r.json()["aggregate_id"]
    return lead_id


async def _post(client: Client, path: str, body: dict[str, Any]) -> None:
    r = await client.post(path, json=body)
    assert r.status_code == 202, r.text


async def _report(client: Client, **params: str) -> dict[str, Any]:
    r = await client.get("/v1/metrics/sla", params={**NOVEMBER, **params})
    assert r.status_code == 200, r.text
    report: dict[str, Any] = r.json()
    return report


def _counts(report: dict[str, Any]) -> dict[str | None, tuple[int, int, int, int]]:
    return {g["key"]: (g["met"], g["late"], g["breached"], g["within"]) for g in report["groups"]}


async def test_first_touch_compliance_per_rep_team_and_source_now_and_as_of_a_past_date(
    compliance_api: Client,
) -> None:
    client = compliance_api
    call = {"kind": "call", "direction": "outbound"}
    # Monday 3 November 2025. a: ana (Warsaw, 10:00 local) calls in 20 minutes: met.
    a = await _lead(client, "2025-11-03T09:00:00Z")
    await _post(client, f"/v1/leads/{a}/assign", {"owner": "ana", "occurred_at": "2025-11-03T09:01:00Z"})
    await _post(client, f"/v1/leads/{a}/touchpoints", {**call, "occurred_at": "2025-11-03T09:20:00Z"})
    # b, a referral: bob calls after two hours: late.
    b = await _lead(client, "2025-11-03T09:00:00Z", "referral")
    await _post(client, f"/v1/leads/{b}/assign", {"owner": "bob", "occurred_at": "2025-11-03T09:05:00Z"})
    await _post(client, f"/v1/leads/{b}/touchpoints", {**call, "occurred_at": "2025-11-03T11:00:00Z"})
    # c: captured at 16:30 UTC, half an hour before closing, and never touched: due Tuesday 09:30 UTC.
    await _lead(client, "2025-11-03T16:30:00Z")

    async def all_measured() -> bool:
        r = await client.get("/v1/metrics/sla", params=NOVEMBER)
        if r.status_code == 503:
            return False  # the worker has not created its tables yet
        [overall] = r.json()["groups"]
        return (overall["met"], overall["late"], overall["breached"]) == (1, 1, 1)

    await eventually(all_measured)
    [overall] = (await _report(client))["groups"]
    assert overall["leads"] == 3 and overall["on_time_rate"] == pytest.approx(1 / 3)
    assert (overall["median_wall_minutes"], overall["p90_wall_minutes"]) == (70, pytest.approx(110))
    # In business time too: 09:00-09:20 is working time in Warsaw, 09:00-11:00 in bob's default UTC calendar.
    assert overall["median_business_minutes"] == 70
    assert _counts(await _report(client, group="rep")) == {"ana": (1, 0, 0, 0), "bob": (0, 1, 0, 0), None: (0, 0, 1, 0)}
    assert _counts(await _report(client, group="team")) == {"inside": (1, 0, 0, 0), None: (0, 1, 1, 0)}
    assert _counts(await _report(client, group="source")) == {"referral": (0, 1, 0, 0), "web_form": (1, 0, 1, 0)}

    # As of 10:30 UTC b was still untouched past its deadline, and c not yet captured; at 17:00, c was within.
    assert _counts(await _report(client, as_of="2025-11-03T10:30:00Z")) == {None: (1, 0, 1, 0)}
    assert _counts(await _report(client, as_of="2025-11-03T17:00:00+00:00")) == {None: (1, 1, 0, 1)}

    for params, field in (
        ({"group": "pipeline"}, "group"),
        ({"tz": "Mars/Olympus"}, "tz"),
        ({"as_of": "2025-11-03T10:30:00"}, "as_of"),
        ({"from": "2025-11-01T00:00:00Z"}, "to"),
        ({"group_by": "rep"}, "group_by"),
    ):
        bad = await client.get("/v1/metrics/sla", params=params)
        assert bad.status_code == 422, (params, bad.text)
        assert field in bad.text, bad.text
