"""The event store: append to one aggregate with an expected version, read an aggregate back in order.

An aggregate's version is the stream sequence of its last event (0: no events yet). Appends are guarded
with ``Nats-Expected-Last-Subject-Sequence``, so two writers deciding on the same version cannot both
succeed. A retried append whose first attempt landed is recognised by its event id and answered with
the first attempt's sequence (see LIMITS.md: the server reports 10071, not a duplicate, in that case).
Every event carries its link in the aggregate's hash chain in the ``Dealstream-Chain`` header (see
:mod:`events.chain`).
"""

from __future__ import annotations

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
    """NATS is unreachable or did not acknowledge in time; nothing can be promised about the write."""


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
        self, envelopes: Sequence[Envelope], expected_version: int | None, last: StoredEvent | None = None
    ) -> list[Appended]:
        """Append events of one aggregate in order, each linked into the aggregate's hash chain.

        ``expected_version`` is the version the decision was made on: 0 means the aggregate must not
        exist yet; ``None`` appends after whatever is last (only for events that commute, never for
        decisions). Either way every append names the sequence it follows, which keeps the chain a line.
        ``last``: the aggregate's event at ``expected_version`` as the caller read it, saving a read of its
        chain link.
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
                return await self._publish(subject, envelopes, expected, chain)
            except ConcurrencyError:
                if expected_version is not None or attempt == _COMMUTING_RETRIES - 1:
                    raise
        raise AssertionError("unreachable")

    async def _publish(self, subject: str, envelopes: Sequence[Envelope], expected: int, chain: str) -> list[Appended]:
        first = envelopes[0]
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
            try:
                ack = await self._js.publish(
                    subject, data, timeout=self._timeout, stream=self._naming.events_stream, headers=headers
                )
            except APIError as exc:
                if exc.err_code != WRONG_LAST_SEQUENCE:
                    raise
                landed = await self._find(first.aggregate_type, first.aggregate_id, envelope.event_id, expected)
                if landed is None:
                    current = await self.version(first.aggregate_type, first.aggregate_id)
                    raise ConcurrencyError(expected, current) from exc
                results.append(Appended(envelope.event_id, landed, True))
                expected, chain = landed, await self._chain_at(landed)
                continue
            except UNAVAILABLE as exc:
                raise StoreUnavailable(f"{type(exc).__name__} while appending to {subject}") from exc
            results.append(Appended(envelope.event_id, ack.seq, bool(ack.duplicate)))
            expected, chain = ack.seq, link
        return results

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

    async def _find(self, aggregate_type: AggregateType, aggregate_id: str, event_id: str, after: int) -> int | None:
        for stored in await self.read(aggregate_type, aggregate_id, after=after):
            if stored.envelope.event_id == event_id:
                return stored.sequence
        return None

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

    async def _direct_batch(self, subject: str, seq: int) -> tuple[list[StoredEvent], bool]:
        """Up to ``_READ_BATCH`` events of ``subject`` from ``seq`` on, and whether more are pending."""
        inbox = self._nc.new_inbox()
        request = msgspec.json.encode({"seq": seq, "next_by_subj": subject, "batch": _READ_BATCH})
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
                        )
                    )
            finally:
                await sub.unsubscribe()
        except UNAVAILABLE as exc:
            raise StoreUnavailable(f"{type(exc).__name__} while reading {subject}") from exc
