"""Anchors: the log's chain heads, signed at intervals and kept outside the log, so that what the chains alone
cannot show (a removed tail, a deleted last event, a chain rewritten from its first changed event on) shows
against the last anchor.

An anchor names the stream, the sequence of the last event it covers, how many events and aggregates there
were up to it, and per group of aggregates (the subject without the id: type and partition) the SHA-256 of
the lines ``"<subject> <sequence> <link>\\n"`` of their heads, sorted by subject (:func:`heads_digests`), and
``previous``, the id of the anchor the same key signed before (:func:`anchor_id`), so one key's anchors form a
line. The operator's Ed25519 key signs the canonical JSON (keys sorted) of every field but ``public_key`` and
``signature``. Anchors live in the stream ``<PREFIX>_ANCHORS`` (no deletes, no purges) and are exported as
JSON lines for the auditor to keep. Checking the log against an anchor recomputes the heads as they stood at
its last sequence: every head must still be there with the same link at the same position. An anchor is
only taken while the log holds against the one before it, so checking the last one vouches for the line;
an anchor off that line shows that anchors were lost, or that one was taken without knowing the last.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
from collections.abc import Callable, Iterable
from typing import IO

import msgspec
import nats.errors
import structlog
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

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
    previous: str
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


def _signed_part(stream: str, taken_at: str, snapshot: Snapshot, previous: str) -> bytes:
    signed = {"stream": stream, "taken_at": taken_at, "previous": previous, **msgspec.to_builtins(snapshot)}
    return msgspec.json.encode(signed, order="sorted")


def signed_part(anchor: Anchor) -> bytes:
    """The bytes an anchor's signature covers."""
    snapshot = Snapshot(
        last_sequence=anchor.last_sequence, events=anchor.events, aggregates=anchor.aggregates, heads=anchor.heads
    )
    return _signed_part(anchor.stream, anchor.taken_at, snapshot, anchor.previous)


def anchor_id(anchor: Anchor) -> str:
    """SHA-256 of what the anchor's signature covers: what the next anchor names as ``previous``."""
    return hashlib.sha256(signed_part(anchor)).hexdigest()


def make_anchor(
    stream: str, snapshot: Snapshot, private_pem: bytes, taken_at: dt.datetime, previous: Anchor | None = None
) -> Anchor:
    when = taken_at.astimezone(dt.UTC).isoformat()
    after = anchor_id(previous) if previous is not None else ""
    return Anchor(
        stream=stream,
        taken_at=when,
        last_sequence=snapshot.last_sequence,
        events=snapshot.events,
        aggregates=snapshot.aggregates,
        heads=snapshot.heads,
        previous=after,
        public_key=public_key_of(private_pem),
        signature=sign(private_pem, _signed_part(stream, when, snapshot, after)),
    )


def latest(anchors: Iterable[Anchor]) -> Anchor | None:
    return max(anchors, key=lambda a: (a.last_sequence, a.taken_at), default=None)


def off_the_line(last: Anchor, anchors: Iterable[Anchor]) -> list[Anchor]:
    """The anchors that are not ``last`` or one before it in its line of ``previous`` ids."""
    by_id = {anchor_id(a): a for a in anchors}
    line: set[str] = set()
    current: Anchor | None = last
    while current is not None and anchor_id(current) not in line:
        line.add(anchor_id(current))
        current = by_id.get(current.previous)
    return [a for i, a in by_id.items() if i not in line]


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
    last = latest(trusted)
    if last is not None:
        problems.extend(
            f"the anchor taken at {a.taken_at} (up to sequence {a.last_sequence}) is not in the line of the last "
            f"anchor: anchors were lost before {last.taken_at}, or that one was taken without knowing them"
            for a in sorted(off_the_line(last, trusted), key=lambda a: a.last_sequence)
        )
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
    with contextlib.suppress(NotFoundError):  # no anchors' stream (any more): no anchor, which the checks report
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

    Before its first anchor it reads the whole log and checks it against the last anchor the same key signed
    (among those kept in the anchors' stream and ``known``, e.g. the job's own file), so a tail removed since
    then is refused, not signed as if it had always been so."""

    def __init__(
        self, js: JetStreamContext, naming: Naming, stream: str, private_pem: bytes, known: Iterable[Anchor] = ()
    ) -> None:
        self._js = js
        self._naming = naming
        self._stream = stream
        self._key = private_pem
        self._known = list(known)
        self._chains = Chains()
        self._last: Anchor | None = None
        self._unsure: Anchor | None = None
        self._started = False
        self._refused: list[str] = []

    @property
    def stream(self) -> str:
        return self._stream

    async def take(self, now: dt.datetime | None = None) -> Anchor:
        """Sign and keep the heads as of the log's last event now; the last anchor again if no event came since.

        Raises :class:`AnchorRefused` if a chain is broken or the log does not hold against the last anchor."""
        if not self._started:
            await self._first_read()
        else:
            async for m in scan(self._js, self._stream, start=self._chains.last_sequence + 1):
                self._chains.add(m)
        if not self._refused:
            self._refused = [f"sequence {b.sequence} ({b.subject}): {b.reason}" for b in self._chains.breaks]
        if self._refused:
            raise AnchorRefused(self._refused)
        if self._unsure is not None:
            # Its publish failed, but may have landed: keep it, so the next one names it and the line holds.
            await self._publish(self._unsure)
        if self._last is not None and self._last.last_sequence == self._chains.last_sequence:
            return self._last
        when = now or dt.datetime.now(dt.UTC)
        await self._publish(make_anchor(self._stream, snapshot_of(self._chains), self._key, when, self._last))
        assert self._last is not None
        return self._last

    async def _publish(self, anchor: Anchor) -> None:
        self._unsure = anchor
        await self._js.publish(
            self._naming.anchor_subject(self._stream),
            msgspec.json.encode(anchor),
            stream=self._naming.anchors_stream,
            timeout=10.0,
            headers={"Nats-Msg-Id": anchor_id(anchor)},
        )
        self._unsure = None
        self._last = anchor

    async def _first_read(self) -> None:
        key = parse_public_key(public_key_of(self._key))
        own: list[Anchor] = []
        for anchor in [*await stored_anchors(self._js, self._naming, self._stream), *self._known]:
            if anchor.stream != self._stream:
                continue
            if signature_holds(key, anchor.signature, signed_part(anchor)):
                own.append(anchor)
            else:
                log.warning("anchors.foreign_anchor", stream=self._stream, taken_at=anchor.taken_at)
        previous = latest(own)
        at_previous: Snapshot | None = None
        async for m in scan(self._js, self._stream):
            if previous is not None and at_previous is None and m.sequence > previous.last_sequence:
                at_previous = snapshot_of(self._chains)
            self._chains.add(m)
        if previous is not None:
            self._refused = differences(previous, at_previous or snapshot_of(self._chains))
            self._refused.extend(
                f"the anchor taken at {a.taken_at} is not in the line of the last one ({previous.taken_at}): "
                "anchors were lost"
                for a in off_the_line(previous, own)
            )
        self._last = previous
        self._started = True


async def keep_anchoring(
    anchorer: Anchorer, every: float, stop: asyncio.Event, taken: Callable[[Anchor], None] | None = None
) -> None:
    """Take an anchor every ``every`` seconds until ``stop``, handing each new one to ``taken``; a refusal is
    logged as an error each time (the operator must look: the log was tampered with), and anchoring stays
    refused."""
    last: Anchor | None = None
    while not stop.is_set():
        try:
            anchor = await anchorer.take()
        except AnchorRefused as exc:
            log.error("anchors.refused", stream=anchorer.stream, problems=exc.problems[:20])
        except (nats.errors.Error, OSError) as exc:
            log.warning("anchors.failed", stream=anchorer.stream, error=f"{type(exc).__name__}: {exc}")
        else:
            if anchor != last:
                log.info(
                    "anchors.taken", stream=anchorer.stream, last_sequence=anchor.last_sequence, events=anchor.events
                )
                if taken is not None:
                    taken(anchor)
            last = anchor
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=every)
