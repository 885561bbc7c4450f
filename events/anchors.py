"""Anchors: the log's chain heads, signed at intervals and kept outside the log, so that what the chains alone
cannot show (a removed tail, a deleted last event, a chain rewritten from its first changed event on) shows
against the last anchor.

An anchor names the stream, the sequence of the last event it covers, how many events and aggregates there
were up to it, and per group of aggregates (the subject without the id: type and partition) the SHA-256 of
the lines ``"<subject> <sequence> <link>\\n"`` of their heads, sorted by subject (:func:`heads_digests`). The
operator's Ed25519 key signs the canonical JSON (keys sorted) of every field but ``public_key`` and
``signature``. Anchors live in the stream ``<PREFIX>_ANCHORS`` (no deletes, no purges) and are exported as
JSON lines for the auditor to keep. Checking the log against an anchor recomputes the heads as they stood at
its last sequence: every head must still be there with the same link at the same position.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Iterable
from typing import IO

import msgspec
import structlog
from nats.js import JetStreamContext

from events.chain import AuditReport, ChainedMessage, Chains, heads_digests
from events.scan import scan
from events.signing import parse_public_key, public_key_of, sign, signature_holds
from events.subjects import Naming

log = structlog.get_logger("dealstream.anchors")


class Anchor(msgspec.Struct, frozen=True, kw_only=True):
    """The log's chain heads up to ``last_sequence``, signed."""

    stream: str
    taken_at: str
    last_sequence: int
    events: int
    aggregates: int
    heads: dict[str, str]
    public_key: str
    signature: str


class Snapshot(msgspec.Struct, frozen=True, kw_only=True):
    """The chain heads as they stood after one event of the log, in the form an anchor keeps them."""

    last_sequence: int
    events: int
    aggregates: int
    heads: dict[str, str]


def snapshot_of(chains: Chains) -> Snapshot:
    return Snapshot(
        last_sequence=chains.last_sequence,
        events=chains.events,
        aggregates=len(chains.heads),
        heads=heads_digests(chains.heads),
    )


def _signed_part(stream: str, taken_at: str, snapshot: Snapshot) -> bytes:
    signed = {"stream": stream, "taken_at": taken_at, **msgspec.to_builtins(snapshot)}
    return msgspec.json.encode(signed, order="sorted")


def signed_part(anchor: Anchor) -> bytes:
    """The bytes an anchor's signature covers."""
    snapshot = Snapshot(
        last_sequence=anchor.last_sequence, events=anchor.events, aggregates=anchor.aggregates, heads=anchor.heads
    )
    return _signed_part(anchor.stream, anchor.taken_at, snapshot)


def make_anchor(stream: str, snapshot: Snapshot, private_pem: bytes, taken_at: dt.datetime) -> Anchor:
    when = taken_at.astimezone(dt.UTC).isoformat()
    return Anchor(
        stream=stream,
        taken_at=when,
        last_sequence=snapshot.last_sequence,
        events=snapshot.events,
        aggregates=snapshot.aggregates,
        heads=snapshot.heads,
        public_key=public_key_of(private_pem),
        signature=sign(private_pem, _signed_part(stream, when, snapshot)),
    )


def differences(anchor: Anchor, now: Snapshot) -> list[str]:
    """How the log up to the anchor's last sequence, as it is now, differs from what the anchor signed."""
    where = f"up to sequence {anchor.last_sequence} (anchored {anchor.taken_at})"
    problems: list[str] = []
    if now.last_sequence < anchor.last_sequence:
        problems.append(
            f"the log's last event {where} is at sequence {now.last_sequence}, the anchor's at "
            f"{anchor.last_sequence}: the log's tail was removed"
        )
    if now.events != anchor.events:
        problems.append(f"{now.events} events {where}, the anchor counted {anchor.events}: events were removed")
    if now.aggregates != anchor.aggregates:
        problems.append(f"{now.aggregates} aggregates {where}, the anchor counted {anchor.aggregates}")
    for group in sorted(anchor.heads.keys() | now.heads.keys()):
        if anchor.heads.get(group) != now.heads.get(group):
            problems.append(
                f"the chain heads of {group} differ from the anchor: an event of one of its aggregates {where} "
                "was removed, or its chain rewritten"
            )
    return problems


class AnchorCheck(msgspec.Struct, frozen=True, kw_only=True):
    """The chains of a log, and how it stands against the last anchor signed by the auditor's key."""

    report: AuditReport
    anchor: Anchor | None
    problems: list[str]

    @property
    def ok(self) -> bool:
        return self.report.intact and self.anchor is not None and not self.problems


def check_against_anchors(
    messages: Iterable[ChainedMessage], stream: str, anchors: Iterable[Anchor], public_key: str
) -> AnchorCheck:
    """Check every chain of ``messages`` and the heads at the last anchor of ``stream`` that ``public_key``
    signed; an anchor of the stream that it did not sign is a problem, and so is having none."""
    key = parse_public_key(public_key)
    problems: list[str] = []
    trusted: list[Anchor] = []
    for anchor in anchors:
        if anchor.stream != stream:
            continue
        if signature_holds(key, anchor.signature, signed_part(anchor)):
            trusted.append(anchor)
        else:
            problems.append(
                f"the anchor taken at {anchor.taken_at} (up to sequence {anchor.last_sequence}) is not signed by "
                "the given public key"
            )
    last = max(trusted, key=lambda a: (a.last_sequence, a.taken_at), default=None)
    chains = Chains()
    at_anchor: Snapshot | None = None
    for m in messages:
        if last is not None and at_anchor is None and m.sequence > last.last_sequence:
            at_anchor = snapshot_of(chains)
        chains.add(m)
    if last is None:
        problems.append(
            f"no anchor of {stream or 'this log'} signed by the given public key: a removed tail or a rewritten "
            "chain would not show (take one with 'dealstream audit anchor')"
        )
    else:
        problems.extend(differences(last, at_anchor or snapshot_of(chains)))
    return AnchorCheck(report=chains.report(), anchor=last, problems=problems)


def write_anchors(anchors: Iterable[Anchor], out: IO[str]) -> int:
    """Anchors as JSON lines, one ``{"anchor": {...}}`` per line; returns how many."""
    count = 0
    for anchor in anchors:
        out.write(msgspec.json.encode({"anchor": anchor}).decode() + "\n")
        count += 1
    return count


def read_anchors(lines: Iterable[str]) -> list[Anchor]:
    """The anchors among JSON lines (an anchors file, or an export); other lines are skipped."""
    found: list[Anchor] = []
    for text in lines:
        if '"anchor"' not in text:
            continue
        item = msgspec.json.decode(text)
        if isinstance(item, dict) and "anchor" in item:
            found.append(msgspec.convert(item["anchor"], Anchor))
    return found


async def stored_anchors(js: JetStreamContext, naming: Naming, stream: str) -> list[Anchor]:
    """Every anchor of ``stream`` kept in the anchors' stream, oldest first."""
    found: list[Anchor] = []
    async for m in scan(js, naming.anchors_stream, naming.anchor_subject(stream)):
        try:
            found.append(msgspec.json.decode(m.data, type=Anchor))
        except msgspec.DecodeError:
            # Not an anchor at all: it hides nothing (the signed ones are still there), so say so and go on.
            log.warning("anchors.not_an_anchor", stream=naming.anchors_stream, sequence=m.sequence)
    return found


class AnchorRefused(Exception):
    """The log does not hold against its chains or its last anchor: signing its heads now would bless that."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class Anchorer:
    """Takes anchors of one stream with one key, reading only the new events between two of them.

    Before its first anchor it reads the whole log and checks it against the last anchor the same key signed,
    so a tail removed since then is refused, not signed as if it had always been so."""

    def __init__(self, js: JetStreamContext, naming: Naming, stream: str, private_pem: bytes) -> None:
        self._js = js
        self._naming = naming
        self._stream = stream
        self._key = private_pem
        self._chains = Chains()
        self._last: Anchor | None = None
        self._started = False
        self._refused: list[str] = []

    async def take(self, now: dt.datetime | None = None) -> Anchor:
        """Sign and keep the heads as of the log's last event now; the last anchor again if no event came since.

        Raises :class:`AnchorRefused` if a chain is broken or the log does not hold against the last anchor."""
        if not self._started:
            await self._first_read()
        else:
            async for m in scan(self._js, self._stream, start=self._chains.last_sequence + 1):
                self._chains.add(m)
        if not self._refused:
            self._refused = [f"sequence {b.sequence} ({b.subject}): {b.reason}" for b in self._chains.report().breaks]
        if self._refused:
            raise AnchorRefused(self._refused)
        if self._last is not None and self._last.last_sequence == self._chains.last_sequence:
            return self._last
        anchor = make_anchor(self._stream, snapshot_of(self._chains), self._key, now or dt.datetime.now(dt.UTC))
        await self._js.publish(
            self._naming.anchor_subject(self._stream),
            msgspec.json.encode(anchor),
            stream=self._naming.anchors_stream,
            timeout=10.0,
        )
        self._last = anchor
        return anchor

    async def _first_read(self) -> None:
        own = public_key_of(self._key)
        previous = None
        key = parse_public_key(own)
        for anchor in await stored_anchors(self._js, self._naming, self._stream):
            if signature_holds(key, anchor.signature, signed_part(anchor)):
                previous = anchor if previous is None or anchor.last_sequence >= previous.last_sequence else previous
            else:
                log.warning("anchors.foreign_anchor", stream=self._stream, taken_at=anchor.taken_at)
        at_previous: Snapshot | None = None
        async for m in scan(self._js, self._stream):
            if previous is not None and at_previous is None and m.sequence > previous.last_sequence:
                at_previous = snapshot_of(self._chains)
            self._chains.add(m)
        if previous is not None:
            self._refused = differences(previous, at_previous or snapshot_of(self._chains))
        self._last = previous
        self._started = True


async def keep_anchoring(
    js: JetStreamContext, naming: Naming, stream: str, private_pem: bytes, every: float, stop: asyncio.Event
) -> None:
    """Take an anchor every ``every`` seconds until ``stop``; a refusal is logged as an error each time (the
    operator must look: the log was tampered with), and anchoring stays refused."""
    anchorer = Anchorer(js, naming, stream, private_pem)
    while not stop.is_set():
        try:
            anchor = await anchorer.take()
        except AnchorRefused as exc:
            log.error("anchors.refused", stream=stream, problems=exc.problems[:20])
        else:
            log.info("anchors.taken", stream=stream, last_sequence=anchor.last_sequence, events=anchor.events)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=every)
