"""Ids are checked once, strictly, everywhere they enter the API: path, query and body go through
``events.ids.check_id`` (a full match), a bad one is a 422 naming the field, and nothing reaches the log."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar import Litestar
from litestar.routes import HTTPRoute
from litestar.testing import AsyncTestClient

from events.ids import derived_id, is_valid_aggregate_id
from events.store import EventStore
from events.subjects import Naming, partition_of
from services.api import schemas
from services.api.params import check_parameters, is_id
from services.config import Settings
from tests.conftest import FORM_KEY, api_config

pytestmark = pytest.mark.integration

Client = AsyncTestClient[Litestar]

PIPELINE = {
    "name": "New business",
    "stages": [
        {"id": "qualified", "name": "Qualified", "probability": 0.1},
        {"id": "proposal", "name": "Proposal", "probability": 0.5},
    ],
}
DEAL = {"name": "Acme", "pipeline_id": "default", "amount": "10", "currency": "EUR"}

# What the issue saw get through or crash, and their kin: NATS wildcards and token separators, whitespace, NUL,
# unicode, a trailing newline (Python's ``$`` matches before it), over-long.
KNOWN_HOSTILE = [">", "*", "a.b", "a b", "a\x00b", "ünïcode", "x\n", "x\r\n", "\n", "x" * 65, "a>", "$JS", "%2E", "\t"]
hostile_ids = st.sampled_from(KNOWN_HOSTILE) | st.text(max_size=80).filter(lambda s: not is_valid_aggregate_id(s))
# In a path, "/" splits the segment, "" and dot segments are rewritten by the client: another route answers.
hostile_path_ids = hostile_ids.filter(lambda s: s not in ("", ".", "..") and "/" not in s)
# Another system's id (a source_ref): printable ASCII. Form values are trimmed first, so only what is left counts.
hostile_refs = st.sampled_from(["a b", "a\x00b", "ünï", "a\nb", "x" * 129]) | st.text(max_size=140).filter(
    lambda s: re.fullmatch(r"[!-~]{1,128}", s.strip()) is None and s.strip() != ""
)


async def _events(api: Client, store: EventStore) -> int:
    info = await store.js.stream_info(store.naming.events_stream)
    return int(info.state.messages)


@pytest.fixture
async def seeded(api: Client) -> Client:
    assert (await api.put("/v1/pipelines/default", json=PIPELINE)).status_code == 202
    assert (await api.post("/v1/deals", json={**DEAL, "deal_id": "d1"})).status_code == 202
    return api


def _fields(r: Any) -> list[str]:
    return [e["field"] for e in r.json()["errors"]]


# --- what the issue reported -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**DEAL, "pipeline_id": ">"}, "pipeline_id"),
        ({**DEAL, "lead_id": ">"}, "lead_id"),
        ({**DEAL, "deal_id": "a.b"}, "deal_id"),
        ({**DEAL, "deal_id": "a b"}, "deal_id"),
        ({**DEAL, "deal_id": "a\x00b"}, "deal_id"),
        ({**DEAL, "deal_id": "ünï"}, "deal_id"),
        ({**DEAL, "deal_id": "x\n"}, "deal_id"),
        ({**DEAL, "deal_id": "x" * 65}, "deal_id"),
        ({**DEAL, "stage": "qualified.>"}, "stage"),
    ],
)
async def test_a_hostile_id_in_a_deal_body_is_422_naming_it_and_nothing_lands(
    seeded: Client, store: EventStore, body: dict[str, Any], field: str
) -> None:
    before = await _events(seeded, store)
    r = await seeded.post("/v1/deals", json=body)
    assert r.status_code == 422, r.text
    assert _fields(r) == [field]
    assert await _events(seeded, store) == before
    board = await seeded.get("/v1/pipelines/%3E/events")
    assert board.status_code == 422 and _fields(board) == ["pipeline_id"]


def _in_partition_of(wildcard: str, make: Callable[[str], str]) -> str:
    """A name whose id falls in the partition of ``wildcard``: where ``<prefix>.evt.<type>.<partition>.>`` reads."""
    return next(name for n in range(10_000) if partition_of(make(name := f"p{n}")) == partition_of(wildcard))


async def test_a_wildcard_id_never_reads_another_aggregate(api: Client, store: EventStore) -> None:
    # Seeded where a wildcard read would find them: before, '>' found this pipeline and this lead.
    pipeline_id = _in_partition_of(">", lambda name: name)
    assert (await api.put(f"/v1/pipelines/{pipeline_id}", json=PIPELINE)).status_code == 202
    source_ref = _in_partition_of(">", lambda name: derived_id("web_form:website", name))
    form = {"Authorization": f"Bearer {FORM_KEY}"}
    lead = await api.post("/v1/leads", json={"email": "ana@example.com", "source_ref": source_ref}, headers=form)
    assert lead.status_code == 202 and partition_of(lead.json()["aggregate_id"]) == partition_of(">"), lead.text
    before = await _events(api, store)
    for body, field in [({**DEAL, "pipeline_id": ">"}, "pipeline_id"), ({**DEAL, "lead_id": ">"}, "lead_id")]:
        r = await api.post("/v1/deals", json={**body, "stage": "qualified"})
        assert r.status_code == 422 and _fields(r) == [field], r.text
    for path in ("/v1/pipelines/%3E/events", "/v1/leads/%3E/events", "/v1/pipelines/*/events"):
        r = await api.get(path)
        assert r.status_code == 422, r.text
    assert await _events(api, store) == before


async def test_a_path_id_ending_in_a_newline_is_422_not_a_500(api: Client, store: EventStore) -> None:
    before = await _events(api, store)
    r = await api.put("/v1/pipelines/x%0A", json=PIPELINE)
    assert r.status_code == 422, r.text
    assert _fields(r) == ["pipeline_id"]
    assert await _events(api, store) == before


async def test_a_stage_id_of_a_pipeline_is_checked_too(api: Client, store: EventStore) -> None:
    stages = [{"id": "new", "name": "New", "probability": 0.1}, {"id": "a.b", "name": "Bad", "probability": 0.2}]
    r = await api.put("/v1/pipelines/p1", json={"name": "P", "stages": stages})
    assert r.status_code == 422, r.text
    assert _fields(r) == ["stages.1.id"]
    assert await store.read("pipeline", "p1") == []


async def test_a_referenced_lead_or_pipeline_must_exist(seeded: Client, store: EventStore) -> None:
    before = await _events(seeded, store)
    r = await seeded.post("/v1/deals", json={**DEAL, "lead_id": "no-such-lead"})
    assert r.status_code == 422 and _fields(r) == ["lead_id"], r.text
    r = await seeded.post("/v1/deals", json={**DEAL, "pipeline_id": "no-such-pipeline"})
    assert r.status_code == 422 and _fields(r) == ["pipeline_id"], r.text
    assert await _events(seeded, store) == before


async def test_a_hostile_id_in_the_query_is_422_naming_it(api: Client) -> None:
    for path, name in [("/v1/board", "pipeline_id"), ("/v1/alerts", "lead_id"), ("/v1/notifications", "event_id")]:
        r = await api.get(path, params={name: ">"})
        assert r.status_code == 422, r.text
        assert _fields(r) == [name]


async def test_a_source_ref_with_a_newline_or_a_space_is_422(api: Client, store: EventStore) -> None:
    before = await _events(api, store)
    form = {"Authorization": f"Bearer {FORM_KEY}"}
    r = await api.post("/v1/leads", json={"email": "ana@example.com", "source_ref": "crm 1"}, headers=form)
    assert r.status_code == 422 and _fields(r) == ["source_ref"], r.text
    leads = [{"email": "ana@example.com", "source_ref": "ok"}, {"email": "b@example.com", "source_ref": "ü-1"}]
    batch = {"leads": leads}
    r = await api.post("/v1/leads/batch", json=batch, headers=form)
    assert r.status_code == 422 and _fields(r) == ["leads.1.source_ref"], r.text
    assert await _events(api, store) == before


# --- every route, every id: hostile ids never pass, never crash, never append -----------------------------


def _app() -> Litestar:
    from events.config import NatsSettings
    from services.api.app import create_app

    return create_app(Settings(nats=NatsSettings(), config=api_config()))


def _routes() -> Iterator[tuple[str, str, HTTPRoute, Any]]:
    for route in _app().routes:
        if isinstance(route, HTTPRoute) and not route.path.startswith("/v1/openapi"):
            for method, (handler, _) in route.route_handler_map.items():
                if method != "OPTIONS":
                    yield route.path, method, route, handler


PATH_ID_ROUTES = sorted(
    {(path, method, name) for path, method, route, _ in _routes() for name in route.path_parameters}
)

# One valid body per body type with ids: each id field in turn gets a hostile value.
VALID_BODIES: dict[type[msgspec.Struct], dict[str, Any]] = {
    schemas.OpenDeal: {**DEAL, "deal_id": "d2", "stage": "qualified", "lead_id": "l1"},
    schemas.MoveStage: {"to_stage": "proposal"},
    schemas.LogTouchpoint: {"kind": "call", "direction": "outbound", "touchpoint_id": "t1"},
    schemas.ScheduleTask: {"title": "Call back", "due_at": "2030-01-01T09:00:00Z", "task_id": "k1"},
    schemas.DefinePipeline: {**PIPELINE},
    schemas.MergeLead: {"into": "l1"},
    schemas.CreateOrganisation: {"name": "Acme", "organisation_id": "o1"},
    schemas.CreateContact: {"name": "Ana", "contact_id": "c1", "organisation_id": "o1"},
    schemas.LinkContact: {"contact_id": "c1", "role": "champion"},
    schemas.ConvertLead: {"pipeline_id": "sales", "amount": "1", "currency": "EUR", "stage": "qualified"},
    schemas.ReopenDeal: {"stage": "proposal"},
}
QUERY_ID_ROUTES = sorted(
    (path, method, p.field_alias)
    for path, method, route, _ in _routes()
    for p in route.route_handler_map[method][1].expected_query_params
    if is_id(p.field_alias)
)
BODY_ID_ROUTES = sorted(
    (path, method, data.annotation.__name__, name)
    for path, method, _, handler in _routes()
    if (data := handler.parsed_fn_signature.parameters.get("data")) is not None
    for name in schemas.id_fields(data.annotation)
)


def _concrete(path: str, values: dict[str, str]) -> str:
    return re.sub(r"\{(\w+):\w+\}", lambda m: quote(values.get(m[1], "x1"), safe=""), path)


def test_every_path_parameter_is_an_id_and_every_body_id_field_is_declared_an_id() -> None:
    # The id check finds ids by name: a path parameter or a body field that names something must say so.
    assert PATH_ID_ROUTES, "no route with a path id found: the enumeration is broken"
    assert all(is_id(name) for _, _, name in PATH_ID_ROUTES), PATH_ID_ROUTES
    # A before_request hook of a router or handler would replace the app's: the ids of its routes would go unchecked.
    unchecked = [(path, m) for path, m, _, h in _routes() if h.resolve_before_request() is not check_parameters]
    assert not unchecked, unchecked
    assert len(QUERY_ID_ROUTES) >= 5, QUERY_ID_ROUTES
    bodies = {
        data.annotation
        for _, _, _, handler in _routes()
        if (data := handler.parsed_fn_signature.parameters.get("data")) is not None
    }
    assert len(bodies) >= 10, bodies
    for body in bodies:
        undeclared = [
            f.name
            for f in msgspec.structs.fields(body)
            if (f.name.endswith("_id") or f.name.endswith("stage")) and f.name not in schemas.id_fields(body)
        ]
        assert not undeclared, (body, undeclared)
    bodies_with_ids = {name for _, _, name, _ in BODY_ID_ROUTES}
    assert bodies_with_ids == {b.__name__ for b in VALID_BODIES if b is not schemas.DefinePipeline}
    assert len(BODY_ID_ROUTES) >= 8, BODY_ID_ROUTES


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
async def test_hostile_ids_anywhere_are_a_4xx_naming_them_and_append_nothing(
    seeded: Client, store: EventStore, naming: Naming, data: st.DataObject
) -> None:
    before = await _events(seeded, store)
    where = data.draw(st.sampled_from(["path", "query", "body", "stage", "capture"]))
    if where == "path":
        path, method, name = data.draw(st.sampled_from(PATH_ID_ROUTES))
        value = data.draw(hostile_path_ids)
        r = await seeded.request(method, _concrete(path, {name: value}), json={})
    elif where == "query":
        path, method, name = data.draw(st.sampled_from(QUERY_ID_ROUTES))
        r = await seeded.request(method, _concrete(path, {}), params={name: data.draw(hostile_ids)})
    elif where == "body":
        path, method, body_type, name = data.draw(st.sampled_from(BODY_ID_ROUTES))
        body = VALID_BODIES[getattr(schemas, body_type)]
        r = await seeded.request(method, _concrete(path, {}), json={**body, name: data.draw(hostile_ids)})
    elif where == "stage":
        name = "stages.0.id"
        stages = [{**PIPELINE["stages"][0], "id": data.draw(hostile_ids)}]  # type: ignore[index]
        r = await seeded.put("/v1/pipelines/p2", json={"name": "P", "stages": stages})
    else:
        name = "source_ref"
        lead = {"email": "ana@example.com", "source_ref": data.draw(hostile_refs)}
        r = await seeded.post("/v1/leads", json=lead, headers={"Authorization": f"Bearer {FORM_KEY}"})
    assert r.status_code == 422, (where, name, r.status_code, r.text)
    assert name in _fields(r), r.text
    assert await _events(seeded, store) == before
