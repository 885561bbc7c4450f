"""The auditor's commands: ``dealstream history``, ``dealstream audit verify|keygen|export|check``."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

from events.audit import audit_stream, check_export, new_signing_key, public_key_of, scan, write_export
from events.chain import ChainedMessage
from events.config import NatsSettings, connect
from events.envelope import AggregateType, StoredEvent
from events.personal import Vault
from events.store import EventStore
from events.types import DealAmountChanged, DealStageChanged

COLUMNS = ("sequence", "occurred_at", "recorded_at", "type", "actor", "source", "change")


def change_of(event: StoredEvent) -> str:
    """What an event changed, before and after where it has both (stage, amount); else its fields."""
    data = event.envelope.data
    if isinstance(data, DealStageChanged):
        return f"stage: {data.from_stage} -> {data.to_stage}"
    if isinstance(data, DealAmountChanged):
        return f"amount: {data.from_amount} -> {data.to_amount} {data.currency}"
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


async def history(aggregate_type: AggregateType, aggregate_id: str, fmt: str, raw: bool, as_of: str | None) -> int:
    when = dt.datetime.fromisoformat(as_of) if as_of else None
    if when is not None and when.tzinfo is None:
        print("error: --as-of needs a time zone offset, e.g. 2026-09-30T23:59:59+02:00", file=sys.stderr)
        return 2
    settings = NatsSettings.from_env()
    nc, js = await connect(settings, "dealstream-history")
    try:
        events = await EventStore(nc, js, settings.naming).read(aggregate_type, aggregate_id)
        if aggregate_type == "lead":
            opened = await Vault(js, settings.naming).unsealed([e.envelope for e in events])
            events = [msgspec.structs.replace(e, envelope=o) for e, o in zip(events, opened, strict=True)]
    finally:
        await nc.close()
    if not events:
        print(f"error: no {aggregate_type} {aggregate_id!r} in the log", file=sys.stderr)
        return 1
    print(render(history_rows(events, when), events, fmt, raw))
    return 0


async def verify(stream: str | None) -> int:
    settings = NatsSettings.from_env()
    nc, js = await connect(settings, "dealstream-audit")
    try:
        report = await audit_stream(js, stream or settings.naming.events_stream)
    finally:
        await nc.close()
    print(
        f"{report.events} events, {report.aggregates} aggregates, {report.unchained} written before chains, "
        f"{len(report.breaks)} broken chains"
    )
    for b in report.breaks:
        print(f"BROKEN at sequence {b.sequence} ({b.subject}): {b.reason}")
    return 0 if report.intact else 1


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


async def _whole_log() -> list[ChainedMessage]:
    settings = NatsSettings.from_env()
    nc, js = await connect(settings, "dealstream-export")
    try:
        return [m async for m in scan(js, settings.naming.events_stream)]
    finally:
        await nc.close()


def export(key: str, out: str) -> int:
    messages = asyncio.run(_whole_log())
    with open(out, "w", encoding="utf-8") as f:
        seal = write_export(messages, f, Path(key).read_bytes())
    print(f"{seal.count} events, {len(seal.heads)} chains exported to {out}, signed by {seal.public_key}")
    return 0


def check(path: str, public_key: str | None) -> int:
    with open(path, encoding="utf-8") as f:
        result = check_export(f, public_key)
    r = result.report
    print(
        f"{r.events} events, {r.aggregates} chains; chains intact: {r.intact}; "
        f"signature valid: {result.signature_valid}; heads match the seal: {result.heads_match}"
    )
    for b in r.breaks:
        print(f"BROKEN at sequence {b.sequence} ({b.subject}): {b.reason}")
    return 0 if result.ok else 1


async def board_then(at: str, since: str | None, pipeline_id: str | None, owner: str | None) -> int:
    """Print the board as it stood at ``at`` and the deals that slipped, replayed from the log."""
    from services.replay import board_as_of, board_events

    when = dt.datetime.fromisoformat(at)
    if when.tzinfo is None:
        print("error: --at needs a time zone offset, e.g. 2026-09-30T23:59:59+02:00", file=sys.stderr)
        return 2
    settings = NatsSettings.from_env()
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
