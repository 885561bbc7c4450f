"""Authorization: what each credential may do, answered 403 with the scope it lacks before anything is read or
written; and no secret (key, webhook secret, Authorization header, ``?key=``) ever reaches the logs."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
import structlog
from litestar import Litestar
from litestar.testing import AsyncTestClient

from events.config import NatsSettings
from events.store import EventStore
from services.auth import hash_key
from services.config import ApiKey, Settings
from tests.conftest import (
    ADMIN_KEY,
    FORM_KEY,
    META_SECRET,
    META_VERIFY_TOKEN,
    TYPEFORM_SECRET,
    WEBFLOW_SECRET,
    api_config,
    wait_healthy,
)

pytestmark = pytest.mark.integration

Client = AsyncTestClient[Litestar]
VIEWER_KEY = "test-viewer-key-read-only"
REP_KEY = "test-rep-key-no-history"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
async def client(nats_settings: NatsSettings) -> AsyncIterator[Client]:
    """The conftest keys (admin: every scope; website: leads:capture only) plus a read-only viewer and a rep who
    may write and read the board but not history."""
    from services.api.app import create_app

    base = api_config()
    keys = [
        *base.api_keys,
        ApiKey("viewer", hash_key(VIEWER_KEY), ["read"]),
        ApiKey("rep", hash_key(REP_KEY), ["read", "leads:write", "deals:write"]),
    ]
    config = msgspec.structs.replace(base, api_keys=keys)
    async with AsyncTestClient(create_app(Settings(nats=nats_settings, config=config))) as c:
        await wait_healthy(c)
        yield c


PIPELINE = {"name": "Sales", "stages": [{"id": "new", "name": "New", "probability": 0.1}]}
DEAL = {"deal_id": "acme", "name": "Acme", "pipeline_id": "sales", "amount": "100", "currency": "EUR"}
TOUCH = {"kind": "call", "direction": "outbound"}


async def _deal(client: Client) -> None:
    assert (await client.put("/v1/pipelines/sales", json=PIPELINE, headers=bearer(ADMIN_KEY))).status_code == 202
    assert (await client.post("/v1/deals", json=DEAL, headers=bearer(ADMIN_KEY))).status_code == 202


def assert_forbidden(r: Any, credential: str, scope: str) -> None:
    assert r.status_code == 403, r.text
    body = r.json()
    assert body["error"] == "forbidden"
    assert body["message"] == f"credential {credential!r} lacks scope {scope!r}"


@pytest.mark.parametrize(
    ("method", "path", "body", "scope"),
    [
        ("POST", "/v1/deals/acme/stage", {"to_stage": "new"}, "deals:write"),
        ("POST", "/v1/deals/acme/touchpoints", TOUCH, "deals:write"),
        ("POST", "/v1/leads/lead-1/touchpoints", TOUCH, "leads:write"),
        ("POST", "/v1/deals", DEAL, "deals:write"),
        ("PUT", "/v1/pipelines/sales", PIPELINE, "pipelines:write"),
        ("GET", "/v1/deals/acme/events", None, "history:read"),
        ("GET", "/v1/leads/lead-1/events?include_raw=true", None, "history:read"),
        ("GET", "/v1/deals/acme", None, "history:read"),
        ("GET", "/v1/board", None, "read"),
        ("GET", "/v1/alerts", None, "read"),
        ("GET", "/v1/leads?order=score", None, "read"),
    ],
)
async def test_a_web_forms_key_may_only_capture(
    client: Client, store: EventStore, method: str, path: str, body: Any, scope: str
) -> None:
    await _deal(client)
    version = await store.version("deal", "acme")
    headers = {**bearer(FORM_KEY), "If-Match": f'"{version}"'}
    assert_forbidden(await client.request(method, path, json=body, headers=headers), "website", scope)
    # Also with the key where a form sends it, and refused before anything is written.
    r = await client.request(method, f"{path}{'&' if '?' in path else '?'}key={FORM_KEY}", json=body)
    assert r.status_code == 401, r.text
    assert await store.version("deal", "acme") == version
    assert (
        await client.post("/v1/leads", json={"email": "a@example.com"}, headers=bearer(FORM_KEY))
    ).status_code == 202


@pytest.mark.parametrize(
    ("method", "path", "body", "scope"),
    [
        ("POST", "/v1/leads", {"email": "a@example.com"}, "leads:capture"),
        ("POST", "/v1/leads/batch", {"leads": [{"source_ref": "r", "email": "a@example.com"}]}, "leads:capture"),
        ("POST", "/v1/deals", DEAL, "deals:write"),
        ("POST", "/v1/deals/acme/lost", {"reason": "price"}, "deals:write"),
        ("POST", "/v1/leads/lead-1/assign", {"owner": "ana"}, "leads:write"),
        ("PUT", "/v1/pipelines/sales", PIPELINE, "pipelines:write"),
    ],
)
async def test_a_read_only_token_cannot_write(
    client: Client, store: EventStore, method: str, path: str, body: Any, scope: str
) -> None:
    await _deal(client)
    version = await store.version("deal", "acme")
    assert_forbidden(await client.request(method, path, json=body, headers=bearer(VIEWER_KEY)), "viewer", scope)
    assert await store.version("deal", "acme") == version


@pytest.mark.parametrize(
    "path", ["/v1/deals/acme/events", "/v1/deals/acme/events?include_raw=true", "/v1/deals/acme", "/v1/leads/x/events"]
)
async def test_without_history_read_no_history_and_no_raw_payloads(client: Client, path: str) -> None:
    await _deal(client)
    assert_forbidden(await client.get(path, headers=bearer(REP_KEY)), "rep", "history:read")
    # What the rep's scopes do allow, it may do.
    r = await client.post("/v1/deals/acme/touchpoints", json=TOUCH, headers=bearer(REP_KEY))
    assert r.status_code == 202, r.text
    assert (await client.get(path, headers=bearer(ADMIN_KEY))).status_code in (200, 404)


async def test_only_capture_only_keys_may_travel_in_the_query_string(client: Client) -> None:
    r = await client.post(f"/v1/leads?key={ADMIN_KEY}", json={"email": "a@example.com"})
    assert r.status_code == 401
    assert "only capture-only keys" in r.json()["message"]
    r = await client.post(f"/v1/leads?key={FORM_KEY}", json={"email": "a@example.com"})
    assert r.status_code == 202, r.text


# --- no secret in the logs ---------------------------------------------------------------------------------

GUESSED_KEY = "dsk_guessed-but-maybe-someone-elses-real-key"


def _typeform_signature(body: bytes) -> str:
    digest = hmac.new(TYPEFORM_SECRET.encode(), body, hashlib.sha256).digest()
    return "sha256=" + base64.b64encode(digest).decode()


async def test_no_secret_reaches_the_logs(client: Client, fixtures_dir: Any) -> None:
    meta_body = (fixtures_dir / "meta_leadgen_webhook.json").read_bytes()
    meta_signature = "sha256=" + hmac.new(META_SECRET.encode(), meta_body, hashlib.sha256).hexdigest()
    typeform_body = (fixtures_dir / "typeform_form_response.json").read_bytes()
    webflow_body = (fixtures_dir / "webflow_form_submission.json").read_bytes()
    stamp = str(int(time.time() * 1000))
    webflow_signature = hmac.new(WEBFLOW_SECRET.encode(), f"{stamp}:".encode() + webflow_body, hashlib.sha256)
    lead = {"email": "a@example.com"}
    with structlog.testing.capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        await client.post("/v1/leads", json=lead, headers=bearer(ADMIN_KEY))
        await client.post("/v1/leads", json=lead, headers={"X-Api-Key": ADMIN_KEY})
        await client.post(f"/v1/leads?key={FORM_KEY}", json=lead)
        await client.post(f"/v1/leads?key={ADMIN_KEY}", json=lead)  # refused: not a capture-only key
        await client.post(f"/v1/leads?key={GUESSED_KEY}", json=lead)
        await client.get("/v1/board", headers=bearer(GUESSED_KEY))
        await client.get("/v1/board", headers=bearer(FORM_KEY))  # 403
        await client.post("/v1/leads", json={"email": 5}, headers=bearer(FORM_KEY))  # 422
        await client.post("/v1/leads", content=b"\xff", headers={**bearer(FORM_KEY), "Content-Type": "text/x"})
        await client.post(f"/v1/deals?key={ADMIN_KEY}", json=DEAL, headers=bearer(ADMIN_KEY))
        await client.get(
            "/v1/webhooks/meta",
            params={"hub.mode": "subscribe", "hub.challenge": "7", "hub.verify_token": META_VERIFY_TOKEN},
        )
        await client.get(
            "/v1/webhooks/meta", params={"hub.mode": "subscribe", "hub.challenge": "7", "hub.verify_token": GUESSED_KEY}
        )
        await client.post("/v1/webhooks/meta", content=meta_body, headers={"X-Hub-Signature-256": meta_signature})
        await client.post("/v1/webhooks/meta", content=b"{}", headers={"X-Hub-Signature-256": meta_signature})
        await client.post(
            "/v1/webhooks/typeform",
            content=typeform_body,
            headers={"Typeform-Signature": _typeform_signature(typeform_body)},
        )
        await client.post(
            "/v1/webhooks/webflow",
            content=webflow_body,
            headers={"x-webflow-timestamp": stamp, "x-webflow-signature": webflow_signature.hexdigest()},
        )
        await client.post(
            "/v1/webhooks/webflow",
            content=webflow_body,
            headers={"x-webflow-timestamp": "1", "x-webflow-signature": webflow_signature.hexdigest()},
        )
    answered = {(e["method"], e["path"], e["status"]) for e in logs if e["event"] == "request"}
    # The secrets were used, not just sent: each signed webhook went through to the log, each wrong one was refused.
    assert {
        ("GET", "/v1/webhooks/meta", 200),
        ("GET", "/v1/webhooks/meta", 403),
        ("POST", "/v1/webhooks/meta", 200),
        ("POST", "/v1/webhooks/typeform", 202),
        ("POST", "/v1/webhooks/webflow", 202),
        ("POST", "/v1/webhooks/webflow", 401),
        ("POST", "/v1/leads", 202),
        ("POST", "/v1/leads", 401),
        ("GET", "/v1/board", 403),
    } <= answered, answered
    text = repr(logs)
    assert any(e["event"] == "event.appended" for e in logs) and any(e["event"] == "request.rejected" for e in logs)
    secrets = {
        "admin key": ADMIN_KEY,
        "form key": FORM_KEY,
        "guessed key": GUESSED_KEY,
        "Meta app secret": META_SECRET,
        "Meta verify token": META_VERIFY_TOKEN,
        "Typeform secret": TYPEFORM_SECRET,
        "Webflow secret": WEBFLOW_SECRET,
        "Meta signature": meta_signature.removeprefix("sha256="),
        "Typeform signature": _typeform_signature(typeform_body).removeprefix("sha256="),
        "Webflow signature": webflow_signature.hexdigest(),
    }
    leaked = [name for name, secret in secrets.items() if secret in text]
    assert not leaked, leaked
