"""Answers that tell the truth: a write whose outcome the log did not confirm is found out or answered as unknown
(never "nothing was written" while it landed), health asks the log itself, a reused Idempotency-Key with another
body is refused, and unknown query parameters are named instead of ignored."""

from __future__ import annotations

import asyncio
import re
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import nats.errors
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from litestar import Litestar
from litestar.routes import HTTPRoute
from litestar.testing import AsyncTestClient
from nats.js.errors import APIError, NoStreamResponseError

from devstack.servers import NatsServer
from events.config import NatsSettings
from events.ids import derived_id
from events.store import EventStore
from events.streams import StreamSettings
from events.subjects import Naming
from services.config import Settings
from tests.conftest import ADMIN_KEY, FORM_KEY, META_VERIFY_TOKEN, api_config, make_streams, wait_healthy
from tests.waiting import eventually

pytestmark = pytest.mark.integration

Client = AsyncTestClient[Litestar]
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
FORM = {"Authorization": f"Bearer {FORM_KEY}"}
PIPELINE = {"name": "Sales", "stages": [{"id": "new", "name": "New", "probability": 0.1}]}
DEAL = {"deal_id": "d1", "name": "Acme", "pipeline_id": "default", "amount": "10", "currency": "EUR"}
CALL = {"kind": "call", "direction": "outbound", "outcome": "connected"}


def _fields(r: Any) -> list[str]:
    return [e["field"] for e in r.json()["errors"]]


async def _events(store: EventStore) -> int:
    return int((await store.js.stream_info(store.naming.events_stream)).state.messages)


# --- unknown query parameters ---------------------------------------------------------------------------------


async def test_unknown_query_parameters_are_422_naming_each(api: Client, store: EventStore) -> None:
    r = await api.get("/v1/board", params={"q": "acme", "rotting": "true", "owner": "ana"})
    assert r.status_code == 422, r.text
    assert _fields(r) == ["q", "rotting"]
    assert "owner" in r.json()["errors"][0]["reason"]  # the reason lists what the operation takes
    r = await api.get("/v1/deals/d1/events", params={"include_raw": "true", "as_of": "2026-01-01T00:00:00Z"})
    assert r.status_code == 422 and _fields(r) == ["as_of"], r.text
    before = await _events(store)
    r = await api.post("/v1/leads?source=ads", json={"email": "ana@example.com"}, headers=FORM)
    assert r.status_code == 422 and _fields(r) == ["source"], r.text
    assert await _events(store) == before


def _get_routes() -> list[tuple[str, frozenset[str]]]:
    from services.api.app import create_app

    app = create_app(Settings(nats=NatsSettings(), config=api_config()))
    return sorted(
        (re.sub(r"\{\w+:\w+\}", "x1", route.path), app.state.query_names[id(handler)])
        for route in app.routes
        if isinstance(route, HTTPRoute) and not route.path.startswith("/v1/openapi")
        for method, (handler, _) in route.route_handler_map.items()
        if method == "GET" and route.path != "/v1/board/changes"  # an endless stream once accepted
    )


GET_ROUTES = _get_routes()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(route=st.sampled_from(GET_ROUTES), name=st.text("abcdefghijklmnopqrstuvwxyz_.", min_size=1, max_size=12))
async def test_any_unknown_query_parameter_on_any_read_is_422_naming_it(
    api: Client, route: tuple[str, frozenset[str]], name: str
) -> None:
    path, known = route
    assume(name not in known)
    r = await api.get(path, params={name: "1"})
    assert r.status_code == 422, (path, name, r.text)
    assert name in _fields(r)


async def test_the_documented_query_parameters_still_work(api: Client) -> None:
    r = await api.post(f"/v1/leads?key={FORM_KEY}", json={"email": "ana@example.com"}, headers={"Authorization": ""})
    assert r.status_code == 202, r.text
    hub = {"hub.mode": "subscribe", "hub.challenge": "42", "hub.verify_token": META_VERIFY_TOKEN}
    r = await api.get("/v1/webhooks/meta", params=hub)
    assert r.status_code == 200 and r.text == "42", r.text
    r = await api.get("/v1/leads/nobody/events", params={"include_raw": "true"})
    assert r.status_code == 404, r.text
    r = await api.get("/v1/deals/nobody", params={"as_of": "2026-01-01T00:00:00Z"})
    assert r.status_code == 404, r.text


def test_every_documented_query_parameter_is_one_the_check_lets_through() -> None:
    from services.api.app import create_app

    app = create_app(Settings(nats=NatsSettings(), config=api_config()))
    document = app.openapi_schema.to_schema()
    checked = 0
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or route.path.startswith("/v1/openapi"):
            continue
        path = route.path_format
        for method, (handler, _) in route.route_handler_map.items():
            if method == "OPTIONS":
                continue
            operation = document["paths"][path][method.lower()]
            documented = {p["name"] for p in operation.get("parameters", []) if p["in"] == "query"}
            assert documented == app.state.query_names[id(handler)], (method, path)
            checked += 1
    assert checked > 30


async def test_a_control_character_in_a_query_value_is_422_naming_it(api: Client) -> None:
    # With the read models connected, PostgreSQL refused the NUL and the answer was a 500.
    for path, name in [("/v1/board", "owner"), ("/v1/alerts", "rep"), ("/v1/notifications", "recipient")]:
        r = await api.get(path, params={name: "a\x00b"})
        assert r.status_code == 422 and _fields(r) == [name], r.text


# --- an Idempotency-Key reused for another request ------------------------------------------------------------


@pytest.fixture
async def deal(api: Client) -> Client:
    assert (await api.put("/v1/pipelines/default", json=PIPELINE)).status_code == 202
    assert (await api.post("/v1/deals", json=DEAL)).status_code == 202
    return api


async def test_a_key_reused_with_another_body_is_422_naming_the_key(deal: Client, store: EventStore) -> None:
    key = {"Idempotency-Key": "call-1"}
    first = await deal.post("/v1/deals/d1/touchpoints", json=CALL, headers=key)
    assert first.status_code == 202, first.text
    before = await _events(store)
    other = await deal.post("/v1/deals/d1/touchpoints", json={**CALL, "outcome": "voicemail"}, headers=key)
    assert other.status_code == 422, other.text
    assert _fields(other) == ["Idempotency-Key"] and other.json()["error"] == "idempotency_key_reused"
    # The same request again, keys in another order: a retry, answered with the first event.
    same = await deal.post("/v1/deals/d1/touchpoints", json=dict(reversed(CALL.items())), headers=key)
    assert same.status_code == 202 and same.json()["duplicate"] is True
    assert same.json()["event_id"] == first.json()["event_id"]
    # The key on another command of the same deal is another request too.
    won = await deal.post("/v1/deals/d1/won", json={}, headers=key)
    assert won.status_code == 422 and _fields(won) == ["Idempotency-Key"], won.text
    assert await _events(store) == before


async def test_a_capture_key_reused_with_another_body_is_422_and_nothing_lands(api: Client, store: EventStore) -> None:
    key = {**FORM, "Idempotency-Key": "form-7"}
    first = await api.post("/v1/leads", json={"email": "ana@example.com"}, headers=key)
    assert first.status_code == 202, first.text
    before = await _events(store)
    other = await api.post("/v1/leads", json={"email": "bob@example.com"}, headers=key)
    assert other.status_code == 422 and _fields(other) == ["Idempotency-Key"], other.text
    form_type = {"Content-Type": "application/x-www-form-urlencoded"}
    form = await api.post("/v1/leads", content=b"email=ana%40example.com", headers={**key, **form_type})
    assert form.status_code == 422 and _fields(form) == ["Idempotency-Key"], form.text
    json_type = {"Content-Type": "application/json"}
    again = await api.post("/v1/leads", content=b'{ "email" : "ana@example.com" }', headers={**key, **json_type})
    assert again.status_code == 202 and again.json()["duplicate"] is True, again.text
    assert await _events(store) == before


async def test_a_batch_key_reused_with_another_batch_is_422_before_any_lead_lands(
    api: Client, store: EventStore
) -> None:
    key = {**FORM, "Idempotency-Key": "import-1"}
    batch = {"leads": [{"email": "a@example.com"}, {"email": "b@example.com"}]}
    first = await api.post("/v1/leads/batch", json=batch, headers=key)
    assert first.status_code == 202, first.text
    before = await _events(store)
    bigger = {"leads": [{"email": "c@example.com"}, {"email": "d@example.com"}, {"email": "e@example.com"}]}
    other = await api.post("/v1/leads/batch", json=bigger, headers=key)
    assert other.status_code == 422 and _fields(other) == ["Idempotency-Key"], other.text
    assert await _events(store) == before  # not even the third lead, whose id was free
    again = await api.post("/v1/leads/batch", json=batch, headers=key)
    assert again.status_code == 202 and all(lead["duplicate"] for lead in again.json())


async def test_an_open_deal_key_reused_with_another_body_is_422(deal: Client, store: EventStore) -> None:
    key = {"Idempotency-Key": "open-2"}
    body = {k: v for k, v in DEAL.items() if k != "deal_id"}
    assert (await deal.post("/v1/deals", json=body, headers=key)).status_code == 202
    other = await deal.post("/v1/deals", json={**body, "amount": "99"}, headers=key)
    assert other.status_code == 422 and _fields(other) == ["Idempotency-Key"], other.text


# --- health and writes against a frozen or silent log ------------------------------------------------------------


@pytest.fixture
async def own_server(tmp_path: Path, naming: Naming) -> AsyncIterator[tuple[NatsServer, Client]]:
    """The API on a nats-server of its own, which a test may freeze (SIGSTOP) and thaw."""
    from services.api.app import create_app

    server = NatsServer(tmp_path / "nats", name="frozen").start()
    settings = NatsSettings(servers=(server.url,), naming=naming, streams=StreamSettings(), publish_timeout=0.5)
    app = create_app(Settings(nats=settings, config=api_config()))
    try:
        await make_streams(settings)
        async with AsyncTestClient(app, raise_server_exceptions=False) as client:
            client.headers.update(ADMIN)
            await wait_healthy(client)
            yield server, client
    finally:
        assert server.proc is not None
        server.proc.send_signal(signal.SIGCONT)
        server.stop()


def _signal(server: NatsServer, sig: signal.Signals) -> None:
    assert server.proc is not None
    server.proc.send_signal(sig)


def _freeze(server: NatsServer) -> None:
    """SIGSTOP, and back only once every thread of the server has stopped (delivery is not instant on a busy
    machine, and a publish sent meanwhile would still be answered)."""
    _signal(server, signal.SIGSTOP)
    assert server.proc is not None
    tasks = Path(f"/proc/{server.proc.pid}/task")
    while not all(_stopped(task / "stat") for task in tasks.iterdir()):
        time.sleep(0.001)


def _stopped(stat: Path) -> bool:
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] in ("T", "t")
    except FileNotFoundError:  # a thread that ended meanwhile
        return True


async def test_health_is_503_while_nats_server_is_frozen(own_server: tuple[NatsServer, Client]) -> None:
    server, client = own_server
    assert (await client.get("/v1/health")).status_code == 200
    _freeze(server)
    r = await client.get("/v1/health")
    assert r.status_code == 503, r.text
    assert r.headers["retry-after"] == "2"
    _signal(server, signal.SIGCONT)
    await wait_healthy(client)


def _publishes(client: Client) -> tuple[Any, Callable[..., Awaitable[Any]]]:
    js = client.app.state.runtime.store.js
    return js, js.publish


async def test_a_write_sent_to_a_frozen_log_is_504_unknown_and_its_retry_finds_it(
    own_server: tuple[NatsServer, Client], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, client = own_server
    assert (await client.put("/v1/pipelines/default", json=PIPELINE)).status_code == 202
    assert (await client.post("/v1/deals", json=DEAL)).status_code == 202
    js, publish = _publishes(client)

    async def freeze_then_publish(subject: str, *args: Any, **kwargs: Any) -> Any:
        # The server freezes after the command read the deal: the publish goes out and no ack comes back.
        if ".evt." in subject:  # not the deal's key for its sealed text, which comes first
            _freeze(server)
        return await publish(subject, *args, **kwargs)

    monkeypatch.setattr(js, "publish", freeze_then_publish)
    key = {"Idempotency-Key": "call-frozen"}
    r = await client.post("/v1/deals/d1/touchpoints", json=CALL, headers=key)
    assert r.status_code == 504, r.text
    assert r.json()["error"] == "outcome_unknown" and "nothing was written" not in r.text
    monkeypatch.setattr(js, "publish", publish)
    _signal(server, signal.SIGCONT)
    await wait_healthy(client)
    again = await client.post("/v1/deals/d1/touchpoints", json=CALL, headers=key)
    assert again.status_code == 202, again.text
    history = (await client.get("/v1/deals/d1/events")).json()["events"]
    assert [e["type"] for e in history] == ["deal.opened.v1", "touchpoint.logged.v1"]
    # It landed from the frozen request (the retry found it): the answer was right not to say "nothing written".
    assert again.json()["duplicate"] is True and again.json()["event_id"] == history[1]["event_id"]


async def test_a_batch_sent_to_a_frozen_log_is_504_naming_each_unknown_lead_and_lands_once(
    own_server: tuple[NatsServer, Client], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, client = own_server
    js, publish = _publishes(client)

    async def freeze_then_publish(subject: str, *args: Any, **kwargs: Any) -> Any:
        if ".evt." in subject:  # the leads' keys are stored first (also a publish): freeze at the events
            _freeze(server)
        return await publish(subject, *args, **kwargs)

    monkeypatch.setattr(js, "publish", freeze_then_publish)
    key = {**FORM, "Idempotency-Key": "batch-frozen"}
    batch = {"leads": [{"email": f"lead{n}@example.com"} for n in range(3)]}
    r = await client.post("/v1/leads/batch", json=batch, headers=key)
    assert r.status_code == 504, r.text
    body = r.json()
    assert body["error"] == "outcome_unknown" and _fields(r) == ["leads.0", "leads.1", "leads.2"]
    assert "unknown" in body["errors"][0]["reason"] and "nothing was written" not in r.text
    monkeypatch.setattr(js, "publish", publish)
    _signal(server, signal.SIGCONT)
    await wait_healthy(client)
    again = await client.post("/v1/leads/batch", json=batch, headers=key)
    assert again.status_code == 202, again.text
    assert [lead["duplicate"] for lead in again.json()] == [True, True, True]
    for lead in again.json():
        events = (await client.get(f"/v1/leads/{lead['aggregate_id']}/events")).json()["events"]
        assert [e["event_id"] for e in events] == [lead["event_id"]]


async def test_a_lost_ack_is_found_out_before_answering(
    api: Client, store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    js, publish = _publishes(api)
    lost: set[str] = set()

    async def ack_lost_once(subject: str, *args: Any, **kwargs: Any) -> Any:
        ack = await publish(subject, *args, **kwargs)  # the event lands ...
        event_id = kwargs["headers"].get("Nats-Msg-Id")
        if ".evt." in subject and event_id not in lost:
            lost.add(event_id)
            raise nats.errors.TimeoutError  # ... and its ack never arrives
        return ack

    monkeypatch.setattr(js, "publish", ack_lost_once)
    batch = {"leads": [{"email": f"lead{n}@example.com", "source_ref": f"crm-{n}"} for n in range(4)]}
    r = await api.post("/v1/leads/batch", json=batch, headers=FORM)
    assert r.status_code == 202, r.text
    assert len(lost) == 4
    for lead in r.json():
        assert lead["duplicate"] is False  # this request wrote it
        assert [s.envelope.event_id for s in await store.read("lead", lead["aggregate_id"])] == [lead["event_id"]]


async def test_a_batch_partly_written_says_which_leads_are_in_the_log(
    api: Client, store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    js, publish = _publishes(api)
    leads = [{"email": f"lead{n}@example.com", "source_ref": f"crm-{n}"} for n in range(3)]
    refused = derived_id("web_form:website", "crm-1")

    async def one_not_stored(subject: str, *args: Any, **kwargs: Any) -> Any:
        if subject.endswith(f".{refused}"):
            raise NoStreamResponseError  # no JetStream answered: this lead was not stored
        return await publish(subject, *args, **kwargs)

    monkeypatch.setattr(js, "publish", one_not_stored)
    r = await api.post("/v1/leads/batch", json={"leads": leads}, headers=FORM)
    assert r.status_code == 504, r.text
    body = r.json()
    assert body["error"] == "partly_written" and body["errors"] == [{"field": "leads.1", "reason": "not written"}]
    assert [lead["aggregate_id"] for lead in body["written"]] == [
        derived_id("web_form:website", "crm-0"),
        derived_id("web_form:website", "crm-2"),
    ]
    assert await store.read("lead", refused) == []
    monkeypatch.setattr(js, "publish", publish)
    again = await api.post("/v1/leads/batch", json={"leads": leads}, headers=FORM)
    assert again.status_code == 202, again.text
    assert [lead["duplicate"] for lead in again.json()] == [True, False, True]


async def test_a_refusal_after_a_lost_ack_does_not_hide_that_the_event_landed(
    deal: Client, store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    js, publish = _publishes(deal)
    calls: list[str] = []

    async def lost_then_refused(subject: str, *args: Any, **kwargs: Any) -> Any:
        if ".evt." not in subject:  # the deal's key for its sealed text: not the append under test
            return await publish(subject, *args, **kwargs)
        calls.append(subject)
        if len(calls) == 1:
            await publish(subject, *args, **kwargs)  # lands, its ack lost
            raise nats.errors.TimeoutError
        if len(calls) == 2:  # the server busy for a moment (a leader election, say)
            raise APIError(code=503, description="JetStream system temporarily unavailable", err_code=10008)
        return await publish(subject, *args, **kwargs)

    monkeypatch.setattr(js, "publish", lost_then_refused)
    r = await deal.post("/v1/deals/d1/touchpoints", json=CALL)
    assert r.status_code == 202 and r.json()["duplicate"] is False, r.text
    assert len(calls) == 3
    history = await store.read("deal", "d1")
    assert [h.envelope.event_id for h in history][1:] == [r.json()["event_id"]]


async def test_while_nats_is_unreachable_nothing_is_written_and_the_answer_says_so(
    own_server: tuple[NatsServer, Client],
) -> None:
    server, client = own_server
    server.kill()

    async def unhealthy() -> bool:
        return (await client.get("/v1/health")).status_code == 503

    await eventually(unhealthy)
    r = await client.post("/v1/leads/batch", json={"leads": [{"email": "a@example.com", "source_ref": "x"}]})
    assert r.status_code == 503 and r.json()["error"] == "unavailable", r.text
    await asyncio.sleep(0)
