"""Lead capture over HTTP against the real nats-server: forms, Meta, Typeform, Webflow; retries; bad input."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from events.ids import derived_id
from events.personal import Vault
from events.store import EventStore
from events.subjects import Naming
from tests.conftest import FORM_KEY, META_SECRET, META_VERIFY_TOKEN, TYPEFORM_SECRET, WEBFLOW_SECRET, read_opened

pytestmark = pytest.mark.integration

Client = AsyncTestClient[Litestar]
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


async def _count(nats_conn: Any, naming: Naming) -> int:
    _, js = nats_conn
    return int((await js.stream_info(naming.events_stream)).state.messages)


def _meta_signature(body: bytes, secret: str = META_SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def test_an_html_form_lead_lands_with_its_diacritics_and_provenance(
    api: Client, store: EventStore, vault: Vault, fixtures_dir: Path
) -> None:
    body = (fixtures_dir / "html_form.urlencoded").read_bytes()
    r = await api.post(f"/v1/leads?key={FORM_KEY}", content=body, headers={**FORM, "Authorization": ""})
    assert r.status_code == 202, r.text
    answer = r.json()
    [sealed] = await store.read("lead", answer["aggregate_id"])
    # The log itself holds what the form sent and the raw body only encrypted with the lead's key, even the
    # e-mail's domain (a person's own domain names them).
    assert "Kowalska" not in repr(sealed) and "example.pl" not in repr(sealed)
    [stored] = await read_opened(store, vault, answer["aggregate_id"])
    assert stored.sequence == answer["sequence"] and stored.envelope.event_id == answer["event_id"]
    lead = stored.envelope.data
    assert lead.last_name == "Kowalska" and lead.message == "Proszę o kontakt w sprawie wyceny"  # type: ignore[union-attr]
    assert stored.envelope.source == "web_form" and stored.envelope.actor == "website"
    assert stored.envelope.raw is not None and stored.envelope.raw.body == body.decode()


async def test_a_json_form_lead_retried_with_its_idempotency_key_is_one_lead(
    api: Client, store: EventStore, nats_conn: Any, naming: Naming
) -> None:
    lead = {"email": "laura@example.com", "first_name": "Laura", "company": "Example"}
    headers = {"Idempotency-Key": "form-submit-7", "Authorization": f"Bearer {FORM_KEY}"}
    first = await api.post("/v1/leads", json=lead, headers=headers)
    again = await api.post("/v1/leads", json=lead, headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.json()["event_id"] == first.json()["event_id"] and again.json()["duplicate"] is True
    assert await _count(nats_conn, naming) == 1


async def test_a_form_key_in_the_header_cannot_move_deals_and_an_admin_key_cannot_go_in_the_query(
    api: Client,
) -> None:
    r = await api.post("/v1/leads?key=test-admin-key", json={"email": "a@b.co"}, headers={"Authorization": ""})
    assert r.status_code == 401


async def test_meta_handshake(api: Client) -> None:
    params = {"hub.mode": "subscribe", "hub.challenge": "1158201444", "hub.verify_token": META_VERIFY_TOKEN}
    r = await api.get("/v1/webhooks/meta", params=params)
    assert r.status_code == 200 and r.text == "1158201444"
    r = await api.get("/v1/webhooks/meta", params={**params, "hub.verify_token": "wrong"})
    assert r.status_code in (401, 403)


async def test_a_meta_batch_lands_with_business_time_and_redelivery_adds_nothing(
    api: Client, store: EventStore, vault: Vault, nats_conn: Any, naming: Naming, fixtures_dir: Path
) -> None:
    body = (fixtures_dir / "meta_leadgen_webhook.json").read_bytes()
    headers = {"Content-Type": "application/json", "X-Hub-Signature-256": _meta_signature(body)}
    r = await api.post("/v1/webhooks/meta", content=body, headers=headers)
    assert r.status_code == 200, r.text
    assert len(r.json()) == 2
    [stored] = await read_opened(store, vault, derived_id("meta", "5545971704561545"))
    assert stored.envelope.occurred_at.isoformat() == "2025-11-22T11:59:50+00:00"  # created_time 1763812790
    assert stored.envelope.recorded_at > stored.envelope.occurred_at
    assert stored.envelope.source == "meta"
    assert stored.envelope.data.source_ref == "5545971704561545"  # type: ignore[union-attr]
    assert stored.envelope.raw is not None
    assert stored.envelope.raw.batch_sha256 == hashlib.sha256(body).hexdigest()

    again = await api.post("/v1/webhooks/meta", content=body, headers=headers)
    assert again.status_code == 200
    assert [a["event_id"] for a in again.json()] == [a["event_id"] for a in r.json()]
    assert await _count(nats_conn, naming) == 2


async def test_a_bad_meta_signature_is_401_and_appends_nothing(
    api: Client, nats_conn: Any, naming: Naming, fixtures_dir: Path
) -> None:
    body = (fixtures_dir / "meta_leadgen_webhook.json").read_bytes()
    for signature in (None, "sha256=00", _meta_signature(body, "other-secret"), "md5=abc"):
        headers = {"Content-Type": "application/json"}
        if signature is not None:
            headers["X-Hub-Signature-256"] = signature
        r = await api.post("/v1/webhooks/meta", content=body, headers=headers)
        assert r.status_code == 401, (signature, r.text)
    assert await _count(nats_conn, naming) == 0


async def test_typeform_and_webflow_map_to_the_same_lead_event(
    api: Client, store: EventStore, vault: Vault, fixtures_dir: Path
) -> None:
    tf = (fixtures_dir / "typeform_form_response.json").read_bytes()
    tf_sig = "sha256=" + base64.b64encode(hmac.new(TYPEFORM_SECRET.encode(), tf, hashlib.sha256).digest()).decode()
    r = await api.post("/v1/webhooks/typeform", content=tf, headers={"Typeform-Signature": tf_sig})
    assert r.status_code == 202, r.text
    [typeform] = await read_opened(store, vault, derived_id("typeform", "a3a12ec67a1365927098a606107fac15"))
    assert typeform.envelope.data.email == "laura@example.com"  # type: ignore[union-attr]
    assert typeform.envelope.occurred_at.isoformat() == "2025-11-22T18:17:02+00:00"

    wf = (fixtures_dir / "webflow_form_submission.json").read_bytes()
    ts = str(int(time.time() * 1000))
    wf_sig = hmac.new(WEBFLOW_SECRET.encode(), f"{ts}:".encode() + wf, hashlib.sha256).hexdigest()
    r = await api.post(
        "/v1/webhooks/webflow", content=wf, headers={"x-webflow-timestamp": ts, "x-webflow-signature": wf_sig}
    )
    assert r.status_code == 202, r.text
    [webflow] = await read_opened(store, vault, derived_id("webflow", "6321ca84df3949bfc6752327"))
    assert webflow.envelope.data.email == "zaphod@heartofgold.ai"  # type: ignore[union-attr]
    assert webflow.envelope.occurred_at.isoformat() == "2025-11-22T16:00:00+00:00"

    old = str(int(time.time() * 1000) - 10 * 60 * 1000)
    old_sig = hmac.new(WEBFLOW_SECRET.encode(), f"{old}:".encode() + wf, hashlib.sha256).hexdigest()
    r = await api.post(
        "/v1/webhooks/webflow", content=wf, headers={"x-webflow-timestamp": old, "x-webflow-signature": old_sig}
    )
    assert r.status_code == 401


@pytest.mark.parametrize(
    ("body", "headers", "status", "field"),
    [
        (json.dumps({"email": "not-an-email"}), {"Content-Type": "application/json"}, 422, "email"),
        (json.dumps({"email": 42}), {"Content-Type": "application/json"}, 422, "email"),
        ("{", {"Content-Type": "application/json"}, 400, "body"),
        ("email=a%40b.co", {"Content-Type": "text/plain"}, 415, "Content-Type"),
        ("x" * (300 * 1024), FORM, 413, "body"),
    ],
)
async def test_bad_leads_get_their_4xx_with_the_field_and_append_nothing(
    api: Client, nats_conn: Any, naming: Naming, body: str, headers: dict[str, str], status: int, field: str
) -> None:
    r = await api.post("/v1/leads", content=body.encode(), headers=headers)
    assert r.status_code == status, r.text
    assert field in [e["field"] for e in r.json()["errors"]], r.text
    assert "Traceback" not in r.text
    assert await _count(nats_conn, naming) == 0
