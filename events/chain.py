"""Tamper evidence: each aggregate's events form a hash chain, and a scan of the log checks every link.

An event's link is ``SHA-256(previous link || SHA-256(the event's stored bytes))`` in hex, kept in the
message's ``Dealstream-Chain`` header; the first event of an aggregate follows :data:`GENESIS`. Changing
an event's bytes breaks its own link; removing or reordering events breaks the link of the event after
the gap; an event without a link once chains began in the log is a break too. A removed tail or a rewritten
chain keeps every remaining link valid: that is caught by comparing the chain heads with a signed anchor
(:mod:`events.anchors`) or a signed export.
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
    last_sequence: int = 0

    @property
    def intact(self) -> bool:
        return not self.breaks


def group_of(subject: str) -> str:
    """The group an aggregate's head is summarised in: its subject without the id (type and partition)."""
    return subject.rpartition(".")[0]


def heads_digests(heads: dict[str, Head]) -> dict[str, str]:
    """Per group, SHA-256 over the lines ``"<subject> <sequence> <link>\\n"`` of its heads sorted by subject."""
    lines: dict[str, list[bytes]] = {}
    for subject in sorted(heads):
        head = heads[subject]
        lines.setdefault(group_of(subject), []).append(f"{subject} {head.sequence} {head.link}\n".encode())
    return {group: hashlib.sha256(b"".join(parts)).hexdigest() for group, parts in lines.items()}


class Chains:
    """Every aggregate's chain over the messages added so far, in log order, checked link by link."""

    def __init__(self) -> None:
        self._heads: dict[str, Head] = {}
        self._broken: dict[str, Break] = {}
        self._chains_began: int | None = None
        self.events = 0
        self.unchained = 0
        self.last_sequence = 0

    def add(self, m: ChainedMessage) -> None:
        """Check one message; an aggregate whose chain broke is not checked further (one tampered event would
        otherwise report every later one)."""
        self.events += 1
        self.last_sequence = m.sequence
        if m.subject in self._broken:
            return
        head = self._heads.get(m.subject)
        previous = head.link if head else GENESIS
        count = (head.events if head else 0) + 1
        if m.link is None:
            # Only a log written before chains existed may lack links; once one event carries a link, every
            # later one must, or an event slipped in by hand would pass as an old one.
            if head is not None and head.link != GENESIS:
                self._break(m, f"it has no chain link, but its chain began before (last link at {head.sequence})")
            elif self._chains_began is not None:
                self._break(m, f"it has no chain link, but chains began in the log at sequence {self._chains_began}")
            else:
                self.unchained += 1
                self._heads[m.subject] = Head(m.sequence, previous, count)
            return
        if self._chains_began is None:
            self._chains_began = m.sequence
        if m.link != chain_link(previous, m.data):
            after = f"sequence {head.sequence}" if head else "the start of the chain"
            self._break(m, f"its content or the event before it (after {after}) was altered, removed or moved")
            return
        self._heads[m.subject] = Head(m.sequence, m.link, count)

    def _break(self, m: ChainedMessage, reason: str) -> None:
        self._broken[m.subject] = Break(m.sequence, m.subject, reason)

    @property
    def heads(self) -> dict[str, Head]:
        return self._heads

    @property
    def breaks(self) -> list[Break]:
        return sorted(self._broken.values(), key=lambda b: b.sequence)

    def report(self) -> AuditReport:
        return AuditReport(
            events=self.events,
            aggregates=len(self._heads.keys() | self._broken.keys()),
            unchained=self.unchained,
            breaks=self.breaks,
            heads=dict(self._heads),
            last_sequence=self.last_sequence,
        )


def verify(messages: Iterable[ChainedMessage]) -> AuditReport:
    """Check every aggregate's chain over messages in log order; report the first break of each aggregate.

    Events without a link are counted, not judged, only while no event before them carried one (a log
    written before chains existed)."""
    chains = Chains()
    for m in messages:
        chains.add(m)
    return chains.report()
