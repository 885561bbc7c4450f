"""With nats-server down the API answers 503 fast and writes nothing; retried after it returns, nothing is lost
or doubled."""

from __future__ import annotations

from pathlib import Path

import pytest
from litestar.testing import AsyncTestClient

from devstack.servers import NatsServer
from events.config import NatsSettings, connect
from events.streams import StreamSettings, ensure_streams
from events.subjects import Naming
from services.config import Settings
from tests.conftest import ADMIN_KEY, FORM_KEY, api_config, wait_healthy
from tests.waiting import eventually

pytestmark = pytest.mark.integration


async def test_503_while_nats_is_down_and_a_retry_lands_once(tmp_path: Path, naming: Naming) -> None:
    from services.api.app import create_app

    server = NatsServer(tmp_path / "nats", name="outage").start()
    settings = NatsSettings(servers=(server.url,), naming=naming, streams=StreamSettings(), publish_timeout=1.0)
    nc, js = await connect(settings, "test-admin")
    await ensure_streams(js, naming, settings.streams)
    await nc.close()
    app = create_app(Settings(nats=settings, config=api_config()))
    lead = {"email": "marta@example.pl", "last_name": "Kowalska"}
    headers = {"Authorization": f"Bearer {FORM_KEY}", "Idempotency-Key": "outage-1"}
    try:
        async with AsyncTestClient(app, raise_server_exceptions=False) as client:
            await wait_healthy(client)
            server.kill()

            async def unhealthy() -> bool:
                return (await client.get("/v1/health")).status_code == 503

            await eventually(unhealthy)
            r = await client.post("/v1/leads", json=lead, headers=headers)
            assert r.status_code == 503, r.text
            assert r.headers["retry-after"] == "2"
            assert r.json()["error"] == "unavailable"

            server.start()  # same port, same store directory
            await wait_healthy(client, within=30)
            first = await client.post("/v1/leads", json=lead, headers=headers)
            again = await client.post("/v1/leads", json=lead, headers=headers)
            assert first.status_code == again.status_code == 202, first.text
            assert again.json()["event_id"] == first.json()["event_id"]
            history = await client.get(
                f"/v1/leads/{first.json()['aggregate_id']}/events", headers={"Authorization": f"Bearer {ADMIN_KEY}"}
            )
            assert [e["event_id"] for e in history.json()["events"]] == [first.json()["event_id"]]
    finally:
        server.stop()
