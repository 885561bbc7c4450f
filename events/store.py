"""The event store: append to one aggregate with an expected version, read an aggregate back in order.

An aggregate's version is the stream sequence of its last event (0: no events yet). Appends are guarded
with ``Nats-Expected-Last-Subject-Sequence``, so two writers deciding on the same version cannot both
succeed. A retried append whose first attempt landed is recognised by its event id and answered with
the first attempt's sequence (see LIMITS.md: the server reports 10071, not a duplicate, in that case).
Every event carries its link in the aggregate's hash chain in the ``Dealstream-Chain`` header (see
:mod:`events.chain`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import msgspec
import nats.errors
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.errors import APIError, NoStreamResponseError, NotFoundError

from events.chain import CHAIN_HEADER, GENESIS, chain_link
from events.codec import decode, encode
from events.envelope import AggregateType, Envelope, StoredEvent
from events.subjects import Naming

WRONG_LAST_SEQUENCE = 10071
_COMMUTING_RETRIES = 20
_READ_BATCH = 256


class ConcurrencyError(Exception):
    """The aggregate moved on since the version the writer decided on."""

    def __init__(self, expected: int, current: int) -> None:
        super().__init__(f"expected version {expected}, current version {current}")
        self.expected = expected
        self.current = current


class StoreUnavailable(Exception):
    """NATS is unreachable: the write was not sent, or the read not answered. Nothing was written."""


class OutcomeUnknown(StoreUnavailable):
    """A publish went out but neither its ack nor the log could tell, within the deadline, whether it landed.

    The event may be in the log (or land later, when a frozen server resumes); a retry with the same event id or
    idempotency key finds it there or appends it, never twice."""

    def __init__(self, event_id: str, subject: str) -> None:
        super().__init__(f"no answer from the log about event {event_id} on {subject}: it may or may not be in it")
        self.event_id = event_id
        self.subject = subject


class Appended(msgspec.Struct, frozen=True):
    """An event that is in the log: its id, stream sequence, and whether this call found it already there."""

    event_id: str
    sequence: int
    duplicate: bool


UNAVAILABLE = (
    nats.errors.TimeoutError,
    nats.errors.ConnectionClosedError,
    nats.errors.NoRespondersError,
    nats.errors.OutboundBufferLimitError,
    NoStreamResponseError,
)
# A publish that failed with one of these may have reached the server (it was sent, or sits in the client's reconnect
# buffer, which is flushed on reconnect): only the log can say whether it landed. The others were never stored.
UNANSWERED = (nats.errors.TimeoutError, nats.errors.ConnectionClosedError)
REQUEST_HEADER = "Dealstream-Request-Sha256"
"""The fingerprint of the request an event was made for (see ``append``): a retry with the same idempotency key
and another body is told apart from a true retry."""
_SETTLE_ATTEMPTS = 2


class EventStore:
    """Append and read events of one aggregate on JetStream."""

    def __init__(self, nc: NATS, js: JetStreamContext, naming: Naming, timeout: float = 2.0) -> None:
        self._nc = nc
        self._js = js
        self._naming = naming
        self._timeout = timeout

    @property
    def naming(self) -> Naming:
        return self._naming

    @property
    def js(self) -> JetStreamContext:
        """The JetStream context, for whole-log scans (audit, replay)."""
        return self._js

    def _check_connected(self) -> None:
        # While the client reconnects, requests would sit in its buffer until they time out: fail fast.
        if not self._nc.is_connected:
            raise StoreUnavailable("not connected to NATS")

    async def append(
        self,
        envelopes: Sequence[Envelope],
        expected_version: int | None,
        last: StoredEvent | None = None,
        request_sha256: str | None = None,
    ) -> list[Appended]:
        """Append events of one aggregate in order, each linked into the aggregate's hash chain.

        ``expected_version`` is the version the decision was made on: 0 means the aggregate must not
        exist yet; ``None`` appends after whatever is last (only for events that commute, never for
        decisions). Either way every append names the sequence it follows, which keeps the chain a line.
        ``last``: the aggregate's event at ``expected_version`` as the caller read it, saving a read of its
        chain link. ``request_sha256``: the fingerprint of the request, kept in a header of every event appended.

        A publish whose ack does not come is sent again as it was (same event id, same expected sequence: it can
        land once at most) until the log answers; ``OutcomeUnknown`` if it never does within the attempts.
        """
        if not envelopes:
            return []
        first = envelopes[0]
        if any((e.aggregate_type, e.aggregate_id) != (first.aggregate_type, first.aggregate_id) for e in envelopes):
            raise ValueError("one append holds events of one aggregate")
        self._check_connected()
        subject = self._naming.aggregate_subject(first.aggregate_type, first.aggregate_id)
        for attempt in range(_COMMUTING_RETRIES):
            if expected_version is None:
                expected, chain = await self._head(subject)
            else:
                known = last.chain if last is not None and last.sequence == expected_version else None
                expected, chain = expected_version, known or await self._chain_at(expected_version)
            try:
                return await self._publish(subject, envelopes, expected, chain, request_sha256)
            except ConcurrencyError:
                if expected_version is not None or attempt == _COMMUTING_RETRIES - 1:
                    raise
        raise AssertionError("unreachable")

    async def _publish(
        self, subject: str, envelopes: Sequence[Envelope], expected: int, chain: str, request_sha256: str | None
    ) -> list[Appended]:
        results: list[Appended] = []
        for envelope in envelopes:
            data = encode(envelope)
            # Encoding checks no constraint: an event a command built wrongly would land, and then poison every
            # reader of the log. Refused here, it is an error of this one request instead.
            decode(data)
            link = chain_link(chain, data)
            headers = {
                "Nats-Msg-Id": envelope.event_id,
                "Nats-Expected-Last-Subject-Sequence": str(expected),
                CHAIN_HEADER: link,
            }
            if request_sha256 is not None:
                headers[REQUEST_HEADER] = request_sha256
            appended = await self._publish_one(subject, envelope, data, headers, expected, first=not results)
            results.append(appended)
            expected = appended.sequence
            chain = link if not appended.duplicate else await self._chain_at(appended.sequence)
        return results

    async def _publish_one(
        self, subject: str, envelope: Envelope, data: bytes, headers: dict[str, str], expected: int, first: bool
    ) -> Appended:
        """One event in the log, found out: its ack, or after a lost ack the log's own answer about its id. Found at
        the first attempt, an earlier call wrote it (a duplicate); found at a later one, this call did."""
        for attempt in range(1 + _SETTLE_ATTEMPTS):
            try:
                ack = await self._js.publish(
                    subject, data, timeout=self._timeout, stream=self._naming.events_stream, headers=dict(headers)
                )
            except APIError as exc:
                if exc.err_code != WRONG_LAST_SEQUENCE:
                    if attempt == 0:
                        raise
                    continue  # refused now, but an earlier attempt of this call may have landed: ask again
                try:
                    landed = await self._find(envelope, expected)
                except StoreUnavailable:
                    continue
                if landed is None:
                    # Our publish carries the same expected sequence: it cannot land after another event did.
                    current = await self.version(envelope.aggregate_type, envelope.aggregate_id)
                    raise ConcurrencyError(expected, current) from exc
                return Appended(envelope.event_id, landed, attempt == 0)
            except UNANSWERED:
                if not self._nc.is_connected and attempt < _SETTLE_ATTEMPTS:
                    await asyncio.sleep(self._timeout / 4)
                continue
            except UNAVAILABLE as exc:
                if attempt == 0 and first:  # never sent, and nothing before it in this append: nothing written
                    raise StoreUnavailable(f"{type(exc).__name__} while appending to {subject}") from exc
                continue
            # Acked as a duplicate on a retry: the first attempt landed, and it is this call's own event.
            return Appended(envelope.event_id, ack.seq, bool(ack.duplicate) and attempt == 0)
        raise OutcomeUnknown(envelope.event_id, subject)

    async def check(self, deadline: float) -> None:
        """``StoreUnavailable`` unless the events stream answers within ``deadline`` seconds (a frozen server keeps
        its connections open, so being connected proves nothing)."""
        self._check_connected()
        try:
            await asyncio.wait_for(self._js.stream_info(self._naming.events_stream), deadline)
        except (TimeoutError, APIError, *UNAVAILABLE) as exc:
            raise StoreUnavailable(f"the events stream did not answer within {deadline:g} s: {exc!r}") from exc

    async def _head(self, subject: str) -> tuple[int, str]:
        """The sequence and chain link of the subject's last event ((0, genesis) when it has none)."""
        try:
            msg = await self._js.get_msg(self._naming.events_stream, subject=subject, direct=True)
        except NotFoundError:
            return 0, GENESIS
        except UNAVAILABLE as exc:
            raise StoreUnavailable(f"{type(exc).__name__} while reading {subject}") from exc
        return int(msg.seq or 0), str((msg.headers or {}).get(CHAIN_HEADER, GENESIS))

    async def _chain_at(self, sequence: int) -> str:
        """The chain link stored with the event at ``sequence`` (genesis before the first; events written
        before chains existed start a new chain)."""
        if sequence <= 0:
            return GENESIS
        try:
            msg = await self._js.get_msg(self._naming.events_stream, seq=sequence, direct=True)
        except NotFoundError:
            return GENESIS
        except UNAVAILABLE as exc:
            raise StoreUnavailable(f"{type(exc).__name__} while reading sequence {sequence}") from exc
        return str((msg.headers or {}).get(CHAIN_HEADER, GENESIS))

    async def _find(self, envelope: Envelope, after: int) -> int | None:
        for stored in await self.read(envelope.aggregate_type, envelope.aggregate_id, after=after):
            if stored.envelope.event_id == envelope.event_id:
                return stored.sequence
        return None

    async def first(self, aggregate_type: AggregateType, aggregate_id: str) -> StoredEvent | None:
        """The aggregate's first event (with its request fingerprint), None if it has none."""
        events, _ = await self._direct_batch(self._naming.aggregate_subject(aggregate_type, aggregate_id), 1, batch=1)
        return events[0] if events else None

    async def version(self, aggregate_type: AggregateType, aggregate_id: str) -> int:
        """The stream sequence of the aggregate's last event, 0 if it has none."""
        self._check_connected()
        subject = self._naming.aggregate_subject(aggregate_type, aggregate_id)
        try:
            msg = await self._js.get_msg(self._naming.events_stream, subject=subject, direct=True)
        except NotFoundError:
            return 0
        except UNAVAILABLE as exc:
            raise StoreUnavailable(f"{type(exc).__name__} while reading {subject}") from exc
        return int(msg.seq or 0)

    async def read(self, aggregate_type: AggregateType, aggregate_id: str, after: int = 0) -> list[StoredEvent]:
        """Every event of one aggregate with a sequence above ``after``, in log order.

        One batched direct get (nats-server 2.11+, ADR-31) per ``_READ_BATCH`` events: a command on a deal
        with a long history costs one round trip, not one per event."""
        self._check_connected()
        subject = self._naming.aggregate_subject(aggregate_type, aggregate_id)
        events: list[StoredEvent] = []
        seq = after + 1
        while True:
            batch, more = await self._direct_batch(subject, seq)
            events.extend(batch)
            if not more or not batch:
                return events
            seq = batch[-1].sequence + 1

    async def _direct_batch(self, subject: str, seq: int, batch: int = _READ_BATCH) -> tuple[list[StoredEvent], bool]:
        """Up to ``batch`` events of ``subject`` from ``seq`` on, and whether more are pending."""
        self._check_connected()
        inbox = self._nc.new_inbox()
        request = msgspec.json.encode({"seq": seq, "next_by_subj": subject, "batch": batch})
        events: list[StoredEvent] = []
        try:
            sub = await self._nc.subscribe(inbox)
            try:
                await self._nc.publish(f"$JS.API.DIRECT.GET.{self._naming.events_stream}", request, reply=inbox)
                while True:
                    msg = await sub.next_msg(timeout=self._timeout)
                    headers = msg.headers or {}
                    status = headers.get("Status")
                    if status == "404":
                        return events, False
                    if status == "204":  # end of batch
                        return events, int(headers.get("Nats-Num-Pending", "0")) > 0
                    if status is not None:
                        raise StoreUnavailable(f"direct get of {subject} answered {status} {headers}")
                    events.append(
                        StoredEvent(
                            sequence=int(headers["Nats-Sequence"]),
                            subject=subject,
                            envelope=decode(msg.data),
                            chain=headers.get(CHAIN_HEADER, GENESIS),
                            request_sha256=headers.get(REQUEST_HEADER),
                        )
                    )
            finally:
                await sub.unsubscribe()
        except UNAVAILABLE as exc:
            raise StoreUnavailable(f"{type(exc).__name__} while reading {subject}") from exc
