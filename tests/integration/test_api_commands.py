"""Commands over HTTP against the real nats-server: answers, versions, conflicts, idempotency, errors."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from events.store import EventStore
from events.subjects import Naming

pytestmark = pytest.mark.integration

Client = AsyncTestClient[Litestar]

PIPELINE = {
    "name": "New business",
    "stages": [
        {"id": "qualified", "name": "Qualified", "probability": 0.1, "rotting_days": 14},
        {"id": "proposal", "name": "Proposal", "probability": 0.5, "rotting_days": 7},
        {"id": "negotiation", "name": "Negotiation", "probability": 0.8},
    ],
}


async def _deal(api: Client, deal_id: str = "acme-1") -> dict[str, Any]:
    assert (await api.put("/v1/pipelines/default", json=PIPELINE)).status_code == 202
    r = await api.post(
        "/v1/deals",
        json={
            "deal_id": deal_id,
            "name": "Acme renewal",
            "pipeline_id": "default",
            "amount": "12500.00",
            "currency": "EUR",
            "owner": "rep-ana",
        },
    )
    assert r.status_code == 202, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_open_and_move_a_deal_answers_202_with_the_sequence_and_the_version(
    api: Client, store: EventStore
) -> None:
    opened = await _deal(api)
    assert opened["type"] == "deal.opened.v1" and opened["sequence"] == opened["version"] > 0
    r = await api.post(
        "/v1/deals/acme-1/stage", json={"to_stage": "proposal"}, headers={"If-Match": f'"{opened["version"]}"'}
    )
    assert r.status_code == 202, r.text
    moved = r.json()
    assert r.headers["etag"] == f'"{moved["version"]}"'
    history = await store.read("deal", "acme-1")
    assert [h.sequence for h in history] == [opened["sequence"], moved["sequence"]]
    assert history[1].envelope.data.from_stage == "qualified"  # type: ignore[union-attr]
    assert history[1].envelope.actor == "admin"


async def test_a_stale_if_match_gets_409_with_the_current_version(api: Client, store: EventStore) -> None:
    opened = await _deal(api)
    first = await api.post(
        "/v1/deals/acme-1/stage", json={"to_stage": "proposal"}, headers={"If-Match": str(opened["version"])}
    )
    stale = await api.post(
        "/v1/deals/acme-1/stage", json={"to_stage": "negotiation"}, headers={"If-Match": str(opened["version"])}
    )
    assert stale.status_code == 409
    assert stale.json()["current_version"] == first.json()["version"]
    assert len(await store.read("deal", "acme-1")) == 2


async def test_a_stage_move_without_if_match_is_428(api: Client) -> None:
    await _deal(api)
    r = await api.post("/v1/deals/acme-1/stage", json={"to_stage": "proposal"})
    assert r.status_code == 428 and r.json()["errors"][0]["field"] == "If-Match"


async def test_of_concurrent_stage_moves_on_one_deal_exactly_one_wins(api: Client, store: EventStore) -> None:
    opened = await _deal(api)
    moves = [
        api.post("/v1/deals/acme-1/stage", json={"to_stage": stage}, headers={"If-Match": str(opened["version"])})
        for stage in ("proposal", "negotiation") * 4
    ]
    codes = sorted(r.status_code for r in await asyncio.gather(*moves))
    assert codes == [202] + [409] * 7
    assert len(await store.read("deal", "acme-1")) == 2


async def test_a_retried_command_with_the_same_idempotency_key_appends_once(api: Client, store: EventStore) -> None:
    await _deal(api)
    touch = {"kind": "call", "direction": "outbound", "outcome": "connected"}
    first = await api.post("/v1/deals/acme-1/touchpoints", json=touch, headers={"Idempotency-Key": "call-42"})
    again = await api.post("/v1/deals/acme-1/touchpoints", json=touch, headers={"Idempotency-Key": "call-42"})
    assert first.status_code == again.status_code == 202
    assert again.json()["event_id"] == first.json()["event_id"] and again.json()["duplicate"] is True
    assert len(await store.read("deal", "acme-1")) == 2


async def test_a_retried_open_deal_without_an_id_opens_one_deal(api: Client, store: EventStore) -> None:
    assert (await api.put("/v1/pipelines/default", json=PIPELINE)).status_code == 202
    body = {"name": "Beta", "pipeline_id": "default", "amount": 10, "currency": "USD"}
    first = await api.post("/v1/deals", json=body, headers={"Idempotency-Key": "open-beta"})
    again = await api.post("/v1/deals", json=body, headers={"Idempotency-Key": "open-beta"})
    assert first.json()["aggregate_id"] == again.json()["aggregate_id"]
    assert again.json()["duplicate"] is True
    assert len(await store.read("deal", first.json()["aggregate_id"])) == 1


@pytest.mark.parametrize(
    ("body", "field", "status"),
    [
        ({"name": "X", "pipeline_id": "default", "amount": "12", "currency": "euro"}, "currency", 422),
        ({"name": "X", "pipeline_id": "default", "currency": "EUR"}, "amount", 422),
        ({"name": 5, "pipeline_id": "default", "amount": 1, "currency": "EUR"}, "name", 422),
        ({"name": "X", "pipeline_id": "default", "amount": "-1", "currency": "EUR"}, "amount", 422),
        ({"name": "X", "pipeline_id": "nope", "amount": 1, "currency": "EUR"}, "pipeline_id", 422),
        ({"name": "X", "pipeline_id": "default", "amount": 1, "currency": "EUR", "stage": "zzz"}, "stage", 422),
        (
            {
                "name": "X",
                "pipeline_id": "default",
                "amount": 1,
                "currency": "EUR",
                "occurred_at": "2025-01-01T10:00:00",
            },
            "occurred_at",
            422,
        ),
    ],
)
async def test_bad_input_names_the_field_and_appends_nothing(
    api: Client, nats_conn: Any, naming: Naming, body: dict[str, Any], field: str, status: int
) -> None:
    assert (await api.put("/v1/pipelines/default", json=PIPELINE)).status_code == 202
    _, js = nats_conn
    before = (await js.stream_info(naming.events_stream)).state.messages
    r = await api.post("/v1/deals", json=body)
    assert r.status_code == status, r.text
    assert field in [e["field"].split(".")[0] for e in r.json()["errors"]], r.text
    assert "Traceback" not in r.text
    assert (await js.stream_info(naming.events_stream)).state.messages == before


async def test_unreadable_json_is_400(api: Client) -> None:
    r = await api.post("/v1/deals", content=b'{"name": ', headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "body"


async def test_missing_and_wrong_credentials_are_401_and_wrong_scope_403(api: Client) -> None:
    from tests.conftest import FORM_KEY

    r = await api.post("/v1/deals", json={}, headers={"Authorization": ""})
    assert r.status_code == 401
    r = await api.post("/v1/deals", json={}, headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401
    r = await api.post(
        "/v1/deals/acme-1/stage",
        json={"to_stage": "x"},
        headers={"Authorization": f"Bearer {FORM_KEY}", "If-Match": "1"},
    )
    assert r.status_code == 403
    r = await api.get("/v1/deals/acme-1/events", headers={"Authorization": f"Bearer {FORM_KEY}"})
    assert r.status_code == 403


async def test_closed_deals_refuse_changes_and_history_reads_in_order(api: Client) -> None:
    opened = await _deal(api)
    assert (await api.post("/v1/deals/acme-1/won", json={})).status_code == 202
    r = await api.post("/v1/deals/acme-1/lost", json={"reason": "price"})
    assert r.status_code == 409 and r.json()["errors"][0]["field"] == "status"
    history = (await api.get("/v1/deals/acme-1/events")).json()
    assert [e["type"] for e in history["events"]] == ["deal.opened.v1", "deal.won.v1"]
    assert history["events"][0]["sequence"] == opened["sequence"]
    assert history["events"][1]["data"]["amount"] == "12500.00"
    assert (await api.get("/v1/deals/nope/events")).status_code == 404


async def test_tasks_and_business_time(api: Client, store: EventStore) -> None:
    await _deal(api)
    r = await api.post(
        "/v1/deals/acme-1/tasks",
        json={
            "task_id": "t1",
            "title": "Send proposal",
            "due_at": "2025-11-24T09:00:00+01:00",
            "occurred_at": "2025-11-22T12:39:50Z",
        },
    )
    assert r.status_code == 202, r.text
    assert r.json()["occurred_at"] == "2025-11-22T12:39:50Z"
    assert (await api.post("/v1/deals/acme-1/tasks/t1/complete", json={})).status_code == 202
    again = await api.post("/v1/deals/acme-1/tasks/t1/complete", json={})
    assert again.status_code == 409
    assert (await api.post("/v1/deals/acme-1/tasks/zz/complete", json={})).status_code == 404
    history = await store.read("deal", "acme-1")
    assert history[1].envelope.data.due_at.isoformat() == "2025-11-24T08:00:00+00:00"  # type: ignore[union-attr]


async def test_openapi_document_is_served(api: Client) -> None:
    r = await api.get("/v1/openapi/openapi.json")
    assert r.status_code == 200
    paths = r.json()["paths"]
    assert "/v1/deals/{deal_id}/stage" in paths and "/v1/webhooks/meta" in paths


async def test_a_deal_as_it_stood_at_past_moments(api: Client) -> None:
    assert (await api.put("/v1/pipelines/default", json=PIPELINE)).status_code == 202
    body = {"deal_id": "hist-1", "name": "Hist", "pipeline_id": "default", "amount": "100", "currency": "EUR"}
    r = await api.post("/v1/deals", json={**body, "occurred_at": "2026-01-10T09:00:00+01:00"})
    assert r.status_code == 202, r.text
    r = await api.post(
        "/v1/deals/hist-1/stage",
        json={"to_stage": "proposal", "occurred_at": "2026-02-01T09:00:00+01:00"},
        headers={"If-Match": f'"{r.json()["version"]}"'},
    )
    assert r.status_code == 202, r.text
    expectations = [
        ("2026-01-09T23:59:59+01:00", None),
        ("2026-01-31T23:59:59+01:00", "qualified"),
        ("2026-02-01T09:00:00+01:00", "proposal"),
    ]
    for as_of, stage in expectations:
        r = await api.get("/v1/deals/hist-1", params={"as_of": as_of})
        if stage is None:
            assert r.status_code == 404
        else:
            assert r.status_code == 200 and r.json()["stage"] == stage and "etag" not in r.headers
    assert (await api.get("/v1/deals/hist-1", params={"as_of": "2026-01-31T23:59:59"})).status_code == 422
