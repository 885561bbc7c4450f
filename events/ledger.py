"""The unit of work behind every write: read the aggregate, decide, seal, append with its version.

Every entry point (HTTP, the NATS intake, the actors, the CLI, the benchmark) writes through :class:`Ledger`,
by way of the handlers in ``events/handlers.py``. Commands are retried on a concurrent write unless the caller
pinned a version with ``If-Match``; a command carrying an ``Idempotency-Key`` that already landed returns the
first answer instead of deciding again.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import msgspec
import structlog

from events.aggregates import Rejected
from events.envelope import AggregateType, Envelope, RawPayload, Source, StoredEvent
from events.ids import uuid7
from events.personal import OWN_KEYS, TEXT_FIELDS, Vault, has_text, seal_text
from events.store import ConcurrencyError, EventStore, OutcomeUnknown, StoreUnavailable
from events.types import ContactCreated, DealOpened, Event, LeadCaptured

log = structlog.get_logger("dealstream.ledger")

Decide = Callable[[list[Envelope]], Event]


class Accepted(msgspec.Struct, frozen=True):
    """The answer to a write: the event in the log and the aggregate's version after it."""

    aggregate_type: AggregateType
    aggregate_id: str
    event_id: str
    type: str
    sequence: int
    version: int
    duplicate: bool
    occurred_at: dt.datetime


@dataclass(frozen=True, slots=True)
class Context:
    """Who asks and on whose behalf: copied into every envelope the request produces."""

    actor: str
    source: Source
    correlation_id: str
    now: dt.datetime
    idempotency_key: str | None = None
    request_sha256: str | None = None
    """With an idempotency key: the request's fingerprint, kept with its events so that a retry can be told from
    another request reusing the key."""
    causation_id: str | None = None


def new_envelope(
    ctx: Context,
    aggregate_type: AggregateType,
    aggregate_id: str,
    data: Event,
    occurred_at: dt.datetime | None = None,
    raw: RawPayload | None = None,
    event_id: str | None = None,
) -> Envelope:
    """The one place an event is wrapped for the log: ``ctx`` says who and when, ``event_id`` a derived id."""
    return Envelope(
        event_id=event_id or uuid7(),
        aggregate_type=aggregate_type,
        aggregate_id=aggregate_id,
        occurred_at=(occurred_at or ctx.now).astimezone(dt.UTC),
        recorded_at=ctx.now,
        actor=ctx.actor,
        source=ctx.source,
        correlation_id=ctx.correlation_id,
        causation_id=ctx.causation_id,
        idempotency_key=ctx.idempotency_key,
        raw=raw,
        data=data,
    )


class KeyReused(Exception):
    """An ``Idempotency-Key`` that already made an event, sent again with another request (another body)."""

    def __init__(self, event_id: str) -> None:
        super().__init__(
            f"was first used for another request (event {event_id}); a retry must repeat the first request exactly, "
            "a new request needs a new key"
        )
        self.event_id = event_id


class NotAllWritten(StoreUnavailable):
    """Leads captured together whose appends did not all land: which are in the log, which are not, which are not
    known (their publish went out unanswered). A retry with the same identities lands each missing one once."""

    def __init__(self, written: dict[int, Accepted], not_written: list[int], unknown: list[int]) -> None:
        super().__init__(
            f"{len(written)} written, {len(not_written)} not written, {len(unknown)} unknown of "
            f"{len(written) + len(not_written) + len(unknown)}"
        )
        self.written = written
        self.not_written = not_written
        self.unknown = unknown


def _check_same_request(ctx: Context, stored: StoredEvent) -> None:
    """``KeyReused`` when ``stored`` was made under the caller's idempotency key for another request."""
    if ctx.idempotency_key is None or stored.envelope.idempotency_key != ctx.idempotency_key:
        return
    # Events written before fingerprints were kept carry none: those retries are taken on trust, as before.
    if ctx.request_sha256 and stored.request_sha256 and stored.request_sha256 != ctx.request_sha256:
        raise KeyReused(stored.envelope.event_id)


def _accepted(stored: StoredEvent, version: int, duplicate: bool) -> Accepted:
    e = stored.envelope
    return Accepted(
        e.aggregate_type, e.aggregate_id, e.event_id, e.type, stored.sequence, version, duplicate, e.occurred_at
    )


class Ledger:
    """Writes to the log on behalf of the API and the intake worker."""

    def __init__(
        self, store: EventStore, vault: Vault | None = None, attempts: int = 5, cached_events: int = 100_000
    ) -> None:
        self.store = store
        self.vault = vault
        self._attempts = attempts
        # Events never change, so a history read before stays a true prefix: a command reads only what came
        # after it (usually nothing) instead of the whole history, which grows with every touchpoint.
        # Bounded by events, not aggregates (about 1 KB each): a rep's working set of deals is thousands of
        # aggregates touched in turn, and an LRU smaller than that would miss on every command.
        self._histories: OrderedDict[tuple[str, str], list[StoredEvent]] = OrderedDict()
        self._cached_events = cached_events
        self._events_held = 0

    @property
    def events_cached(self) -> int:
        """How many events the history cache holds (never more than ``cached_events``, but for one aggregate)."""
        return self._events_held

    async def history(self, aggregate_type: AggregateType, aggregate_id: str) -> list[StoredEvent]:
        """The aggregate's events in log order, the known prefix from memory and the rest from the log."""
        key = (aggregate_type, aggregate_id)
        known = self._histories.pop(key, [])
        self._events_held -= len(known)
        newer = await self.store.read(aggregate_type, aggregate_id, after=known[-1].sequence if known else 0)
        history = known + newer if newer else known
        if history:
            if (raced := self._histories.pop(key, None)) is not None:  # a concurrent command put it back first
                self._events_held -= len(raced)
            self._histories[key] = history
            self._events_held += len(history)
            while self._events_held > self._cached_events and len(self._histories) > 1:
                self._events_held -= len(self._histories.popitem(last=False)[1])
        return history

    async def execute(
        self,
        ctx: Context,
        aggregate_type: AggregateType,
        aggregate_id: str,
        decide: Decide,
        occurred_at: dt.datetime | None = None,
        if_match: int | None = None,
        event_id: str | None = None,
    ) -> Accepted:
        """Decide on the current state and append; ``if_match`` pins the version the caller saw, ``event_id``
        gives the event a derived id (a system decision made again yields the same event)."""
        for _ in range(self._attempts):
            history = await self.history(aggregate_type, aggregate_id)
            version = history[-1].sequence if history else 0
            if ctx.idempotency_key is not None:
                for stored in history:
                    if stored.envelope.idempotency_key == ctx.idempotency_key:
                        _check_same_request(ctx, stored)
                        return _accepted(stored, version, duplicate=True)
            if if_match is not None and if_match != version:
                raise ConcurrencyError(if_match, version)
            data = decide([h.envelope for h in history])
            envelope = new_envelope(ctx, aggregate_type, aggregate_id, data, occurred_at, event_id=event_id)
            envelope = await self._sealed_text(envelope, history)
            try:
                [appended] = await self.store.append(
                    [envelope],
                    expected_version=version,
                    last=history[-1] if history else None,
                    request_sha256=ctx.request_sha256,
                )
            except ConcurrencyError:
                if if_match is not None:
                    raise
                log.info("ledger.retry_on_conflict", aggregate_type=aggregate_type, aggregate_id=aggregate_id)
                continue
            self._log_append(envelope, appended.sequence)
            return Accepted(
                aggregate_type,
                aggregate_id,
                envelope.event_id,
                envelope.type,
                appended.sequence,
                appended.sequence,
                appended.duplicate,
                envelope.occurred_at,
            )
        raise ConcurrencyError(version, await self.store.version(aggregate_type, aggregate_id))

    async def _sealed_text(self, envelope: Envelope, history: list[StoredEvent]) -> Envelope:
        """The event with its free text sealed with the key of the person it is about (see events/personal.py)."""
        if self.vault is None or not has_text(envelope.data):
            return envelope
        lead_id: str | None = envelope.aggregate_id
        lead_history = [h.envelope for h in history]
        if envelope.aggregate_type in OWN_KEYS:
            # A deal's or a contact's text is about the lead it came from, if any: sealed with that lead's key.
            opened = [e.data for e in (*lead_history, envelope) if isinstance(e.data, DealOpened | ContactCreated)]
            lead_id = opened[0].lead_id if opened else None
            lead_history = [h.envelope for h in await self.history("lead", lead_id)] if lead_id else []
        found = await self.vault.text_key(envelope, lead_id, lead_history)
        if found is None:
            field = next(f for f in TEXT_FIELDS[type(envelope.data)] if getattr(envelope.data, f))
            raise Rejected(field, "the lead's personal data is erased: no text about them can be kept", 409)
        key_id, key_ref, key = found
        return seal_text(envelope, key, key_id, key_ref)

    async def capture(
        self, ctx: Context, lead_id: str, lead: LeadCaptured, occurred_at: dt.datetime, raw: RawPayload | None
    ) -> Accepted:
        """Append a lead's first event; if the lead already exists, answer with its capture (idempotent)."""
        [accepted] = await self.capture_many(ctx, [(lead_id, lead, occurred_at, raw)])
        return accepted

    async def capture_many(
        self, ctx: Context, leads: Sequence[tuple[str, LeadCaptured, dt.datetime, RawPayload | None]]
    ) -> list[Accepted]:
        """Append each lead's first event, their keys stored in one write; answers in the order given.

        Every append is seen to its end before answering: ``NotAllWritten`` says which leads are in the log when
        some are not (or not known to be), never a bare "unavailable" while some landed."""
        if ctx.request_sha256 is not None and len(leads) > 1:
            # Refused before anything is written: the leads of another request under this key must not land.
            await self._check_not_reused(ctx, [lead_id for lead_id, *_ in leads])
        envelopes = [new_envelope(ctx, "lead", lead_id, lead, at, raw) for lead_id, lead, at, raw in leads]
        if self.vault is not None:
            envelopes = await self.vault.sealed_together(envelopes)
        if len(envelopes) == 1:
            return [await self._append_capture(ctx, envelopes[0])]
        outcomes = await asyncio.gather(*(self._append_capture(ctx, e) for e in envelopes), return_exceptions=True)
        written = {n: o for n, o in enumerate(outcomes) if isinstance(o, Accepted)}
        if len(written) == len(outcomes):
            return list(written.values())
        for outcome in outcomes:
            if isinstance(outcome, BaseException) and not isinstance(outcome, StoreUnavailable):
                raise outcome
        unknown = [n for n, o in enumerate(outcomes) if isinstance(o, OutcomeUnknown)]
        not_written = [n for n, o in enumerate(outcomes) if n not in written and n not in unknown]
        if not written and not unknown:
            raise StoreUnavailable(f"none of {len(outcomes)} leads written")
        raise NotAllWritten(written, not_written, unknown)

    async def _check_not_reused(self, ctx: Context, lead_ids: list[str]) -> None:
        firsts = await asyncio.gather(*(self.store.first("lead", lead_id) for lead_id in lead_ids))
        for stored in firsts:
            if stored is not None:
                _check_same_request(ctx, stored)

    async def _append_capture(self, ctx: Context, envelope: Envelope) -> Accepted:
        try:
            [appended] = await self.store.append([envelope], expected_version=0, request_sha256=ctx.request_sha256)
        except ConcurrencyError:
            history = await self.store.read("lead", envelope.aggregate_id)
            _check_same_request(ctx, history[0])
            log.info(
                "ledger.capture_duplicate", lead_id=envelope.aggregate_id, first_event_id=history[0].envelope.event_id
            )
            return _accepted(history[0], history[-1].sequence, duplicate=True)
        self._log_append(envelope, appended.sequence)
        return Accepted(
            "lead",
            envelope.aggregate_id,
            envelope.event_id,
            envelope.type,
            appended.sequence,
            appended.sequence,
            appended.duplicate,
            envelope.occurred_at,
        )

    def _log_append(self, envelope: Envelope, sequence: int) -> None:
        log.info(
            "event.appended",
            event_id=envelope.event_id,
            type=envelope.type,
            subject=self.store.naming.aggregate_subject(envelope.aggregate_type, envelope.aggregate_id),
            sequence=sequence,
        )
