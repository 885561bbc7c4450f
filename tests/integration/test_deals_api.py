"""Deals as a sales team finds and edits them: the deal list with filters, search and pages, corrections and
reassignments with If-Match, reopening a lost deal, and the pipelines read back, with the real workers."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.test_api_reads import PIPELINE, Client, _caught_up, reads_api

pytestmark = pytest.mark.integration
__all__ = ["reads_api"]

OPENED = "2025-11-03T09:00:00+01:00"


async def _open(client: Client, deal_id: str, name: str, owner: str, close: str | None = None) -> int:
    body: dict[str, Any] = {
        "deal_id": deal_id,
        "name": name,
        "pipeline_id": "sales",
        "amount": "1000",
        "currency": "EUR",
        "owner": owner,
        "occurred_at": OPENED,
    }
    if close:
        body["expected_close_date"] = close
    r = await client.post("/v1/deals", json=body)
    assert r.status_code == 202, r.text
    version: int = r.json()["version"]
    return version


async def _ids(client: Client, **params: Any) -> list[str]:
    r = await client.get("/v1/deals", params=params)
    assert r.status_code == 200, r.text
    return [d["deal_id"] for d in r.json()["deals"]]


def _field(r: Any) -> str:
    assert r.status_code == 422, r.text
    field: str = r.json()["errors"][0]["field"]
    return field


async def test_the_deal_list_filters_searches_and_pages(reads_api: Client) -> None:
    client = reads_api
    assert (await client.put("/v1/pipelines/sales", json=PIPELINE)).status_code == 202
    await _open(client, "acme", "Acme renewal", "ana", "2025-12-15")
    await _open(client, "beta", "Beta Kitchen", "ben", "2026-01-20")
    await _open(client, "gamma", "Gamma ACME add-on", "ana")
    r = await client.post("/v1/deals/gamma/touchpoints", json={"kind": "call", "direction": "outbound"})
    assert r.status_code == 202, r.text
    r = await client.post("/v1/deals/beta/lost", json={"reason": "price", "occurred_at": "2025-11-21T12:00:00Z"})
    assert r.status_code == 202, r.text
    await _caught_up(client)

    assert sorted(await _ids(client)) == ["acme", "beta", "gamma"]
    assert sorted(await _ids(client, owner="ana")) == ["acme", "gamma"]
    assert await _ids(client, status="lost") == ["beta"]
    assert sorted(await _ids(client, q="acme")) == ["acme", "gamma"]  # any case, anywhere in the name
    assert await _ids(client, q="100%") == []  # pattern characters are taken literally
    assert await _ids(client, close_from="2025-12-01", close_to="2025-12-31") == ["acme"]
    # Qualified rots after 14 days without activity: acme (opened 2025) does, gamma (touched now) does not, and a
    # lost deal never rots.
    assert await _ids(client, rotting="true") == ["acme"]
    assert sorted(await _ids(client, rotting="false")) == ["beta", "gamma"]
    assert await _ids(client, pipeline_id="sales", stage="qualified", sort="name") == ["acme", "beta", "gamma"]
    assert await _ids(client, sort="-name") == ["gamma", "beta", "acme"]

    [acme] = (await client.get("/v1/deals", params={"q": "renewal"})).json()["deals"]
    assert acme["name"] == "Acme renewal" and acme["amount"] == "1000.00" and acme["rotting"] is True
    assert acme["expected_close_date"] == "2025-12-15" and acme["stage"] == "qualified"

    first = (await client.get("/v1/deals", params={"sort": "name", "limit": 2})).json()
    assert [d["deal_id"] for d in first["deals"]] == ["acme", "beta"] and first["next_cursor"]
    rest = (await client.get("/v1/deals", params={"sort": "name", "limit": 2, "cursor": first["next_cursor"]})).json()
    assert [d["deal_id"] for d in rest["deals"]] == ["gamma"] and rest["next_cursor"] is None
    other = await client.get("/v1/deals", params={"sort": "-name", "cursor": first["next_cursor"]})
    assert _field(other) == "cursor"

    assert _field(await client.get("/v1/deals", params={"colour": "red"})) == "colour"
    assert _field(await client.get("/v1/deals", params={"limit": 1000})) == "limit"
    assert _field(await client.get("/v1/deals", params={"sort": "amount"})) == "sort"
    assert _field(await client.get("/v1/deals", params={"status": "maybe"})) == "status"
    bad = await client.get("/v1/deals", params={"close_from": "2026-01-01", "close_to": "2025-01-01"})
    assert _field(bad) == "close_to"
    assert _field(await client.get("/v1/deals", params={"rotting": "perhaps"})) == "rotting"
    assert _field(await client.get("/v1/deals", params={"pipeline_id": "no/such"})) == "pipeline_id"


async def test_a_deal_is_corrected_reassigned_and_reopened_with_if_match(reads_api: Client) -> None:
    client = reads_api
    assert (await client.put("/v1/pipelines/sales", json=PIPELINE)).status_code == 202
    v = await _open(client, "acme", "Acme", "ana")

    r = await client.patch("/v1/deals/acme", json={"owner": "ben"})
    assert r.status_code == 428 and r.json()["errors"][0]["field"] == "If-Match"
    r = await client.patch("/v1/deals/acme", json={"owner": "ben", "name": "X"}, headers={"If-Match": f'"{v}"'})
    assert _field(r) == "owner"
    r = await client.patch("/v1/deals/acme", json={}, headers={"If-Match": f'"{v}"'})
    assert r.status_code == 400 or _field(r) == "body"
    r = await client.patch("/v1/deals/acme", json={"owner": "ben"}, headers={"If-Match": f'"{v}"'})
    assert r.status_code == 202 and r.json()["type"] == "deal.reassigned.v1", r.text
    stale = await client.patch("/v1/deals/acme", json={"name": "Acme 2"}, headers={"If-Match": f'"{v}"'})
    assert stale.status_code == 409
    v = int(r.headers["ETag"].strip('"'))
    change = {"name": "Acme renewal 2026", "next_step": "send the quote", "expected_close_date": "2026-02-01"}
    r = await client.patch("/v1/deals/acme", json=change, headers={"If-Match": f'"{v}"'})
    assert r.status_code == 202 and r.json()["type"] == "deal.updated.v1", r.text
    v = int(r.headers["ETag"].strip('"'))
    r = await client.patch("/v1/deals/acme", json={"next_step": None}, headers={"If-Match": f'"{v}"'})
    assert r.status_code == 202, r.text
    v = int(r.headers["ETag"].strip('"'))
    r = await client.patch("/v1/deals/acme", json={"name": None}, headers={"If-Match": f'"{v}"'})
    assert _field(r) == "name"

    events = (await client.get("/v1/deals/acme/events")).json()["events"]
    reassigned = next(e for e in events if e["type"] == "deal.reassigned.v1")
    assert (reassigned["data"]["owner"], reassigned["data"]["previous_owner"]) == ("ben", "ana")
    updates = [e["data"]["changed"] for e in events if e["type"] == "deal.updated.v1"]
    assert updates == [["name", "expected_close_date", "next_step"], ["next_step"]]

    await _caught_up(client)
    [deal] = (await client.get("/v1/deals", params={"owner": "ben"})).json()["deals"]
    assert (deal["name"], deal["next_step"], deal["expected_close_date"]) == ("Acme renewal 2026", None, "2026-02-01")

    r = await client.post("/v1/deals/acme/reopen", json={}, headers={"If-Match": f'"{v}"'})
    assert r.status_code == 409 and r.json()["errors"][0]["field"] == "status"
    r = await client.post("/v1/deals/acme/lost", json={"reason": "timing"})
    assert r.status_code == 202
    v = r.json()["version"]
    r = await client.patch("/v1/deals/acme", json={"owner": "ana"}, headers={"If-Match": f'"{v}"'})
    assert r.status_code == 409  # a lost deal does not change, but for being reopened
    r = await client.post("/v1/deals/acme/reopen", json={"stage": "nowhere"}, headers={"If-Match": f'"{v}"'})
    assert _field(r) == "stage"
    r = await client.post("/v1/deals/acme/reopen", json={"stage": "proposal"}, headers={"If-Match": f'"{v}"'})
    assert r.status_code == 202 and r.json()["type"] == "deal.reopened.v1", r.text
    await _caught_up(client)
    [deal] = (await client.get("/v1/deals", params={"owner": "ben"})).json()["deals"]
    assert (deal["status"], deal["stage"], deal["lost_reason"]) == ("open", "proposal", None)
    assert (await client.get("/v1/deals/acme")).json()["status"] == "open"


async def test_pipelines_read_back_with_their_stages_in_order(reads_api: Client) -> None:
    client = reads_api
    assert (await client.put("/v1/pipelines/sales", json=PIPELINE)).status_code == 202
    await _caught_up(client)
    [sales] = (await client.get("/v1/pipelines")).json()
    assert sales["pipeline_id"] == "sales" and sales["name"] == "New business" and sales["defined_at"]
    assert [(s["id"], s["order"], s["probability"], s["rotting_days"]) for s in sales["stages"]] == [
        ("qualified", 1, 0.1, 14),
        ("proposal", 2, 0.5, 7),
    ]
    assert (await client.get("/v1/pipelines/sales")).json() == sales
    # An older definition (business time), appended later with an imported history, is not the one in force.
    old = {**PIPELINE, "name": "Old", "occurred_at": "2024-01-01T00:00:00Z"}
    assert (await client.put("/v1/pipelines/sales", json=old)).status_code == 202
    await _caught_up(client)
    assert (await client.get("/v1/pipelines/sales")).json() == sales
    newer = {**PIPELINE, "name": "Newer", "stages": PIPELINE["stages"][:1]}
    assert (await client.put("/v1/pipelines/sales", json=newer)).status_code == 202
    await _caught_up(client)
    now = (await client.get("/v1/pipelines/sales")).json()
    assert now["name"] == "Newer" and [s["id"] for s in now["stages"]] == ["qualified"]
    missing = await client.get("/v1/pipelines/nope")
    assert missing.status_code == 404 and missing.json()["errors"][0]["field"] == "pipeline_id"
