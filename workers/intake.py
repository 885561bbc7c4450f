"""The intake worker: leads that integrations publish on NATS, validated into the log or dead-lettered.

Integrations that cannot call HTTP publish a ``InboxLead`` as JSON to ``<prefix>.in.lead`` (JetStream
stream ``<PREFIX>_INBOX``). Each valid message becomes a ``lead.captured.v1`` event on the lead derived
from (integration, source_ref), so a republished message is a no-op; an invalid one goes to
``<prefix>.dlq.intake`` with the reason in its headers and is never retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import signal
from typing import Annotated

import msgspec
import nats.errors
import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import APIError, NotFoundError

from events.commands import CaptureLeads, NewLead
from events.config import NatsSettings, connect
from events.dead_letters import dead_letter_headers
from events.envelope import RawPayload
from events.handlers import capture_leads
from events.ids import InvalidId, check_id, derived_id, uuid7
from events.ledger import Context, Ledger
from events.personal import Vault
from events.store import EventStore, StoreUnavailable
from events.streams import MESSAGE_DELETE_DENIED, StreamsNotReady, require_streams
from events.subjects import Naming
from events.types import LeadCaptured, Ref, attribute_problems, with_marketing_ids

log = structlog.get_logger("dealstream.intake")

Integration = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
MAX_FUTURE = dt.timedelta(minutes=5)
SET_BY_DEALSTREAM = ("sealed", "key_ref", "email_domain", "has_phone")
"""Fields of ``LeadCaptured`` that sealing fills in; a message that sets them is refused."""


class InboxLead(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A lead published on NATS: who sent it, the source's own id, its business time, and the lead."""

    integration: Integration
    source_ref: Ref
    occurred_at: dt.datetime
    lead: LeadCaptured


class Rejection(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_decoder = msgspec.json.Decoder(InboxLead)


def validate(data: bytes, now: dt.datetime) -> InboxLead:
    """Decode and check one inbox message; ``Rejection`` says why it cannot enter the log."""
    try:
        item = _decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise Rejection(str(exc)) from exc
    # msgspec raises these, not DecodeError, for invalid UTF-8 in a string and for nesting a thousand deep; let
    # through, they would fail the message again on every redelivery instead of dead-lettering it.
    except UnicodeDecodeError as exc:
        raise Rejection(f"not valid UTF-8 (byte {exc.start})") from None
    except RecursionError:
        raise Rejection("nested too deeply") from None
    try:
        check_id(item.integration, "integration")
        check_id(item.source_ref, "source_ref", "ref")
        if item.lead.form_id is not None:
            check_id(item.lead.form_id, "lead.form_id", "ref")
    except InvalidId as exc:
        raise Rejection(f"{exc.reason} - at `$.{exc.field}`") from None
    if ours := [name for name in SET_BY_DEALSTREAM if getattr(item.lead, name) is not None]:
        # A capture that arrives with ``sealed`` set is not sealed again: the sender's personal fields would enter
        # the log in clear, under its own ``key_ref`` (a key-value entry the vault reads: '>' failed every read).
        raise Rejection("; ".join(f"set by Dealstream, not by the sender - at `$.lead.{name}`" for name in ours))
    if item.occurred_at.tzinfo is None:
        raise Rejection("occurred_at must carry a time zone offset - at `$.occurred_at`")
    problems = attribute_problems("lead.campaign", item.lead.campaign)
    problems += attribute_problems("lead.answers", item.lead.answers)
    if problems:
        raise Rejection("; ".join(f"{reason} - at `$.{field}`" for field, reason in problems))
    if item.occurred_at > now + MAX_FUTURE:
        raise Rejection("occurred_at is in the future - at `$.occurred_at`")
    return item


def to_command(item: InboxLead, data: bytes) -> CaptureLeads:
    """The capture of a valid inbox message, on the lead its (integration, source_ref) derives."""
    lead = NewLead(
        lead_id=derived_id("nats", item.integration, item.source_ref),
        lead=with_marketing_ids(msgspec.structs.replace(item.lead, source_ref=item.source_ref)),
        occurred_at=item.occurred_at,
        raw=RawPayload(content_type="application/json", body=data.decode("utf-8", "replace")),
    )
    return CaptureLeads(leads=[lead])


class Intake:
    """Consumes the inbox with a durable pull consumer; acks only after the event or dead letter is stored."""

    def __init__(self, js: JetStreamContext, store: EventStore, naming: Naming, batch: int = 256) -> None:
        self._js = js
        self._naming = naming
        self._batch = batch
        self._ledger = Ledger(store, Vault(js, naming))

    @property
    def durable(self) -> str:
        return f"{self._naming.prefix}_intake"

    async def subscribe(self) -> JetStreamContext.PullSubscription:
        config = ConsumerConfig(
            durable_name=self.durable,
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=30,
            max_deliver=-1,
            filter_subject=self._naming.inbox_subject("lead"),
            max_ack_pending=self._batch * 4,
        )
        return await self._js.pull_subscribe(
            self._naming.inbox_subject("lead"), durable=self.durable, stream=self._naming.inbox_stream, config=config
        )

    async def handle(self, msg: Msg) -> None:
        now = dt.datetime.now(dt.UTC)
        meta = msg.metadata
        try:
            item = validate(msg.data, now)
        except Rejection as exc:
            await self._dead_letter(msg, exc.reason)
            await self._erase(msg)
            await msg.ack()
            return
        ctx = Context(
            actor=f"integration:{item.integration}",
            source="nats",
            correlation_id=(msg.headers or {}).get("Nats-Msg-Id") or uuid7(),
            now=now,
        )
        [accepted] = await capture_leads(self._ledger, ctx, to_command(item, msg.data))
        if accepted.duplicate:
            log.info("intake.duplicate", lead_id=accepted.aggregate_id, inbox_sequence=meta.sequence.stream)
        else:
            log.info(
                "intake.captured",
                lead_id=accepted.aggregate_id,
                event_id=accepted.event_id,
                sequence=accepted.sequence,
                inbox_sequence=meta.sequence.stream,
            )
        await self._erase(msg)
        await msg.ack()

    async def _erase(self, msg: Msg) -> None:
        """Overwrite the inbox message in nats-server's files: what the integration sent is in clear there, and
        the log now holds it sealed (an ack alone would leave its bytes until the block is compacted)."""
        meta = msg.metadata
        try:
            await self._js.delete_msg(meta.stream, meta.sequence.stream)
        except NotFoundError:
            pass  # erased already, by an earlier delivery of the same message
        except APIError as exc:
            if exc.err_code != MESSAGE_DELETE_DENIED:
                raise
            # An inbox made with deny_delete: the message stays until max_age; say so rather than stall intake.
            log.warning("intake.inbox_not_erased", inbox_sequence=meta.sequence.stream, reason=exc.description)

    async def _dead_letter(self, msg: Msg, reason: str) -> None:
        meta = msg.metadata
        # The reason names the field, never its value; the body, which may hold personal data in clear, is not
        # kept (the inbox message is then erased): the integration learns why and sends it again, fixed.
        msg_id = f"intake-{meta.stream}-{meta.sequence.stream}"
        headers = dead_letter_headers(msg_id, reason, msg.subject, meta.sequence.stream, origin="intake")
        await self._js.publish(
            self._naming.dead_letter_subject("intake"),
            b"",
            headers=headers,
            stream=self._naming.dead_letter_stream,
        )
        log.warning("intake.dead_lettered", reason=reason, inbox_sequence=meta.sequence.stream)

    async def run(self, stop: asyncio.Event) -> None:
        sub = await self.subscribe()
        try:
            await self._consume(sub, stop)
        finally:
            # nats-py's drain waits forever on a pull subscription's queue; unsubscribing first lets it finish.
            await sub.unsubscribe()

    async def _consume(self, sub: JetStreamContext.PullSubscription, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                msgs = await sub.fetch(self._batch, timeout=1.0)
            except TimeoutError:  # nats.errors.TimeoutError is one too
                # nats-py sometimes reports an empty fetch as a bare asyncio.TimeoutError.
                continue
            for msg in msgs:
                try:
                    await self.handle(msg)
                except (StoreUnavailable, nats.errors.Error) as exc:
                    # The log is unreachable: leave the message for redelivery, slow down, keep order.
                    log.warning("intake.retry_later", error=str(exc) or type(exc).__name__)
                    with contextlib.suppress(Exception):
                        await msg.nak(delay=1.0)
                    await asyncio.sleep(1.0)


async def main(settings: NatsSettings) -> None:
    nc, js = await connect(settings, "dealstream-intake")
    try:
        # Checked, never changed: only the administrator changes the log (`dealstream streams`).
        await require_streams(js, settings.naming, settings.streams)
    except StreamsNotReady:
        await nc.close()
        raise
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info("intake.started", subject=settings.naming.inbox_subject("lead"))
    try:
        await Intake(js, EventStore(nc, js, settings.naming, settings.publish_timeout), settings.naming).run(stop)
    finally:
        await nc.drain()
        log.info("intake.stopped")
