"""Limits, each answered with a 4xx that names the field and the reason: body size, string lengths, request
rate per credential (a token bucket per API key, and per webhook source)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from events.config import NatsSettings
from services.auth import RateLimiter
from services.config import Settings
from tests.conftest import ADMIN_KEY, FORM_KEY, TYPEFORM_SECRET, api_config, wait_healthy

pytestmark = pytest.mark.integration

Client = AsyncTestClient[Litestar]
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
FORM = {"Authorization": f"Bearer {FORM_KEY}"}


@pytest.mark.parametrize(
    ("path", "headers"),
    [("/v1/leads", FORM), ("/v1/deals", ADMIN), ("/v1/deals/d-1/touchpoints", ADMIN), ("/v1/webhooks/meta", {})],
)
async def test_a_body_over_max_body_bytes_is_a_413_on_body(api: Client, path: str, headers: dict[str, str]) -> None:
    body = b'{"name": "' + b"x" * (257 * 1024) + b'"}'
    r = await api.post(path, content=body, headers={**headers, "Content-Type": "application/json"})
    assert r.status_code == 413, r.text
    assert r.json()["error"] == "too_large" and r.json()["errors"][0]["field"] == "body"


LEAD = {"email": "ana@example.com"}


@pytest.mark.parametrize(
    ("extra", "field", "reason"),
    [
        ({"first_name": "x" * 201}, "first_name", "length <= 200"),
        ({"company": "x" * 201}, "company", "length <= 200"),
        ({"message": "x" * 10_001}, "message", "length <= 10000"),
        ({"email": "a" * 310 + "@example.com"}, "email", "length <= 254"),
        ({"answers": {"budget": "x" * 10_001}}, "answers.budget", "at most 10000 characters, got 10001"),
        ({"answers": {"q" * 201: "yes"}}, "answers", "a name is longer than 200 characters"),
        ({"campaign": {f"utm_{i}": "x" for i in range(101)}}, "campaign", "length <= 100"),
        ({"source_ref": "x" * 129}, "source_ref", "length <= 128"),
    ],
)
async def test_lead_strings_over_their_length_are_a_422_naming_the_field(
    api: Client, extra: dict[str, Any], field: str, reason: str
) -> None:
    r = await api.post("/v1/leads", json={**LEAD, **extra}, headers=FORM)
    assert r.status_code == 422, r.text
    [error] = r.json()["errors"]
    assert error["field"] == field and reason in error["reason"], error


async def test_lengths_at_the_limit_are_accepted(api: Client) -> None:
    lead = {**LEAD, "first_name": "x" * 200, "message": "m" * 10_000, "answers": {"q" * 200: "a" * 10_000}}
    r = await api.post("/v1/leads", json=lead, headers=FORM)
    assert r.status_code == 202, r.text


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/deals", {"name": "x" * 201, "pipeline_id": "p", "amount": "1", "currency": "EUR"}, "name"),
        ("/v1/deals/d-1/touchpoints", {"kind": "note", "direction": "internal", "notes": "x" * 10_001}, "notes"),
        ("/v1/deals/d-1/lost", {"reason": "x" * 201}, "reason"),
        ("/v1/leads/l-1/assign", {"owner": "x" * 201}, "owner"),
    ],
)
async def test_command_strings_over_their_length_are_a_422_naming_the_field(
    api: Client, path: str, body: dict[str, Any], field: str
) -> None:
    r = await api.post(path, json=body)
    assert r.status_code == 422, r.text
    assert [e["field"] for e in r.json()["errors"]] == [field]


@pytest.mark.parametrize("header", ["Idempotency-Key", "X-Correlation-Id"])
async def test_headers_kept_in_the_log_are_bounded(api: Client, header: str) -> None:
    r = await api.post("/v1/leads", json=LEAD, headers={**FORM, header: "k" * 201})
    assert r.status_code == 400, r.text
    assert r.json()["errors"] == [{"field": header, "reason": "must be 1 to 200 printable characters"}]


# --- request rate per credential -------------------------------------------------------------------------


@pytest.fixture
async def limited(nats_settings: NatsSettings) -> AsyncIterator[Client]:
    """The API with a burst of 3 and a refill so slow (one token in ~17 minutes) that none arrives in a test."""
    from services.api.app import create_app

    config = msgspec.structs.replace(api_config(), rate_per_second=0.001, rate_burst=3)
    async with AsyncTestClient(create_app(Settings(nats=nats_settings, config=config))) as client:
        await wait_healthy(client)
        yield client


async def test_over_its_burst_a_key_gets_429_with_retry_after_naming_its_limit(limited: Client) -> None:
    answers = [(await limited.get("/v1/deals/none", headers=ADMIN)).status_code for _ in range(3)]
    assert answers == [404, 404, 404]
    r = await limited.get("/v1/deals/none", headers=ADMIN)
    assert r.status_code == 429, r.text
    assert int(r.headers["retry-after"]) >= 1
    body = r.json()
    assert body["error"] == "rate_limited"
    assert body["message"] == "admin is over its limit of 0.001 requests per second (bursts of 3)"
    assert body["errors"] == [{"field": "credential", "reason": body["message"]}]
    # Per credential, not per client address: the form's key, from the same client, has its own bucket.
    assert (await limited.post("/v1/leads", json=LEAD, headers=FORM)).status_code == 202
    # A refused request takes no token, and writes nothing.
    assert (await limited.post("/v1/deals/d-1/lost", json={"reason": "x"}, headers=ADMIN)).status_code == 429


async def test_unknown_keys_do_not_drain_a_real_keys_bucket(limited: Client) -> None:
    for _ in range(5):
        assert (await limited.get("/v1/board", headers={"Authorization": "Bearer nope"})).status_code == 401
    assert (await limited.get("/v1/deals/none", headers=ADMIN)).status_code == 404


async def test_each_webhook_source_has_its_own_bucket(limited: Client) -> None:
    unsigned = {"Content-Type": "application/json"}
    answers = [
        (await limited.post("/v1/webhooks/typeform", content=b"{}", headers=unsigned)).status_code for _ in range(3)
    ]
    assert answers == [401, 401, 401]
    r = await limited.post("/v1/webhooks/typeform", content=b"{}", headers=unsigned)
    assert r.status_code == 429 and "webhook:typeform (unsigned) is over its limit" in r.json()["message"]
    assert (await limited.post("/v1/webhooks/webflow", content=b"{}", headers=unsigned)).status_code == 401


def _typeform_signed(body: bytes) -> dict[str, str]:
    digest = hmac.new(TYPEFORM_SECRET.encode(), body, hashlib.sha256).digest()
    return {"Content-Type": "application/json", "Typeform-Signature": "sha256=" + base64.b64encode(digest).decode()}


async def test_forged_webhooks_never_drain_the_real_providers_bucket(limited: Client, fixtures_dir: Path) -> None:
    forged = {"Content-Type": "application/json", "Typeform-Signature": "sha256=AAAA"}
    answers = [
        (await limited.post("/v1/webhooks/typeform", content=b"{}", headers=forged)).status_code for _ in range(5)
    ]
    assert answers == [401, 401, 401, 429, 429]
    body = (fixtures_dir / "typeform_form_response.json").read_bytes()
    signed = [
        (await limited.post("/v1/webhooks/typeform", content=body, headers=_typeform_signed(body))).status_code
        for _ in range(4)
    ]
    # The provider's retries of one response are its own three tokens, then 429 for the fourth.
    assert signed == [202, 202, 202, 429]


def test_the_bucket_refills_at_the_rate_up_to_the_burst() -> None:
    now = [100.0]
    limiter = RateLimiter(rate=2.0, burst=3, clock=lambda: now[0])
    assert [limiter.take("k") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("k") == pytest.approx(0.5)
    assert limiter.take("other") == 0.0
    now[0] += 0.5
    assert limiter.take("k") == 0.0
    assert limiter.take("k") == pytest.approx(0.5)
    now[0] += 3600
    assert [limiter.take("k") for _ in range(4)][-1] == pytest.approx(0.5)


def test_buckets_per_address_are_bounded_and_the_one_used_longest_ago_goes_first() -> None:
    now = [0.0]
    limiter = RateLimiter(rate=0.001, burst=1, clock=lambda: now[0], max_buckets=2)
    assert limiter.take("a") == 0.0 and limiter.take("b") == 0.0
    assert limiter.take("a") > 0  # "a" is now the most recently used
    assert limiter.wait("never-seen") == 0.0  # looking makes no bucket
    assert limiter.take("c") == 0.0  # a third address: "b", used longest ago, is dropped
    assert limiter.take("a") > 0 and limiter.take("c") > 0
    assert limiter.take("b") == 0.0  # "b" starts afresh
