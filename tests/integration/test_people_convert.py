"""People and organisations end to end: a qualified lead converted over HTTP into its organisation, contact and deal
against the real servers, with the people and board workers running; retries, erasure, the board's flag, 4xx."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from nats.js import JetStreamContext

from events.audit import scan
from events.config import NatsSettings
from events.subjects import Naming
from projections.people_rules import NO_PEOPLE_RULES, PeopleRules, people_rules_from_toml
from projections.people_store import PeopleProjection
from services.config import Settings
from tests.conftest import ADMIN_KEY, api_config, wait_healthy
from tests.waiting import eventually
from workers.rebuild import verify
from workers.registry import serve_worker

pytestmark = pytest.mark.integration

Client = AsyncTestClient[Litestar]
PIPELINE = {
    "name": "New business",
    "stages": [
        {"id": "qualified", "name": "Qualified", "probability": 0.1},
        {"id": "discovery", "name": "Discovery", "probability": 0.3},
        {"id": "proposal", "name": "Proposal", "probability": 0.6},
        {"id": "negotiation", "name": "Negotiation", "probability": 0.8},
    ],
}
LEAD = {
    "email": "anna.nowak@acme.example",
    "first_name": "Anna",
    "last_name": "Nowak",
    "phone": "+48 600 300 400",
    "company": "Acme Sp. z o.o.",
    "job_title": "CFO",
    "occurred_at": "2026-11-02T10:00:00+01:00",
}
CONVERT = {"pipeline_id": "sales", "amount": "12000", "currency": "PLN", "domain": "acme.example"}


@pytest.fixture
async def client(nats_settings: NatsSettings, pg_dsn: str) -> AsyncIterator[Client]:
    async with _client(nats_settings, pg_dsn, NO_PEOPLE_RULES) as c:
        yield c


@pytest.fixture
async def ruled_client(nats_settings: NatsSettings, pg_dsn: str) -> AsyncIterator[Client]:
    """The API with a rules file naming discovery (the 2nd of 4 stages) the late stage of pipeline sales."""
    async with _client(
        nats_settings, pg_dsn, people_rules_from_toml('[people]\nlate_stages = {sales = ["discovery"]}')
    ) as c:
        yield c


@contextlib.asynccontextmanager
async def _client(nats_settings: NatsSettings, pg_dsn: str, rules: PeopleRules) -> AsyncIterator[Client]:
    from services.api.app import create_app

    stop = asyncio.Event()
    workers = [
        asyncio.create_task(serve_worker(name, "0/1", nats_settings, pg_dsn, stop=stop, instance=""))
        for name in ("board", "people")
    ]
    app = create_app(Settings(nats=nats_settings, config=api_config(), database_url=pg_dsn, people=rules))
    try:
        async with AsyncTestClient(app, raise_server_exceptions=False) as c:
            c.headers["Authorization"] = f"Bearer {ADMIN_KEY}"
            await wait_healthy(c)
            r = await c.put("/v1/pipelines/sales", json=PIPELINE)
            assert r.status_code == 202, r.text
            yield c
    finally:
        stop.set()
        for task in workers:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 30)


async def _qualified_lead(client: Client, **fields: Any) -> str:
    r = await client.post("/v1/leads", json={**LEAD, **fields})
    assert r.status_code == 202, r.text
    lead_id: str = r.json()["aggregate_id"]
    r = await client.post(f"/v1/leads/{lead_id}/qualify", json={})
    assert r.status_code == 202, r.text
    return lead_id


async def _eventually_get(client: Client, path: str, ready: Any = None) -> Any:
    found: dict[str, Any] = {}

    async def fetched() -> bool:
        r = await client.get(path)
        if r.status_code == 200 and (ready is None or ready(r.json())):
            found["body"] = r.json()
            return True
        return False

    await eventually(fetched)
    return found["body"]


async def test_a_converted_lead_becomes_organisation_contact_and_deal_once(client: Client) -> None:
    lead_id = await _qualified_lead(client)
    headers = {"Idempotency-Key": "convert-1"}
    r = await client.post(f"/v1/leads/{lead_id}/convert", json=CONVERT, headers=headers)
    assert r.status_code == 202, r.text
    first = r.json()
    assert [e["type"] for e in first["events"]] == [
        "organisation.created.v1",
        "contact.created.v1",
        "deal.opened.v1",
        "contact.linked_to_deal.v1",
        "lead.converted.v1",
    ]

    again = await client.post(f"/v1/leads/{lead_id}/convert", json=CONVERT, headers=headers)
    assert again.status_code == 200, again.text
    assert {k: again.json()[k] for k in ("organisation_id", "contact_id", "deal_id")} == {
        k: first[k] for k in ("organisation_id", "contact_id", "deal_id")
    }
    assert again.json()["events"] == [] and again.json()["duplicate"] is True
    reused = await client.post(f"/v1/leads/{lead_id}/convert", json={**CONVERT, "amount": "1"}, headers=headers)
    assert reused.status_code == 422 and reused.json()["errors"][0]["field"] == "Idempotency-Key", reused.text
    unkeyed = await client.post(f"/v1/leads/{lead_id}/convert", json=CONVERT)
    assert unkeyed.status_code == 409 and unkeyed.json()["errors"][0]["field"] == "lead_id"

    contact = await _eventually_get(client, f"/v1/contacts/{first['contact_id']}", lambda b: b["deals"])
    assert contact["contact"]["name"] == "Anna Nowak" and contact["contact"]["email"] == LEAD["email"]
    assert contact["contact"]["organisation_id"] == first["organisation_id"]
    assert contact["deals"][0]["deal_id"] == first["deal_id"] and contact["deals"][0]["role"] == "champion"
    organisation = await _eventually_get(client, f"/v1/organisations/{first['organisation_id']}", lambda b: b["deals"])
    assert organisation["organisation"]["name"] == "Acme Sp. z o.o."
    assert organisation["organisation"]["domain"] == "acme.example"
    assert [(d["deal_id"], d["stage"], d["amount"]) for d in organisation["deals"]] == [
        (first["deal_id"], "qualified", "12000")
    ]
    assert [c["contact_id"] for c in organisation["contacts"]] == [first["contact_id"]]
    deal = await _eventually_get(client, f"/v1/deals/{first['deal_id']}")
    assert deal["stage"] == "qualified" and deal["people"]["decision_maker"] is None
    assert deal["people"]["late_stage_without_decision_maker"] is False
    assert [(c["name"], c["role"]) for c in deal["people"]["contacts"]] == [("Anna Nowak", "champion")]

    # A second lead of the same company joins its organisation (found by domain), with a contact of its own.
    other = await _qualified_lead(client, email="piotr@acme.example", first_name="Piotr", source_ref="second")
    r = await client.post(f"/v1/leads/{other}/convert", json={**CONVERT, "role": "decision_maker"})
    assert r.status_code == 202, r.text
    assert r.json()["organisation_id"] == first["organisation_id"]
    assert r.json()["contact_id"] != first["contact_id"]
    assert "organisation.created.v1" not in [e["type"] for e in r.json()["events"]]

    listed = await _eventually_get(
        client, "/v1/contacts?q=acme.example&limit=1", lambda b: b["next_cursor"] is not None
    )
    assert len(listed["contacts"]) == 1
    rest = (await client.get(f"/v1/contacts?q=acme.example&limit=1&cursor={listed['next_cursor']}")).json()
    assert len(rest["contacts"]) == 1 and rest["contacts"][0]["contact_id"] != listed["contacts"][0]["contact_id"]
    at_acme = f"/v1/contacts?organisation_id={first['organisation_id']}&sort=-created_at"
    newest_first = (await client.get(at_acme)).json()["contacts"]
    assert [c["contact_id"] for c in newest_first] == [r.json()["contact_id"], first["contact_id"]]
    found = (await client.get("/v1/organisations?q=acme")).json()
    assert [o["organisation_id"] for o in found["organisations"]] == [first["organisation_id"]]


async def test_erasing_the_lead_erases_the_contact_it_became(
    client: Client, nats_conn: tuple[Any, JetStreamContext], naming: Naming, nats_settings: NatsSettings, pg_dsn: str
) -> None:
    _, js = nats_conn
    lead_id = await _qualified_lead(client)
    r = await client.post(f"/v1/leads/{lead_id}/convert", json=CONVERT)
    assert r.status_code == 202, r.text
    contact_id = r.json()["contact_id"]
    await _eventually_get(client, f"/v1/contacts/{contact_id}")
    log = b"".join([m.data async for m in scan(js, naming.events_stream)])
    assert b"Nowak" not in log and b"anna.nowak" not in log and b"600 300 400" not in log

    history = (await client.get(f"/v1/contacts/{contact_id}/events")).json()["events"]
    assert history[0]["data"]["email"] == LEAD["email"] and history[0]["data"]["sealed"] is None
    refused = await client.post(f"/v1/contacts/{contact_id}/erase", json={})
    assert refused.status_code == 409 and lead_id in refused.json()["errors"][0]["reason"]
    r = await client.post(f"/v1/leads/{lead_id}/erase", json={"reason": "data subject request"})
    assert r.status_code == 202, r.text

    erased = await _eventually_get(client, f"/v1/contacts/{contact_id}", lambda b: b["contact"]["erased"])
    assert erased["contact"]["name"] == "[erased]"
    assert erased["contact"]["email"] is None and erased["contact"]["phone"] is None
    assert (await client.get("/v1/contacts?q=nowak")).json()["contacts"] == []
    history = (await client.get(f"/v1/contacts/{contact_id}/events")).json()["events"]
    assert history[0]["data"]["email"] == "[erased]" and history[0]["data"]["name"] == "[erased]"
    # The read model is the log's: rebuilt from it after the erasure, the same rows (and nothing of the person).
    verified = await verify(PeopleProjection("check"), nats_settings, pg_dsn)
    assert verified.same, verified


async def test_a_contact_on_its_own_is_erased_with_its_own_key(client: Client) -> None:
    r = await client.post("/v1/organisations", json={"organisation_id": "globex", "name": "Globex", "country": "PL"})
    assert r.status_code == 202, r.text
    r = await client.post(
        "/v1/contacts",
        json={
            "contact_id": "c-hank",
            "name": "Hank Scorpio",
            "email": "hank@globex.example",
            "organisation_id": "globex",
        },
    )
    assert r.status_code == 202, r.text
    await _eventually_get(client, "/v1/contacts/c-hank")
    r = await client.post("/v1/contacts/c-hank/erase", json={"reason": "request"})
    assert r.status_code == 202, r.text
    erased = await _eventually_get(client, "/v1/contacts/c-hank", lambda b: b["contact"]["erased"])
    assert erased["contact"]["name"] == "[erased]" and erased["contact"]["email"] is None


async def test_the_board_shows_the_decision_maker_and_flags_a_late_deal_without_one(client: Client) -> None:
    r = await client.post(
        "/v1/deals",
        json={"deal_id": "d-late", "name": "Big one", "pipeline_id": "sales", "amount": "5000", "currency": "EUR"},
    )
    assert r.status_code == 202, r.text
    version = r.json()["version"]
    move = {"to_stage": "proposal"}
    r = await client.post("/v1/deals/d-late/stage", json=move, headers={"If-Match": f'"{version}"'})
    assert r.status_code == 202, r.text

    def card(board: list[dict[str, Any]]) -> dict[str, Any] | None:
        for column in board[0]["columns"] if board else []:
            for deal in column["deals"]:
                if deal["deal_id"] == "d-late" and column["stage"] == "proposal":
                    return deal
        return None

    board = await _eventually_get(client, "/v1/board?pipeline_id=sales", card)
    assert card(board)["late_stage_without_decision_maker"] is True  # type: ignore[index]

    r = await client.post("/v1/contacts", json={"contact_id": "c-boss", "name": "Maria Boss"})
    assert r.status_code == 202, r.text
    r = await client.post("/v1/deals/d-late/contacts", json={"contact_id": "c-boss", "role": "influencer"})
    assert r.status_code == 202, r.text
    r = await client.post("/v1/deals/d-late/contacts", json={"contact_id": "c-boss", "role": "decision_maker"})
    assert r.status_code == 202 and r.json()["type"] == "contact.role_changed.v1", r.text

    def decided(board: list[dict[str, Any]]) -> bool:
        found = card(board)
        return found is not None and found["decision_maker"] == "Maria Boss"

    board = await _eventually_get(client, "/v1/board?pipeline_id=sales", decided)
    assert card(board)["late_stage_without_decision_maker"] is False  # type: ignore[index]
    deal = (await client.get("/v1/deals/d-late")).json()["people"]
    assert deal["decision_maker"]["contact_id"] == "c-boss"
    assert [(c["contact_id"], c["role"]) for c in deal["contacts"]] == [("c-boss", "decision_maker")]

    r = await client.post("/v1/deals/d-late/contacts/c-boss/unlink", json={})
    assert r.status_code == 202, r.text
    await _eventually_get(
        client, "/v1/board?pipeline_id=sales", lambda b: (card(b) or {}).get("late_stage_without_decision_maker")
    )


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/deals/d.x/contacts", {"contact_id": "c1", "role": "decision_maker"}, "deal_id"),
        ("/v1/deals/d1/contacts", {"contact_id": "c>1", "role": "decision_maker"}, "contact_id"),
        ("/v1/deals/d1/contacts", {"contact_id": "c1", "role": "boss"}, "role"),
        ("/v1/leads/l*1/convert", CONVERT, "lead_id"),
        ("/v1/leads/l1/convert", {**CONVERT, "pipeline_id": "a b"}, "pipeline_id"),
        ("/v1/organisations", {"name": "X", "domain": "not a domain"}, "domain"),
        ("/v1/contacts", {"name": "X", "email": "nope"}, "email"),
    ],
)
async def test_bad_ids_and_roles_get_a_4xx_naming_the_field(client: Client, path: str, body: Any, field: str) -> None:
    r = await client.post(path, json=body)
    assert 400 <= r.status_code < 500, r.text
    assert field in r.text


async def test_missing_things_are_404_or_422_and_change_nothing(
    client: Client, nats_conn: tuple[Any, JetStreamContext], naming: Naming
) -> None:
    _, js = nats_conn
    assert (
        await client.post("/v1/deals/nope/contacts", json={"contact_id": "nobody", "role": "user"})
    ).status_code == 404
    assert (await client.get("/v1/contacts/nobody")).status_code == 404
    assert (await client.get("/v1/organisations/nobody")).status_code == 404
    assert (await client.get("/v1/deals/nobody")).status_code == 404
    assert (await client.get("/v1/contacts?colour=red")).status_code == 422
    assert (await client.get("/v1/contacts?sort=shoe")).status_code == 422
    r = await client.post("/v1/contacts", json={"name": "Ana", "organisation_id": "ghost"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "organisation_id", r.text
    assert (await client.post("/v1/organisations", json={"organisation_id": "o1", "name": "A"})).status_code == 202
    again = await client.post("/v1/organisations", json={"organisation_id": "o1", "name": "B"})
    assert again.status_code == 409 and again.json()["errors"][0]["field"] == "organisation_id", again.text
    lead_id = await _qualified_lead(client, source_ref="bad-pipeline")
    before = (await js.stream_info(naming.events_stream)).state.messages
    r = await client.post(f"/v1/leads/{lead_id}/convert", json={**CONVERT, "pipeline_id": "nowhere"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "pipeline_id"
    assert (await js.stream_info(naming.events_stream)).state.messages == before
    open_lead = (await client.post("/v1/leads", json={**LEAD, "source_ref": "not-qualified"})).json()["aggregate_id"]
    r = await client.post(f"/v1/leads/{open_lead}/convert", json=CONVERT)
    assert r.status_code == 409 and r.json()["errors"][0]["field"] == "status"


async def test_the_rules_file_may_name_a_pipelines_late_stages(ruled_client: Client) -> None:
    deal = {"deal_id": "d-early", "name": "Early", "pipeline_id": "sales", "amount": "5", "currency": "EUR"}
    r = await ruled_client.post("/v1/deals", json={**deal, "stage": "discovery"})
    assert r.status_code == 202, r.text
    r = await ruled_client.post("/v1/deals", json={**deal, "deal_id": "d-later", "stage": "negotiation"})
    assert r.status_code == 202, r.text

    def flags(board: list[dict[str, Any]]) -> dict[str, bool]:
        cards = [d for b in board for c in b["columns"] for d in c["deals"]]
        return {d["deal_id"]: d["late_stage_without_decision_maker"] for d in cards}

    board = await _eventually_get(ruled_client, "/v1/board?pipeline_id=sales", lambda b: len(flags(b)) == 2)
    assert flags(board) == {"d-early": True, "d-later": False}
    assert (await ruled_client.get("/v1/deals/d-early")).json()["people"]["late_stage_without_decision_maker"]


async def test_an_api_without_read_models_still_converts(api: Client) -> None:
    assert (await api.put("/v1/pipelines/sales", json=PIPELINE)).status_code == 202
    lead_id = await _qualified_lead(api)
    r = await api.post(f"/v1/leads/{lead_id}/convert", json=CONVERT)
    assert r.status_code == 202, r.text
    deal = (await api.get(f"/v1/deals/{r.json()['deal_id']}")).json()
    assert deal["stage"] == "qualified" and deal["people"] is None
