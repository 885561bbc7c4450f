"""The board as it stood at a past moment, replayed from the log (never from stored snapshots), and the deals
that slipped: open then although expected to close by then."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from decimal import Decimal

import msgspec
from nats.js import JetStreamContext

from events.audit import scan
from events.codec import decode
from events.envelope import StoredEvent
from events.personal import Vault
from events.subjects import Naming
from events.types import DealOpened, DealUpdated
from projections.board import PipelineBoard, Status, build_board, fold
from projections.money import in_minor_units


class SlippedDeal(msgspec.Struct, frozen=True, kw_only=True):
    """A deal open at ``at`` whose expected close date had come by then, and where it stands now."""

    deal_id: str
    name: str
    owner: str | None
    amount: Decimal
    currency: str
    expected_close_date: dt.date
    stage_then: str
    stage_now: str
    status_now: Status


class BoardAsOf(msgspec.Struct, frozen=True, kw_only=True):
    at: dt.datetime
    events_replayed: int
    boards: list[PipelineBoard]
    slipped: list[SlippedDeal]


async def board_events(js: JetStreamContext, naming: Naming, vault: Vault | None = None) -> list[StoredEvent]:
    """Every deal and pipeline event of the log, in log order; with the vault, deal names opened (an erased
    lead's deals read ``[erased]``), else ``[sealed]``."""
    events = [
        StoredEvent(sequence=m.sequence, subject=m.subject, envelope=decode(m.data))
        for kind in ("deal", "pipeline")
        async for m in scan(js, naming.events_stream, naming.events_of_type(kind))
    ]
    if vault is not None:
        opened = await vault.unsealed([e.envelope for e in events], (DealOpened, DealUpdated))
        events = [msgspec.structs.replace(e, envelope=o) for e, o in zip(events, opened, strict=True)]
    return sorted(events, key=lambda e: e.sequence)


def board_then(
    events: Sequence[StoredEvent],
    at: dt.datetime,
    pipeline_id: str | None = None,
    owner: str | None = None,
    status: Status = "open",
    cursor: str | None = None,
    limit: int = 50,
) -> list[PipelineBoard]:
    """The board from the events that had happened (business time) by ``at``, with ``at`` as its clock."""
    return build_board(
        fold(e for e in events if e.envelope.occurred_at <= at), at, pipeline_id, owner, status, cursor, limit
    )


def board_as_of(
    events: Sequence[StoredEvent],
    at: dt.datetime,
    since: dt.date | None = None,
    pipeline_id: str | None = None,
    owner: str | None = None,
    status: Status = "open",
    limit: int = 50,
) -> BoardAsOf:
    """The board from the events that had happened (business time) by ``at``, and the deals open at ``at``
    whose expected close date fell on or before ``at``'s date (and on or after ``since``, e.g. a quarter's
    first day). Raises ``ValueError`` on a naive ``at`` or a bad limit."""
    if at.tzinfo is None:
        raise ValueError("at must carry a time zone offset")
    then = [e for e in events if e.envelope.occurred_at <= at]
    past, now = fold(then), fold(events)
    # The expected close date as it stood then: the opening's, or the latest correction's by then.
    expected = {d.deal_id: d.expected_close_date for d in past.deals.values() if d.expected_close_date is not None}
    cutoff = at.date()
    slipped = [
        SlippedDeal(
            deal_id=d.deal_id,
            name=d.name,
            owner=d.owner,
            amount=in_minor_units(d.amount, d.currency),
            currency=d.currency,
            expected_close_date=expected[d.deal_id],
            stage_then=d.stage,
            stage_now=now.deals[d.deal_id].stage,
            status_now=now.deals[d.deal_id].status,
        )
        for d in sorted(past.deals.values(), key=lambda d: d.deal_id)
        if d.status == "open"
        and d.deal_id in expected
        and expected[d.deal_id] <= cutoff
        and (since is None or expected[d.deal_id] >= since)
        and (pipeline_id is None or d.pipeline_id == pipeline_id)
        and (owner is None or d.owner == owner)
    ]
    boards = build_board(past, at, pipeline_id, owner, status, None, limit)
    return BoardAsOf(at=at, events_replayed=len(then), boards=boards, slipped=slipped)
