"""Logs say what happened: every line of a request carries its id, every append its event id, subject and
sequence, and no secret is ever written."""

from __future__ import annotations

import pytest
import structlog
from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.conftest import ADMIN_KEY, FORM_KEY

pytestmark = pytest.mark.integration


async def test_request_ids_and_appends_are_logged_without_secrets(api: AsyncTestClient[Litestar]) -> None:
    with structlog.testing.capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        r = await api.post(
            "/v1/leads",
            json={"email": "a@example.com"},
            headers={"Authorization": f"Bearer {FORM_KEY}", "X-Request-Id": "req-abc-1"},
        )
        bad = await api.post("/v1/leads", json={"email": 5}, headers={"Authorization": f"Bearer {FORM_KEY}"})
    assert r.status_code == 202 and r.headers["x-request-id"] == "req-abc-1"
    appended = [e for e in logs if e["event"] == "event.appended"]
    assert len(appended) == 1
    line = appended[0]
    assert line["request_id"] == "req-abc-1" and line["credential"] == "website"
    assert line["event_id"] == r.json()["event_id"] and line["sequence"] == r.json()["sequence"]
    assert line["subject"].endswith("." + r.json()["aggregate_id"])
    rejected = [e for e in logs if e["event"] == "request.rejected"]
    assert rejected and rejected[0]["request_id"] == bad.headers["x-request-id"] and rejected[0]["status"] == 422
    text = repr(logs)
    assert FORM_KEY not in text and ADMIN_KEY not in text
