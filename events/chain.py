"""Tamper evidence: each aggregate's events form a hash chain, and a scan of the log checks every link.

An event's link is ``SHA-256(previous link || SHA-256(the event's stored bytes))`` in hex, kept in the
message's ``Dealstream-Chain`` header; the first event of an aggregate follows :data:`GENESIS`. Changing
an event's bytes breaks its own link; removing or reordering events breaks the link of the event after
the gap; rewriting every later link is caught by comparing the chain heads with a signed export.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import msgspec

CHAIN_HEADER = "Dealstream-Chain"
GENESIS = "0" * 64


def chain_link(previous: str, data: bytes) -> str:
    return hashlib.sha256(bytes.fromhex(previous) + hashlib.sha256(data).digest()).hexdigest()


class ChainedMessage(msgspec.Struct, frozen=True):
    """A stored message as the audit reads it."""

    sequence: int
    subject: str
    data: bytes
    link: str | None


class Break(msgspec.Struct, frozen=True):
    """The first link of an aggregate's chain that does not hold, and why."""

    sequence: int
    subject: str
    reason: str


class Head(msgspec.Struct, frozen=True):
    sequence: int
    link: str
    events: int


class AuditReport(msgspec.Struct, frozen=True, kw_only=True):
    events: int
    aggregates: int
    unchained: int
    breaks: list[Break]
    heads: dict[str, Head]

    @property
    def intact(self) -> bool:
        return not self.breaks


def verify(messages: Iterable[ChainedMessage]) -> AuditReport:
    """Check every aggregate's chain over messages in log order; report the first break of each aggregate.

    An aggregate whose chain broke is not checked further (one tampered event would otherwise report every
    later one). Events without a link (written before chains existed) are counted, not judged."""
    heads: dict[str, Head] = {}
    broken: dict[str, Break] = {}
    events = unchained = 0
    for m in messages:
        events += 1
        if m.subject in broken:
            continue
        head = heads.get(m.subject)
        previous = head.link if head else GENESIS
        count = (head.events if head else 0) + 1
        if m.link is None:
            unchained += 1
            heads[m.subject] = Head(m.sequence, previous, count)
            continue
        expected = chain_link(previous, m.data)
        if m.link != expected:
            after = f"sequence {head.sequence}" if head else "the start of the chain"
            reason = f"its content or the event before it (after {after}) was altered, removed or moved"
            broken[m.subject] = Break(m.sequence, m.subject, reason)
            continue
        heads[m.subject] = Head(m.sequence, m.link, count)
    return AuditReport(
        events=events,
        aggregates=len(heads | dict.fromkeys(broken, Head(0, GENESIS, 0))),
        unchained=unchained,
        breaks=sorted(broken.values(), key=lambda b: b.sequence),
        heads=heads,
    )
