"""``POST /v1/imports``: a CRM export as the body, dry-run or imported once, bad input a 4xx naming the field."""

from __future__ import annotations

from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from nats.js import JetStreamContext

from events.subjects import Naming
from tests.conftest import FORM_KEY
from tests.imports_oracle import EXPORTS

pytestmark = pytest.mark.integration

CSV = {"Content-Type": "text/csv; charset=utf-8"}


async def _messages(js: JetStreamContext, naming: Naming) -> int:
    return (await js.stream_info(naming.events_stream)).state.messages


async def test_an_export_posted_is_checked_dry_then_imported_once(
    api: AsyncTestClient[Litestar], nats_conn: tuple[Any, JetStreamContext], naming: Naming
) -> None:
    _, js = nats_conn
    body = (EXPORTS / "quirks" / "pipedrive-deals-excel-pl.csv").read_bytes()
    params = {"crm": "pipedrive", "kind": "deals", "zone": "Europe/Warsaw"}
    dry = await api.post("/v1/imports", params={**params, "dry_run": "true"}, content=body, headers=CSV)
    assert dry.status_code == 200, dry.text
    assert (dry.json()["deals"], dry.json()["dry_run"], dry.json()["rejected"]) == (25, True, [])
    assert await _messages(js, naming) == 0

    done = await api.post("/v1/imports", params=params, content=body, headers=CSV)
    assert done.status_code == 200, done.text
    assert done.json()["appended"] == await _messages(js, naming) > 25
    again = await api.post("/v1/imports", params=params, content=body, headers=CSV)
    assert (again.json()["appended"], again.json()["already_there"]) == (0, done.json()["appended"])


async def test_bad_input_is_a_4xx_naming_the_field(api: AsyncTestClient[Litestar]) -> None:
    body = (EXPORTS / "hubspot" / "deals.csv").read_bytes()
    crm = await api.post("/v1/imports", params={"crm": "salesforce"}, content=body, headers=CSV)
    zone = await api.post("/v1/imports", params={"crm": "hubspot", "zone": "Mars/Olympus"}, content=body, headers=CSV)
    empty = await api.post("/v1/imports", params={"crm": "hubspot"}, content=b"", headers=CSV)
    unknown = await api.post("/v1/imports", params={"crm": "hubspot", "colour": "red"}, content=body, headers=CSV)
    for answer, field in ((crm, "crm"), (zone, "zone"), (empty, "body"), (unknown, "colour")):
        assert 400 <= answer.status_code < 500, answer.text
        assert answer.json()["errors"][0]["field"] == field
    form = await api.post(
        "/v1/imports", params={"crm": "hubspot"}, content=body, headers={**CSV, "Authorization": f"Bearer {FORM_KEY}"}
    )
    assert form.status_code == 403


async def test_the_openapi_document_describes_import_and_export(api: AsyncTestClient[Litestar]) -> None:
    answer = await api.get("/v1/openapi/openapi.json")
    assert answer.status_code == 200
    paths = answer.json()["paths"]
    assert "post" in paths["/v1/imports"] and "get" in paths["/v1/exports/deals.csv"]


async def test_an_export_without_read_models_is_a_503_before_any_csv(api: AsyncTestClient[Litestar]) -> None:
    answer = await api.get("/v1/exports/deals.csv")
    assert answer.status_code == 503 and not answer.text.startswith("deal_id")
