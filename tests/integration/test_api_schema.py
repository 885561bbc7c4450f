"""The event schema a team writes its own consumer against."""

from __future__ import annotations

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from events.types import EVENT_TYPES

pytestmark = pytest.mark.integration


async def test_the_event_schema_covers_the_envelope_and_every_event_type(api: AsyncTestClient[Litestar]) -> None:
    r = await api.get("/v1/schemas/events.json", headers={"Authorization": ""})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/schema+json")
    schema = r.json()
    assert schema["$ref"] == "#/$defs/Envelope"
    defs = schema["$defs"]
    assert {t.__name__ for t in EVENT_TYPES} <= set(defs)
    assert defs["AlertRaised"]["properties"]["type"]["enum"] == ["alert.raised.v1"]
    assert set(defs["Envelope"]["required"]) >= {"event_id", "aggregate_type", "occurred_at", "recorded_at", "data"}
