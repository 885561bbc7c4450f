"""The auditor's tools on the log: scan a stream and check every chain, and a signed export that can be
checked offline, away from the log.

An export is JSON lines: one line per event (``sequence``, ``subject``, ``link``, and the stored bytes as
base64 ``data``), then the log's anchors (``{"anchor": {...}}``, see :mod:`events.anchors`), then a last line
with the chain ``heads``, the event ``count``, the Ed25519 ``public_key`` and the ``signature`` over the
canonical JSON of ``{"count", "heads"}``. Checking it means recomputing every chain from the lines
(:func:`events.chain.verify`), checking that the recomputed heads are the signed ones, and that the heads as
they stood at the last anchor are the anchored ones, every signature judged by the public key the auditor
was given (never the one in the file).
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Iterator
from typing import IO, Any

import msgspec
from nats.js import JetStreamContext

from events.anchors import Anchor, check_against_anchors, write_anchors
from events.chain import AuditReport, ChainedMessage, verify
from events.scan import scan
from events.signing import new_signing_key, parse_public_key, public_key_of, sign, signature_holds

__all__ = [
    "ExportCheck",
    "Seal",
    "audit_stream",
    "check_export",
    "new_signing_key",
    "public_key_of",
    "scan",
    "write_export",
]


async def audit_stream(js: JetStreamContext, stream: str, subjects: str = ">") -> AuditReport:
    """Check every aggregate's chain in ``stream``."""
    return verify([m async for m in scan(js, stream, subjects)])


class _Line(msgspec.Struct, frozen=True):
    sequence: int
    subject: str
    link: str | None
    data: str


class Seal(msgspec.Struct, frozen=True, kw_only=True):
    count: int
    heads: dict[str, str]
    public_key: str
    signature: str


def _signed_part(count: int, heads: dict[str, str]) -> bytes:
    return msgspec.json.encode({"count": count, "heads": dict(sorted(heads.items()))})


def write_export(
    messages: Iterable[ChainedMessage], out: IO[str], private_pem: bytes, anchors: Iterable[Anchor] = ()
) -> Seal:
    """Write the export of ``messages`` and the log's ``anchors`` to ``out`` and sign its chain heads."""
    kept: list[ChainedMessage] = []
    for m in messages:
        kept.append(m)
        line = _Line(m.sequence, m.subject, m.link, base64.b64encode(m.data).decode())
        out.write(msgspec.json.encode(line).decode() + "\n")
    write_anchors(anchors, out)
    report = verify(kept)
    heads = {subject: head.link for subject, head in report.heads.items()}
    seal = Seal(
        count=report.events,
        heads=heads,
        public_key=public_key_of(private_pem),
        signature=sign(private_pem, _signed_part(report.events, heads)),
    )
    out.write(msgspec.json.encode({"seal": seal}).decode() + "\n")
    return seal


class ExportCheck(msgspec.Struct, frozen=True, kw_only=True):
    report: AuditReport
    signature_valid: bool
    heads_match: bool
    anchor: Anchor | None = None
    anchor_problems: list[str] = msgspec.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.report.intact
            and self.signature_valid
            and self.heads_match
            and self.anchor is not None
            and not self.anchor_problems
        )


def _lines(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    for text in lines:
        if text.strip():
            yield msgspec.json.decode(text)


def check_export(lines: Iterable[str], public_key: str, anchors: Iterable[Anchor] = ()) -> ExportCheck:
    """Recompute every chain of an export, check its seal and its heads at the last anchor (those in the file
    and ``anchors`` the auditor kept), every signature against ``public_key``, which the auditor got from the
    company: a key inside the file proves only that whoever wrote the file had a key."""
    key = parse_public_key(public_key)
    messages: list[ChainedMessage] = []
    found: list[Anchor] = list(anchors)
    seal: Seal | None = None
    for item in _lines(lines):
        if "seal" in item:
            seal = msgspec.convert(item["seal"], Seal)
            continue
        if "anchor" in item:
            found.append(msgspec.convert(item["anchor"], Anchor))
            continue
        line = msgspec.convert(item, _Line)
        messages.append(ChainedMessage(line.sequence, line.subject, base64.b64decode(line.data), line.link))
    streams = {a.stream for a in found}
    # The export does not name its stream: its anchors do (all of one stream, as `audit export` writes them).
    stream = next(iter(streams)) if len(streams) == 1 else ""
    anchored = check_against_anchors(messages, stream, found, public_key)
    report = anchored.report
    problems = anchored.problems if len(streams) <= 1 else [f"anchors of several streams: {sorted(streams)}"]
    if seal is None:
        return ExportCheck(
            report=report, signature_valid=False, heads_match=False, anchor=anchored.anchor, anchor_problems=problems
        )
    valid = signature_holds(key, seal.signature, _signed_part(seal.count, seal.heads))
    heads = {subject: head.link for subject, head in report.heads.items()}
    return ExportCheck(
        report=report,
        signature_valid=valid,
        heads_match=heads == seal.heads and seal.count == report.events,
        anchor=anchored.anchor,
        anchor_problems=problems,
    )
