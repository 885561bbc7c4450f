"""The notify worker against real servers, a real local HTTP receiver and a real local SMTP server."""

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
from email import message_from_bytes
from typing import Any

import psycopg
import pytest
from aiosmtpd.controller import Controller
from nats.js import JetStreamContext

from devstack.servers import free_port
from events.config import NatsSettings
from events.store import EventStore
from events.subjects import Naming
from events.types import AlertRaised, LeadAssigned, LeadCaptured, LeadQualified
from projections.notify import NotifyRules, Recipient, Smtp
from projections.notify_store import NotifyProjection, list_deliveries
from tests.builders import envelope
from tests.projection_fixtures import FAST, wait_caught_up
from tests.waiting import eventually
from workers.engine import ProjectionEngine
from workers.notify import NotifyActor

pytestmark = pytest.mark.integration

SECRET = "test-notify-secret"


class Receiver(http.server.ThreadingHTTPServer):
    """Answers 500 to the first ``failures`` requests of each event, then 200; keeps what it was sent."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.requests: list[tuple[dict[str, str], bytes, int]] = []
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        event_id = self.headers["Dealstream-Event-Id"]
        tries = sum(1 for headers, _, _ in self.server.requests if headers["dealstream-event-id"] == event_id)
        status = 500 if tries < self.server.failures else 200
        self.server.requests.append(({k.lower(): v for k, v in self.headers.items()}, body, status))
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver(failures=3)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


class Inbox:
    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope.content)
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox, port = Inbox(), free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield inbox, port
    controller.stop()


@contextlib.asynccontextmanager
async def notify_worker(
    nats_settings: NatsSettings, dsn: str, rules: NotifyRules, instance: str = ""
) -> AsyncIterator[NotifyActor]:
    engine = ProjectionEngine(NotifyProjection(rules, instance), nats_settings, dsn, settings=FAST)
    actor = NotifyActor(engine, nats_settings, dsn, poll=0.05)
    stop = asyncio.Event()
    task = asyncio.gather(engine.run(stop), actor.run(stop))
    try:
        yield actor
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def test_alerts_reach_the_rep_by_webhook_after_retries_and_by_mail_once(
    store: EventStore,
    nats_conn: tuple[Any, JetStreamContext],
    nats_settings: NatsSettings,
    naming: Naming,
    pg_dsn: str,
    receiver: Receiver,
    smtp: tuple[Inbox, int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, js = nats_conn
    inbox, smtp_port = smtp
    monkeypatch.setenv("DEALSTREAM_NOTIFY_SECRET", SECRET)
    rules = NotifyRules(
        recipients={"ana": Recipient(webhook=receiver.url, email="ana@example.com")},
        smtp=Smtp(host="127.0.0.1", port=smtp_port, sender="alerts@example.com"),
        backoff_initial_seconds=0.05,
        backoff_max_seconds=0.2,
    )
    now = dt.datetime.now(dt.UTC)
    # The alert reaches whoever owns its lead when it is sent.
    owned = {"aggregate_type": "lead", "aggregate_id": "l1", "occurred_at": now}
    await store.append([envelope(LeadCaptured(email="l1@example.com"), **owned)], 0)  # type: ignore[arg-type]
    await store.append([envelope(LeadAssigned(owner="ana"), **owned)], None)  # type: ignore[arg-type]
    alert = AlertRaised(
        kind="first_touch", policy="speed", subject_type="lead", subject_id="l1", deadline=now, rep=None
    )
    raised = envelope(alert, aggregate_type="alert", aggregate_id="a1", occurred_at=now)
    await store.append([raised], expected_version=0)
    # A qualified lead is announced to its owner.
    lead = {"aggregate_type": "lead", "aggregate_id": "l2", "occurred_at": now}
    await store.append([envelope(LeadCaptured(email="l2@example.com"), **lead)], 0)  # type: ignore[arg-type]
    await store.append([envelope(LeadAssigned(owner="ana"), **lead)], None)  # type: ignore[arg-type]
    qualified = envelope(LeadQualified(score=72.5, reason="fit"), **lead)  # type: ignore[arg-type]
    await store.append([qualified], None)
    # Older than max_age_hours when folded: history, not news; nobody is paged for it.
    old = envelope(
        LeadQualified(score=90), aggregate_type="lead", aggregate_id="l2", occurred_at=now - dt.timedelta(days=3)
    )
    await store.append([old], None)

    async with notify_worker(nats_settings, pg_dsn, rules) as actor:

        async def delivered() -> bool:
            return actor.sent == 4

        await eventually(delivered)
        await wait_caught_up(js, pg_dsn, naming, actor.engine.projection)

    # The alert's webhook failed three times and went through on the fourth attempt, same event id each time.
    alert_posts = [r for r in receiver.requests if r[0]["dealstream-event-id"] == raised.event_id]
    assert [status for _, _, status in alert_posts] == [500, 500, 500, 200]
    headers, body, _ = alert_posts[-1]
    t, v1 = (part.split("=", 1)[1] for part in headers["dealstream-signature"].split(","))
    assert hmac.compare_digest(v1, hmac.new(SECRET.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest())
    message = json.loads(body)
    assert message["type"] == "alert.raised.v1" and message["recipient"] == "ana" and "l1" in message["text"]
    qualified_posts = [r for r in receiver.requests if r[0]["dealstream-event-id"] == qualified.event_id]
    assert [status for _, _, status in qualified_posts] == [500, 500, 500, 200]
    assert json.loads(qualified_posts[-1][1])["type"] == "lead.qualified.v1"
    assert sorted(message_from_bytes(m)["To"] for m in inbox.messages) == ["ana@example.com"] * 2

    async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
        rows = await list_deliveries(conn, recipient="ana", event_id=raised.event_id)
    by_channel = {r.channel: r for r in rows}
    assert by_channel["webhook"].state == "delivered" and by_channel["webhook"].attempts == 4
    assert [a.ok for a in by_channel["webhook"].history] == [False, False, False, True]
    assert by_channel["webhook"].history[0].error == "HTTP 500"
    assert by_channel["email"].state == "delivered" and len(by_channel["email"].history) == 1

    # Restarted, and as a second build replaying the whole log: nothing is asked for or sent again.
    async with notify_worker(nats_settings, pg_dsn, rules) as actor:
        await wait_caught_up(js, pg_dsn, naming, actor.engine.projection)
        target = actor.ticks + 3

        async def polled() -> bool:
            return actor.ticks >= target

        await eventually(polled)
    async with notify_worker(nats_settings, pg_dsn, rules, "rebuild") as actor:
        await wait_caught_up(js, pg_dsn, naming, actor.engine.projection)
    async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
        assert len(await list_deliveries(conn)) == 4
    assert len(receiver.requests) == 8 and len(inbox.messages) == 2
