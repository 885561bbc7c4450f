"""POST /v1/leads/batch against the real nats-server: all checked before any lands, retries land once."""

from __future__ import annotations

from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from events.ids import derived_id
from events.personal import Vault
from events.store import EventStore
from events.subjects import Naming
from tests.conftest import FORM_KEY, read_opened

pytestmark = pytest.mark.integration

Client = AsyncTestClient[Litestar]


async def _count(nats_conn: Any, naming: Naming) -> int:
    _, js = nats_conn
    return int((await js.stream_info(naming.events_stream)).state.messages)


def _leads(n: int) -> list[dict[str, Any]]:
    return [
        {"email": f"buyer{i}@example.com", "first_name": f"Ana {i}", "company": "Acme", "source_ref": f"crm-{i}"}
        for i in range(n)
    ]


async def test_a_batch_lands_every_lead_once_and_a_retry_adds_nothing(
    api: Client, store: EventStore, vault: Vault, nats_conn: Any, naming: Naming
) -> None:
    first = await api.post("/v1/leads/batch", json={"leads": _leads(5)})
    assert first.status_code == 202, first.text
    answers = first.json()
    assert [a["aggregate_id"] for a in answers] == [derived_id("web_form:admin", f"crm-{i}") for i in range(5)]
    assert not any(a["duplicate"] for a in answers)
    [lead] = await read_opened(store, vault, answers[3]["aggregate_id"])
    assert lead.envelope.data.email == "buyer3@example.com"  # type: ignore[union-attr]
    assert lead.envelope.raw is not None and '"crm-3"' in lead.envelope.raw.body

    again = await api.post("/v1/leads/batch", json={"leads": _leads(6)})
    assert again.status_code == 202
    assert [a["duplicate"] for a in again.json()] == [True] * 5 + [False]
    assert [a["event_id"] for a in again.json()[:5]] == [a["event_id"] for a in answers]
    assert await _count(nats_conn, naming) == 6


async def test_one_bad_lead_rejects_the_batch_naming_its_position_and_appends_nothing(
    api: Client, nats_conn: Any, naming: Naming
) -> None:
    leads = _leads(3)
    leads[1]["email"] = 42
    del leads[2]["source_ref"]
    r = await api.post("/v1/leads/batch", json={"leads": leads})
    assert r.status_code == 422, r.text
    fields = {e["field"]: e["reason"] for e in r.json()["errors"]}
    assert set(fields) == {"leads.1.email", "leads.2.source_ref"}
    assert "Idempotency-Key" in fields["leads.2.source_ref"]
    assert await _count(nats_conn, naming) == 0


async def test_without_source_refs_the_idempotency_key_makes_the_retry_a_no_op(
    api: Client, nats_conn: Any, naming: Naming
) -> None:
    leads = [{k: v for k, v in lead.items() if k != "source_ref"} for lead in _leads(3)]
    headers = {"Idempotency-Key": "import-2026-11-22"}
    first = await api.post("/v1/leads/batch", json={"leads": leads}, headers=headers)
    again = await api.post("/v1/leads/batch", json={"leads": leads}, headers=headers)
    assert first.status_code == again.status_code == 202
    assert [a["event_id"] for a in again.json()] == [a["event_id"] for a in first.json()]
    assert len({a["aggregate_id"] for a in first.json()}) == 3
    assert await _count(nats_conn, naming) == 3


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"leads": []}, "leads"),
        ({"leads": _leads(501)}, "leads"),
        ({"leads": _leads(1), "extra": 1}, "extra"),
        ({"lead": _leads(1)}, "lead"),
        ({}, "leads"),
        ({"leads": ["not an object"]}, "leads.0"),
        ({"leads": [{**_leads(1)[0], "occurred_at": "2099-01-01T00:00:00Z"}]}, "leads.0.occurred_at"),
    ],
)
async def test_bad_batches_are_422_naming_the_field(
    api: Client, nats_conn: Any, naming: Naming, body: dict[str, Any], field: str
) -> None:
    r = await api.post("/v1/leads/batch", json=body)
    assert r.status_code == 422, r.text
    assert [e["field"] for e in r.json()["errors"]] == [field]
    assert await _count(nats_conn, naming) == 0


async def test_a_form_key_in_the_query_cannot_send_a_batch(api: Client) -> None:
    r = await api.post(f"/v1/leads/batch?key={FORM_KEY}", json={"leads": _leads(1)}, headers={"Authorization": ""})
    assert r.status_code == 401
