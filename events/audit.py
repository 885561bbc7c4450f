"""The auditor's tools on the log: scan a stream and check every chain, and a signed export that can be
checked offline, away from the log.

An export is JSON lines: one line per event (``sequence``, ``subject``, ``link``, and the stored bytes as
base64 ``data``), then a last line with the chain ``heads``, the event ``count``, the Ed25519 ``public_key``
and the ``signature`` over the canonical JSON of ``{"count", "heads"}``. Checking it means recomputing
every chain from the lines (:func:`events.chain.verify`) and checking that the recomputed heads are the
signed ones.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import IO, Any

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from events.chain import CHAIN_HEADER, AuditReport, ChainedMessage, verify


async def scan(
    js: JetStreamContext, stream: str, subjects: str = ">", batch: int = 1000
) -> AsyncIterator[ChainedMessage]:
    """Every message of ``stream`` (matching ``subjects``) in log order, through an ephemeral consumer."""
    info = await js.stream_info(stream)
    last = int(info.state.last_seq)
    if not info.state.messages:
        return
    config = ConsumerConfig(
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.NONE,
        filter_subject=subjects,
        inactive_threshold=60.0,
        max_waiting=1,
    )
    sub = await js.pull_subscribe(subjects, stream=stream, config=config)
    try:
        seen = 0
        while seen < last:
            try:
                msgs = await sub.fetch(batch, timeout=2.0)
            except TimeoutError:
                return  # nothing more matches the filter up to the end of the stream
            for msg in msgs:
                meta = msg.metadata
                seen = meta.sequence.stream
                link = (msg.headers or {}).get(CHAIN_HEADER)
                yield ChainedMessage(seen, msg.subject, msg.data, link)
                if meta.num_pending == 0:
                    return
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


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


def new_signing_key() -> bytes:
    """A fresh Ed25519 private key, PEM (keep it secret; give auditors the public key)."""
    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_key_of(private_pem: bytes) -> str:
    key = serialization.load_pem_private_key(private_pem, password=None)
    assert isinstance(key, Ed25519PrivateKey)
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def write_export(messages: Iterable[ChainedMessage], out: IO[str], private_pem: bytes) -> Seal:
    """Write the export of ``messages`` to ``out`` and sign its chain heads."""
    key = serialization.load_pem_private_key(private_pem, password=None)
    assert isinstance(key, Ed25519PrivateKey)
    kept: list[ChainedMessage] = []
    for m in messages:
        kept.append(m)
        line = _Line(m.sequence, m.subject, m.link, base64.b64encode(m.data).decode())
        out.write(msgspec.json.encode(line).decode() + "\n")
    report = verify(kept)
    heads = {subject: head.link for subject, head in report.heads.items()}
    seal = Seal(
        count=report.events,
        heads=heads,
        public_key=public_key_of(private_pem),
        signature=base64.b64encode(key.sign(_signed_part(report.events, heads))).decode(),
    )
    out.write(msgspec.json.encode({"seal": seal}).decode() + "\n")
    return seal


class ExportCheck(msgspec.Struct, frozen=True, kw_only=True):
    report: AuditReport
    signature_valid: bool
    heads_match: bool

    @property
    def ok(self) -> bool:
        return self.report.intact and self.signature_valid and self.heads_match


def _lines(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    for text in lines:
        if text.strip():
            yield msgspec.json.decode(text)


def check_export(lines: Iterable[str], public_key: str | None = None) -> ExportCheck:
    """Recompute every chain of an export and check the seal (against ``public_key`` if given, which an
    auditor should get from the company, not from the file)."""
    messages: list[ChainedMessage] = []
    seal: Seal | None = None
    for item in _lines(lines):
        if "seal" in item:
            seal = msgspec.convert(item["seal"], Seal)
            continue
        line = msgspec.convert(item, _Line)
        messages.append(ChainedMessage(line.sequence, line.subject, base64.b64decode(line.data), line.link))
    report = verify(messages)
    if seal is None:
        return ExportCheck(report=report, signature_valid=False, heads_match=False)
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key or seal.public_key))
    try:
        key.verify(base64.b64decode(seal.signature), _signed_part(seal.count, seal.heads))
        valid = True
    except InvalidSignature:
        valid = False
    heads = {subject: head.link for subject, head in report.heads.items()}
    return ExportCheck(
        report=report, signature_valid=valid, heads_match=heads == seal.heads and seal.count == report.events
    )
