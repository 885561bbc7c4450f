"""Webhook subscriptions end to end: the real API, the real log, the subscriptions worker and a real local receiver."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import hmac
import http.server
import json
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import msgspec
import psycopg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from nats.js import JetStreamContext

from events.config import NatsSettings
from events.ids import uuid7
from events.store import EventStore
from events.subjects import Naming
from events.types import DealOpened, DealStageChanged, LeadCaptured
from projections.subscriptions import DeliveryPolicy
from projections.subscriptions_store import SubscriptionsProjection
from services.config import Settings
from tests.builders import envelope
from tests.conftest import ADMIN_KEY, FORM_KEY, api_config, wait_healthy
from tests.projection_fixtures import FAST, wait_caught_up
from tests.waiting import eventually
from workers.engine import ProjectionEngine
from workers.subscriptions import SubscriptionsActor

pytestmark = pytest.mark.integration

Client = AsyncTestClient[Litestar]


class Receiver(http.server.ThreadingHTTPServer):
    """Answers 500 to the first request for each event id in ``fail_once``, else 200; keeps what it was sent."""

    def __init__(self) -> None:
        self.fail_once: set[str] = set()
        self.fail_always: set[str] = set()
        self.requests: list[tuple[str, dict[str, str], bytes, int]] = []
        super().__init__(("127.0.0.1", 0), _Handler)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{path}"

    def received(self, path: str, status: int = 200) -> list[tuple[dict[str, str], bytes]]:
        return [(h, b) for p, h, b, s in self.requests if p == f"/{path}" and s == status]


class _Handler(http.server.BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        event_id = self.headers["Dealstream-Event-Id"]
        status = 200
        if self.path in self.server.fail_always:
            status = 500
        elif event_id in self.server.fail_once:
            self.server.fail_once.discard(event_id)
            status = 500
        self.server.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body, status))
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
async def api(nats_settings: NatsSettings, pg_dsn: str) -> AsyncIterator[Client]:
    from services.api.app import create_app

    # Loopback is refused unless allow-listed: the tests' receiver listens on it.
    config = msgspec.structs.replace(api_config(), subscription_allowed_networks=["127.0.0.0/8"])
    app = create_app(Settings(nats=nats_settings, config=config, database_url=pg_dsn))
    async with AsyncTestClient(app, raise_server_exceptions=False) as client:
        client.headers["Authorization"] = f"Bearer {ADMIN_KEY}"
        await wait_healthy(client)
        yield client


@contextlib.asynccontextmanager
async def subscriptions_worker(nats_settings: NatsSettings, dsn: str) -> AsyncIterator[SubscriptionsActor]:
    policy = DeliveryPolicy(max_attempts=3, backoff_initial_seconds=0.05, backoff_max_seconds=0.2)
    engine = ProjectionEngine(SubscriptionsProjection(policy=policy), nats_settings, dsn, settings=FAST)
    actor = SubscriptionsActor(engine, nats_settings, dsn, poll=0.05)
    stop = asyncio.Event()
    task = asyncio.gather(engine.run(stop), actor.run(stop))
    try:
        yield actor
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


def signed_by(secret: str, headers: dict[str, str], body: bytes) -> bool:
    t, v1 = (part.split("=", 1)[1] for part in headers["dealstream-signature"].split(","))
    return hmac.compare_digest(v1, hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest())


async def test_a_subscription_gets_exactly_its_events_signed_retried_recorded_and_replayed(
    api: Client,
    store: EventStore,
    nats_conn: tuple[Any, JetStreamContext],
    nats_settings: NatsSettings,
    naming: Naming,
    pg_dsn: str,
    receiver: Receiver,
) -> None:
    _, js = nats_conn
    now = dt.datetime.now(dt.UTC)
    made = await api.post(
        "/v1/subscriptions", json={"url": receiver.url("stages"), "event_types": ["deal.stage_changed.v1"]}
    )
    assert made.status_code == 201, made.text
    stages = made.json()
    deal1, deal2 = uuid7(), uuid7()
    filtered = await api.post(
        "/v1/subscriptions",
        json={"url": receiver.url("deal2"), "event_types": ["deal.*"], "filter": {"aggregate_id": deal2}},
    )
    assert filtered.status_code == 201, filtered.text
    only_deal2 = filtered.json()
    listed = (await api.get("/v1/subscriptions")).json()
    assert [s["subscription_id"] for s in listed] == [
        stages["subscription"]["subscription_id"],
        only_deal2["subscription"]["subscription_id"],
    ]
    assert all("secret" not in s for s in listed)

    opened = {
        d: envelope(DealOpened(pipeline_id="p", stage="new", amount=1, currency="EUR"), "deal", d, now)
        for d in (deal1, deal2)
    }
    moved = {d: envelope(DealStageChanged(from_stage="new", to_stage="won"), "deal", d, now) for d in (deal1, deal2)}
    receiver.fail_once.add(moved[deal1].event_id)
    for d in (deal1, deal2):
        await store.append([opened[d]], 0)
        await store.append([moved[d]], None)
    lead = uuid7()
    await store.append([envelope(LeadCaptured(email="x@example.com"), "lead", lead, now)], 0)

    async with subscriptions_worker(nats_settings, pg_dsn) as actor:

        async def all_sent() -> bool:
            return actor.sent == 4

        await eventually(all_sent)
        await wait_caught_up(js, pg_dsn, naming, actor.engine.projection)

        # Exactly the stage changes, each signed with the subscription's secret (a retried one comes after later
        # events: deliveries are at least once, in log order by their sequence header, not by arrival).
        got = sorted(receiver.received("stages"), key=lambda r: int(r[0]["dealstream-sequence"]))
        assert [json.loads(b)["event_id"] for _, b in got] == [moved[deal1].event_id, moved[deal2].event_id]
        assert all(signed_by(stages["secret"], h, b) for h, b in got)
        assert not signed_by(only_deal2["secret"], *got[0])
        body = json.loads(got[0][1])
        assert body["data"]["type"] == "deal.stage_changed.v1" and body["aggregate_id"] == deal1
        # The filter let through deal2's events of every deal type and nothing of deal1.
        got2 = receiver.received("deal2")
        assert [json.loads(b)["event_id"] for _, b in got2] == [opened[deal2].event_id, moved[deal2].event_id]
        assert all(signed_by(only_deal2["secret"], h, b) for h, b in got2)

        # The receiver's 500 was retried and every attempt recorded.
        assert [h["dealstream-event-id"] for _, h, _, s in receiver.requests if s == 500] == [moved[deal1].event_id]
        sid = stages["subscription"]["subscription_id"]
        recorded = (await api.get(f"/v1/subscriptions/{sid}/deliveries")).json()
        assert sorted((d["event_id"], d["state"], d["attempts"]) for d in recorded) == sorted(
            [(moved[deal1].event_id, "delivered", 2), (moved[deal2].event_id, "delivered", 1)]
        )
        first = next(d for d in recorded if d["event_id"] == moved[deal1].event_id)
        assert [(a["ok"], a["status"], a["error"]) for a in first["history"]] == [
            (False, 500, "HTTP 500"),
            (True, 200, None),
        ]

        # Replay from deal2's stage change re-sends it (and only what matches from there on).
        sequence = int(got[1][0]["dealstream-sequence"])
        replayed = await api.post(f"/v1/subscriptions/{sid}/replay", json={"from_sequence": sequence})
        assert replayed.status_code == 202, replayed.text

        async def resent() -> bool:
            return actor.sent == 5

        await eventually(resent)
        again = receiver.received("stages")[2:]
        assert [json.loads(b)["event_id"] for _, b in again] == [moved[deal2].event_id]
        assert again[0][0]["dealstream-delivery-id"] != got[1][0]["dealstream-delivery-id"]
        assert signed_by(stages["secret"], *again[0])
        recorded = (await api.get(f"/v1/subscriptions/{sid}/deliveries")).json()
        assert recorded[-1]["replay_id"] == replayed.json()["replay_id"]

        # Every change to a subscription is in its audit trail, with who made it.
        async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
            cur = await conn.execute(
                "SELECT action, actor FROM webhook_subscription_audit WHERE subscription_id = %s ORDER BY n", (sid,)
            )
            assert await cur.fetchall() == [("created", "admin"), ("replay", "admin")]

        # Deleted: gone from the list; what it would have received is not sent.
        assert (await api.delete(f"/v1/subscriptions/{sid}")).status_code == 204
        assert (await api.get(f"/v1/subscriptions/{sid}")).status_code == 404
        later = envelope(DealStageChanged(from_stage="won", to_stage="new"), "deal", deal1, now)
        await store.append([later], None)
        await wait_caught_up(js, pg_dsn, naming, actor.engine.projection)
        assert actor.sent == 5 and len(receiver.received("stages")) == 3


async def test_a_receiver_that_keeps_failing_gets_max_attempts_then_the_delivery_is_failed(
    api: Client,
    store: EventStore,
    nats_settings: NatsSettings,
    pg_dsn: str,
    receiver: Receiver,
) -> None:
    receiver.fail_always.add("/down")
    made = (await api.post("/v1/subscriptions", json={"url": receiver.url("down"), "event_types": ["lead.*"]})).json()
    lead = uuid7()
    await store.append([envelope(LeadCaptured(email="x@example.com"), "lead", lead, dt.datetime.now(dt.UTC))], 0)
    async with subscriptions_worker(nats_settings, pg_dsn) as actor:

        async def gave_up() -> bool:
            return actor.failed == 1

        await eventually(gave_up)
    sid = made["subscription"]["subscription_id"]
    [delivery] = (await api.get(f"/v1/subscriptions/{sid}/deliveries")).json()
    assert delivery["state"] == "failed" and delivery["attempts"] == 3
    assert [a["status"] for a in delivery["history"]] == [500, 500, 500]
    assert len(receiver.received("down", 500)) == 3


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "ftp://example.com/x", "event_types": ["deal.*"]}, "url"),
        ({"url": "http://example.com/x", "event_types": ["Deal Stage!"]}, "event_types.0"),
        ({"url": "http://example.com/x", "event_types": []}, "event_types"),
        ({"url": "http://example.com/x", "event_types": ["deal.*"], "filter": {"colour": "red"}}, "filter.colour"),
        (
            {"url": "http://example.com/x", "event_types": ["deal.*"], "filter": {"aggregate_id": "a b"}},
            "filter.aggregate_id",
        ),
        ({"event_types": ["deal.*"]}, "url"),
    ],
)
async def test_bad_input_is_a_422_naming_the_field(api: Client, body: dict[str, Any], field: str) -> None:
    answer = await api.post("/v1/subscriptions", json=body)
    assert answer.status_code == 422, answer.text
    assert field in [e["field"] for e in answer.json()["errors"]]


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",  # cloud metadata
        "http://10.0.0.7/hook",
        "http://[::1]:8080/hook",  # loopback v6: only 127.0.0.0/8 is allow-listed here
        "http://0.0.0.0/hook",
    ],
)
async def test_a_private_target_is_refused(api: Client, url: str) -> None:
    answer = await api.post("/v1/subscriptions", json={"url": url, "event_types": ["*"]})
    assert answer.status_code == 422, answer.text
    assert [e["field"] for e in answer.json()["errors"]] == ["url"]
    assert (await api.get("/v1/subscriptions")).json() == []


async def test_loopback_is_refused_without_the_allow_list(nats_settings: NatsSettings, pg_dsn: str) -> None:
    from services.api.app import create_app

    app = create_app(Settings(nats=nats_settings, config=api_config(), database_url=pg_dsn))
    async with AsyncTestClient(app, raise_server_exceptions=False) as client:
        client.headers["Authorization"] = f"Bearer {ADMIN_KEY}"
        await wait_healthy(client)
        answer = await client.post("/v1/subscriptions", json={"url": "http://127.0.0.1:9/x", "event_types": ["*"]})
        assert answer.status_code == 422 and answer.json()["errors"][0]["field"] == "url"


async def test_subscriptions_need_their_scope_and_replay_checks_its_body(api: Client, receiver: Receiver) -> None:
    made = (await api.post("/v1/subscriptions", json={"url": receiver.url("x"), "event_types": ["*"]})).json()
    sid = made["subscription"]["subscription_id"]
    bad = await api.post(f"/v1/subscriptions/{sid}/replay", json={"from_sequence": 0})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "from_sequence"
    missing = await api.post(f"/v1/subscriptions/{uuid7()}/replay", json={"from_sequence": 1})
    assert missing.status_code == 404
    public = {"Authorization": f"Bearer {FORM_KEY}"}
    assert (await api.get("/v1/subscriptions", headers=public)).status_code == 403
    assert (await api.delete(f"/v1/subscriptions/{sid}", headers=public)).status_code == 403
