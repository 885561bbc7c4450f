"""The notify worker's actor: addresses waiting notices, sends due deliveries by webhook or e-mail, retries with
backoff, records each try.

A notice goes to whoever owns its lead or deal when the actor addresses it (see :func:`projections.notices.address`):
one nobody owns waits for routing or a manual assignment, up to ``unassigned_wait_seconds``, then goes to the
fallback. Its text, written then for its recipient, names the lead: the actor logs ids only.

Webhooks get the message as JSON with ``Dealstream-Event-Id`` (receivers deduplicate on it) and
``Dealstream-Signature`` (see :func:`projections.notify.signature`); any 2xx is success. A failure is
retried after a doubling wait up to the cap, until ``max_attempts``; then the delivery is ``failed``. A
delivery due inside its recipient's quiet hours waits for their end. Run one notify process: a delivery in
flight when the process dies is sent again on restart (at least once), which the event id lets a receiver
see through.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import smtplib
import time
from email.message import EmailMessage
from typing import Any

import httpx
import msgspec
import psycopg

from events.config import NatsSettings
from events.ledger import Ledger
from events.logs import redact_values
from projections.notices import address
from projections.notify import NotifyRules, Smtp, deliveries, message, signature
from projections.notify_store import (
    Attempt,
    DeliveryRow,
    NotifyProjection,
    Waiting,
    addressed,
    defer,
    due_deliveries,
    record_attempt,
    waiting_notices,
)
from workers.actor import Actor
from workers.engine import ProjectionEngine
from workers.settings import Secrets


def _send_mail(smtp: Smtp, delivery: DeliveryRow, secrets: Secrets) -> None:
    mail = EmailMessage()
    mail["From"] = smtp.sender
    mail["To"] = delivery.target
    mail["Subject"] = f"[Dealstream] {delivery.message.text.splitlines()[0]}"[:200]
    mail["Message-ID"] = f"<{delivery.delivery_id}@dealstream>"
    mail.set_content(delivery.message.text)
    with smtplib.SMTP(smtp.host, smtp.port, timeout=10) as client:
        if smtp.starttls:
            client.starttls()
        if smtp.username:
            client.login(smtp.username, secrets.get(smtp.password_env))
        client.send_message(mail)


class NotifyActor(Actor):
    def __init__(
        self,
        engine: ProjectionEngine,
        nats_settings: NatsSettings,
        database_url: str,
        poll: float = 0.25,
        secrets: Secrets | None = None,
    ) -> None:
        """``secrets`` hold the variables the rules name (the webhook secret, the SMTP password): the process's
        environment when not given."""
        super().__init__(engine, nats_settings, database_url, poll)
        projection = engine.projection
        assert isinstance(projection, NotifyProjection)
        self.rules: NotifyRules = projection.rules
        self.build = projection.build
        self.secrets = secrets if secrets is not None else Secrets.from_env()
        self.secret = self.secrets.get(self.rules.secret_env)
        redact_values([self.secret])
        self.http = httpx.AsyncClient(timeout=10.0)
        self.sent = 0
        self.failed = 0

    async def close(self) -> None:
        await self.http.aclose()

    async def tick(self, conn: psycopg.AsyncConnection[Any], ledger: Ledger) -> None:
        now = dt.datetime.now(dt.UTC)
        for waiting in await waiting_notices(conn, self.build):
            await self._address(conn, waiting, now)
        for delivery in await due_deliveries(conn, now):
            recipient = self.rules.recipients.get(delivery.recipient)
            quiet = recipient.quiet_hours.release(now) if recipient and recipient.quiet_hours else None
            if quiet is not None:
                await defer(conn, delivery.delivery_id, quiet)
                self.log.info("notify.quiet", delivery_id=delivery.delivery_id, until=quiet.isoformat())
                continue
            await self._attempt(conn, delivery)

    async def _address(self, conn: psycopg.AsyncConnection[Any], waiting: Waiting, now: dt.datetime) -> None:
        """Choose who hears a notice now (its subject's current owner), write it for them, ask for its sends."""
        notice = waiting.notice
        rules = self.rules
        waited = now - waiting.created_at
        to = address(notice, waiting.subject, waited, rules.unassigned_wait, rules.fallback, rules.managers)
        if to is None:
            return  # nobody owns the subject yet: wait for routing or a manual assignment
        sends = []
        if to.recipient is not None:
            sends = deliveries(self.rules, message(self.rules, notice, waiting.subject, to, now))
        if await addressed(conn, waiting, to, sends, now):
            # Ids only: the text names the lead.
            log = self.log.warning if to.recipient is None or not sends else self.log.info
            log(
                "notify.addressed",
                event_id=notice.event_id,
                subject=f"{notice.subject_type}/{notice.subject_id}",
                recipient=to.recipient,
                why=to.why,
                deliveries=len(sends),
            )

    async def _attempt(self, conn: psycopg.AsyncConnection[Any], delivery: DeliveryRow) -> None:
        n = delivery.attempts + 1
        started, at = time.perf_counter(), dt.datetime.now(dt.UTC)
        status: int | None = None
        error: str | None = None
        try:
            if delivery.channel == "webhook":
                body = msgspec.json.encode(delivery.message)
                headers = {
                    "Content-Type": "application/json",
                    "Dealstream-Event-Id": delivery.event_id,
                    "Dealstream-Delivery-Id": delivery.delivery_id,
                    "Dealstream-Signature": signature(self.secret, int(time.time()), body),
                }
                response = await self.http.post(delivery.target, content=body, headers=headers)
                status = response.status_code
                if not 200 <= status < 300:
                    error = f"HTTP {status}"
            else:
                assert self.rules.smtp is not None
                await asyncio.to_thread(_send_mail, self.rules.smtp, delivery, self.secrets)
        except (httpx.HTTPError, OSError, smtplib.SMTPException) as exc:
            error = f"{type(exc).__name__}: {exc}"[:1000]
        ok = error is None
        attempt = Attempt(
            n=n, at=at, ok=ok, status=status, error=error, duration_ms=(time.perf_counter() - started) * 1000
        )
        if ok:
            state, next_at = "delivered", at
            self.sent += 1
        elif n >= self.rules.max_attempts:
            state, next_at = "failed", at
            self.failed += 1
        else:
            state, next_at = "pending", at + self.rules.backoff(n)
        await record_attempt(conn, delivery, attempt, state, next_at)  # type: ignore[arg-type]
        self.log.info(
            "notify.attempt",
            delivery_id=delivery.delivery_id,
            event_id=delivery.event_id,
            recipient=delivery.recipient,
            channel=delivery.channel,
            attempt=n,
            ok=ok,
            error=error,
            state=state,
        )
