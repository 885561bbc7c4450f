"""The auditor's commands: ``dealstream history``, ``dealstream audit verify|keygen|anchor|anchors|export|check``."""

from __future__ import annotations

import asyncio
import binascii
import csv
import datetime as dt
import io
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec
from nats.js.errors import NotFoundError

from events.anchors import (
    Anchor,
    AnchorCheck,
    Anchorer,
    AnchorRefused,
    anchor_id,
    check_against_anchors,
    keep_anchoring,
    read_anchors,
    stored_anchors,
    write_anchors,
)
from events.audit import audit_stream, check_export, new_signing_key, public_key_of, scan, write_export
from events.chain import AuditReport, ChainedMessage
from events.config import NatsSettings, connect
from events.envelope import AggregateType, StoredEvent
from events.ids import InvalidId, check_id
from events.personal import Vault
from events.signing import parse_public_key
from events.store import EventStore
from events.types import DealAmountChanged, DealStageChanged
from projections.money import money_text
from workers.settings import Settings


def _nats(given: NatsSettings | None) -> NatsSettings:
    """The NATS settings the command was given, or the environment's (a caller outside the CLI)."""
    return given if given is not None else Settings.from_env().nats


COLUMNS = ("sequence", "occurred_at", "recorded_at", "type", "actor", "source", "change")


def change_of(event: StoredEvent) -> str:
    """What an event changed, before and after where it has both (stage, amount); else its fields."""
    data = event.envelope.data
    if isinstance(data, DealStageChanged):
        return f"stage: {data.from_stage} -> {data.to_stage}"
    if isinstance(data, DealAmountChanged):
        before, after = money_text(data.from_amount, data.currency), money_text(data.to_amount, data.currency)
        return f"amount: {before} -> {after} {data.currency}"
    fields = {k: v for k, v in msgspec.to_builtins(data).items() if k != "type" and v not in (None, {}, [])}
    return ", ".join(f"{k}={v}" for k, v in fields.items())


def history_rows(events: Sequence[StoredEvent], as_of: dt.datetime | None = None) -> list[dict[str, Any]]:
    """One row per event in log order (only events whose business time is at or before ``as_of``)."""
    return [
        {
            "sequence": e.sequence,
            "occurred_at": e.envelope.occurred_at.isoformat(),
            "recorded_at": e.envelope.recorded_at.isoformat(),
            "type": e.envelope.type,
            "actor": e.envelope.actor,
            "source": e.envelope.source,
            "change": change_of(e),
        }
        for e in events
        if as_of is None or e.envelope.occurred_at <= as_of
    ]


def render(rows: list[dict[str, Any]], events: Sequence[StoredEvent], fmt: str, raw: bool) -> str:
    if fmt == "jsonl":
        by_seq = {e.sequence: e for e in events}
        lines = []
        for row in rows:
            envelope = msgspec.to_builtins(by_seq[row["sequence"]].envelope)
            if not raw:
                envelope.pop("raw", None)
            lines.append(msgspec.json.encode({"sequence": row["sequence"], **envelope}).decode())
        return "\n".join(lines)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue().rstrip("\n")
    widths = {c: max([len(c), *(len(str(r[c])) for r in rows)]) for c in COLUMNS[:-1]}
    head = "  ".join(c.ljust(widths[c]) for c in COLUMNS[:-1]) + "  change"
    body = ["  ".join(str(r[c]).ljust(widths[c]) for c in COLUMNS[:-1]) + "  " + r["change"] for r in rows]
    return "\n".join([head, *body])


async def history(
    aggregate_type: AggregateType,
    aggregate_id: str,
    fmt: str,
    raw: bool,
    as_of: str | None,
    nats: NatsSettings | None = None,
) -> int:
    when = dt.datetime.fromisoformat(as_of) if as_of else None
    if when is not None and when.tzinfo is None:
        print("error: --as-of needs a time zone offset, e.g. 2026-09-30T23:59:59+02:00", file=sys.stderr)
        return 2
    try:
        check_id(aggregate_id, "ID")
    except InvalidId as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    settings = _nats(nats)
    nc, js = await connect(settings, "dealstream-history")
    try:
        events = await EventStore(nc, js, settings.naming).read(aggregate_type, aggregate_id)
        if aggregate_type in ("lead", "contact"):  # the person's fields, opened with their key
            opened = await Vault(js, settings.naming).unsealed([e.envelope for e in events])
            events = [msgspec.structs.replace(e, envelope=o) for e, o in zip(events, opened, strict=True)]
    finally:
        await nc.close()
    if not events:
        print(f"error: no {aggregate_type} {aggregate_id!r} in the log", file=sys.stderr)
        return 1
    print(render(history_rows(events, when), events, fmt, raw))
    return 0


NO_TRUST_ANCHOR = (
    "refusing to judge signatures without --public-key: a key found beside the data proves only that whoever "
    "wrote it had a key; ask the company for its public key (the one 'dealstream audit keygen' printed)"
)


def _public_key_problem(public_key: str | None) -> str | None:
    if public_key is None:
        return NO_TRUST_ANCHOR
    try:
        parse_public_key(public_key)
    except ValueError as exc:
        return f"--public-key: {exc}"
    return None


class Unreadable(Exception):
    """A file the auditor gave is not what the command reads; the message names it and the line."""


def _anchors_in(path: str) -> list[Anchor]:
    try:
        with open(path, encoding="utf-8") as f:
            return read_anchors(f)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
        raise Unreadable(f"{path}: not a file of anchors ({exc})") from exc


def _print_report(report: AuditReport) -> None:
    print(
        f"{report.events} events, {report.aggregates} aggregates, {report.unchained} written before chains, "
        f"{len(report.breaks)} broken chains"
    )
    for b in report.breaks:
        print(f"BROKEN at sequence {b.sequence} ({b.subject}): {b.reason}")


def _print_anchor_check(check: AnchorCheck) -> None:
    a = check.anchor
    if a is not None:
        print(f"checked against the anchor taken at {a.taken_at} (up to sequence {a.last_sequence}, {a.events} events)")
    for problem in check.problems:
        print(f"ANCHOR: {problem}")


def verify(
    stream: str | None,
    public_key: str | None = None,
    anchors_file: str | None = None,
    nats: NatsSettings | None = None,
) -> int:
    if anchors_file is not None and public_key is None:
        print(f"error: --anchors: {NO_TRUST_ANCHOR}", file=sys.stderr)
        return 2
    if public_key is not None and (problem := _public_key_problem(public_key)):
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        kept = _anchors_in(anchors_file) if anchors_file is not None else None
    except Unreadable as exc:
        print(f"error: --anchors: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(_verify(_nats(nats), stream, public_key, kept))


async def _verify(settings: NatsSettings, stream: str | None, public_key: str | None, kept: list[Anchor] | None) -> int:
    name = stream or settings.naming.events_stream
    nc, js = await connect(settings, "dealstream-audit")
    try:
        if public_key is None:
            report = await audit_stream(js, name)
            check = None
        else:
            # The auditor's own copies count beside the stored ones: anchors lost from the stream still judge.
            anchors = [*(kept or []), *await stored_anchors(js, settings.naming, name)]
            messages = [m async for m in scan(js, name)]
            check = check_against_anchors(messages, name, anchors, public_key)
            report = check.report
    finally:
        await nc.close()
    _print_report(report)
    if check is None:
        print("not checked against anchors (no --public-key): a removed tail or a rewritten chain would not show")
        return 0 if report.intact else 1
    _print_anchor_check(check)
    return 0 if check.ok else 1


def anchor(
    key: str, stream: str | None, every: float | None, keep: str | None = None, nats: NatsSettings | None = None
) -> int:
    """Take an anchor now, or one every ``every`` seconds until stopped; ``keep``: a file of the job's own
    anchors, read as the last ones it took and appended to with each new one."""
    try:
        known = _anchors_in(keep) if keep is not None and Path(keep).exists() else []
    except Unreadable as exc:
        print(f"error: --keep: {exc}", file=sys.stderr)
        return 2
    try:
        pem = Path(key).read_bytes()
        public_key_of(pem)
    except (OSError, ValueError) as exc:
        print(f"error: --key: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(_anchor(_nats(nats), pem, stream, every, known, keep))


def _keeper(keep: str | None, known: list[Anchor]) -> Callable[[Anchor], None]:
    kept = {anchor_id(a) for a in known}

    def taken(new: Anchor) -> None:
        if keep is None or anchor_id(new) in kept:
            return
        with open(keep, "a", encoding="utf-8") as f:
            write_anchors([new], f)
        kept.add(anchor_id(new))

    return taken


async def _anchor(
    settings: NatsSettings, pem: bytes, stream: str | None, every: float | None, known: list[Anchor], keep: str | None
) -> int:
    name = stream or settings.naming.events_stream
    nc, js = await connect(settings, "dealstream-anchor")
    try:
        await js.stream_info(settings.naming.anchors_stream)
    except NotFoundError:
        await nc.close()
        print(
            f"error: no stream {settings.naming.anchors_stream} to keep anchors in: run 'dealstream streams'",
            file=sys.stderr,
        )
        return 2
    anchorer = Anchorer(js, settings.naming, name, pem, known)
    taken = _keeper(keep, known)
    try:
        if every is not None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await keep_anchoring(anchorer, every, stop, taken)
            return 0
        try:
            new = await anchorer.take()
        except AnchorRefused as exc:
            print(f"error: not anchoring {name}: the log does not hold", file=sys.stderr)
            for problem in exc.problems:
                print(f"  {problem}", file=sys.stderr)
            return 1
        taken(new)
    finally:
        await nc.close()
    print(
        f"anchored {name} up to sequence {new.last_sequence} ({new.events} events, {new.aggregates} "
        f"aggregates) at {new.taken_at}, signed by {new.public_key}"
    )
    return 0


async def _anchors_of(settings: NatsSettings, stream: str | None) -> tuple[str, list[Anchor]]:
    name = stream or settings.naming.events_stream
    nc, js = await connect(settings, "dealstream-anchors")
    try:
        return name, await stored_anchors(js, settings.naming, name)
    finally:
        await nc.close()


def anchors(out: str, stream: str | None, nats: NatsSettings | None = None) -> int:
    name, found = asyncio.run(_anchors_of(_nats(nats), stream))
    with open(out, "w", encoding="utf-8") as f:
        count = write_anchors(found, f)
    print(f"{count} anchors of {name} written to {out}")
    return 0


def keygen(out: str) -> int:
    path = Path(out)
    if path.exists():
        print(f"error: {out} exists; not overwriting a signing key", file=sys.stderr)
        return 2
    pem = new_signing_key()
    path.write_bytes(pem)
    path.chmod(0o600)
    print(f"signing key written to {out}; public key (give it to auditors): {public_key_of(pem)}")
    return 0


async def _whole_log(settings: NatsSettings) -> tuple[list[ChainedMessage], list[Anchor]]:
    nc, js = await connect(settings, "dealstream-export")
    try:
        name = settings.naming.events_stream
        return [m async for m in scan(js, name)], await stored_anchors(js, settings.naming, name)
    finally:
        await nc.close()


def export(key: str, out: str, nats: NatsSettings | None = None) -> int:
    messages, kept = asyncio.run(_whole_log(_nats(nats)))
    with open(out, "w", encoding="utf-8") as f:
        seal = write_export(messages, f, Path(key).read_bytes(), kept)
    print(
        f"{seal.count} events, {len(seal.heads)} chains, {len(kept)} anchors exported to {out}, "
        f"signed by {seal.public_key}"
    )
    return 0


def check(path: str, public_key: str | None, anchors_file: str | None = None) -> int:
    if problem := _public_key_problem(public_key):
        print(f"error: {problem}", file=sys.stderr)
        return 2
    assert public_key is not None
    try:
        kept = _anchors_in(anchors_file) if anchors_file is not None else []
    except Unreadable as exc:
        print(f"error: --anchors: {exc}", file=sys.stderr)
        return 2
    try:
        with open(path, encoding="utf-8") as f:
            result = check_export(f, public_key, kept)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, binascii.Error) as exc:
        print(f"error: {path}: not an export of 'dealstream audit export' ({exc})", file=sys.stderr)
        return 2
    r = result.report
    print(
        f"{r.events} events, {r.aggregates} chains; chains intact: {r.intact}; "
        f"signature valid: {result.signature_valid}; heads match the seal: {result.heads_match}"
    )
    for b in r.breaks:
        print(f"BROKEN at sequence {b.sequence} ({b.subject}): {b.reason}")
    _print_anchor_check(AnchorCheck(report=r, anchor=result.anchor, problems=result.anchor_problems))
    return 0 if result.ok else 1


async def board_then(
    at: str, since: str | None, pipeline_id: str | None, owner: str | None, nats: NatsSettings | None = None
) -> int:
    """Print the board as it stood at ``at`` and the deals that slipped, replayed from the log."""
    from services.replay import board_as_of, board_events

    when = dt.datetime.fromisoformat(at)
    if when.tzinfo is None:
        print("error: --at needs a time zone offset, e.g. 2026-09-30T23:59:59+02:00", file=sys.stderr)
        return 2
    settings = _nats(nats)
    nc, js = await connect(settings, "dealstream-board-as-of")
    try:
        events = await board_events(js, settings.naming, Vault(js, settings.naming))
    finally:
        await nc.close()
    start = dt.date.fromisoformat(since) if since else None
    result = board_as_of(events, when, start, pipeline_id, owner, limit=500)
    print(f"the board at {when.isoformat()} ({result.events_replayed} events replayed from the log)")
    for board in result.boards:
        print(f"\n{board.name or board.pipeline_id}")
        for c in board.columns:
            totals = ", ".join(f"{v} {k}" for k, v in sorted(c.total.items())) or "-"
            print(f"  {c.name or c.stage:<20} {c.count:>5} deals  {totals}")
    print(f"\nslipped (open at {when.date()}, expected to close by then): {len(result.slipped)}")
    for s in result.slipped:
        print(
            f"  {s.deal_id:<24} {s.amount} {s.currency}  expected {s.expected_close_date}  "
            f"{s.stage_then} then, {s.status_now}/{s.stage_now} now"
        )
    return 0
