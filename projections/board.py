"""The board fold: deals and pipelines as rows, folded from the log. Pure: no I/O, no clock.

``apply(state, event)`` folds one stored event into a :class:`BoardState`. It is deterministic and
idempotent per event sequence: an event whose sequence is at or below the row's ``version`` (the stream
sequence of the last event applied to that row) changes nothing, so a replayed or redelivered batch is
harmless. Deals and pipelines are folded independently (the pipeline's stages are joined at query time),
which is what lets several processes split the log by partition without seeing each other's events.

:func:`build_board` is the read side over in-memory rows; the SQL query in ``board_queries`` must return
exactly what it returns for the same rows (the tests hold them to that).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

import msgspec

from events.envelope import StoredEvent
from events.types import (
    DealAmountChanged,
    DealLost,
    DealOpened,
    DealReassigned,
    DealReopened,
    DealStageChanged,
    DealUpdated,
    DealWon,
    PipelineDefined,
    TaskCompleted,
    TaskScheduled,
    TouchpointLogged,
)
from projections.folding import fold_into
from projections.money import in_minor_units, per_currency
from projections.stats import weighted_amount

Status = Literal["open", "won", "lost"]
STATUSES: tuple[Status, ...] = ("open", "won", "lost")


SEALED_NAME = "[sealed]"
ERASED_NAME = "[erased]"
"""A deal's name once the lead it was opened from is erased (what its sealed name reads without the key)."""


class Stage(msgspec.Struct, frozen=True, kw_only=True):
    """One column of a pipeline, as defined by the latest ``PipelineDefined``."""

    id: str
    name: str
    probability: float
    rotting_days: int | None = None


class PipelineRow(msgspec.Struct, frozen=True, kw_only=True):
    """The definition in force: the one of the latest business time (``defined_at``), then the latest in the log."""

    pipeline_id: str
    name: str
    stages: tuple[Stage, ...]
    version: int
    defined_at: dt.datetime | None = None


class DealRow(msgspec.Struct, frozen=True, kw_only=True):
    """One deal on the board. Times are business time (``occurred_at`` of the events)."""

    deal_id: str
    pipeline_id: str
    stage: str
    name: str
    amount: Decimal
    currency: str
    owner: str | None
    status: Status
    stage_entered_at: dt.datetime
    last_activity_at: dt.datetime
    next_task_due_at: dt.datetime | None
    opened_at: dt.datetime
    closed_at: dt.datetime | None
    lost_reason: str | None
    # Open tasks by id, sorted by id: next_task_due_at is their earliest due time.
    open_tasks: tuple[tuple[str, dt.datetime], ...]
    version: int
    expected_close_date: dt.date | None = None
    next_step: str | None = None


@dataclass
class BoardState:
    """Rows by id. ``apply`` replaces rows (they are frozen) and mutates these dicts in place."""

    deals: dict[str, DealRow] = field(default_factory=dict)
    pipelines: dict[str, PipelineRow] = field(default_factory=dict)

    def copy(self) -> BoardState:
        return BoardState(dict(self.deals), dict(self.pipelines))


def apply(state: BoardState, event: StoredEvent) -> BoardState:
    """Fold one event into ``state`` (in place) and return it."""
    envelope = event.envelope
    if envelope.aggregate_type == "pipeline":
        _apply_pipeline(state, event)
    elif envelope.aggregate_type == "deal":
        _apply_deal(state, event)
    return state


def fold(events: Iterable[StoredEvent], state: BoardState | None = None) -> BoardState:
    return fold_into(BoardState() if state is None else state, events, apply)


def _apply_pipeline(state: BoardState, event: StoredEvent) -> None:
    data = event.envelope.data
    pipeline_id = event.envelope.aggregate_id
    current = state.pipelines.get(pipeline_id)
    if not isinstance(data, PipelineDefined) or (current is not None and event.sequence <= current.version):
        return
    at = event.envelope.occurred_at
    if current is not None and current.defined_at is not None and at < current.defined_at:
        # An imported history's older definition, appended after a newer one: it was in force before, not now.
        return
    stages = tuple(
        Stage(id=s.id, name=s.name, probability=s.probability, rotting_days=s.rotting_days) for s in data.stages
    )
    state.pipelines[pipeline_id] = PipelineRow(
        pipeline_id=pipeline_id, name=data.name, stages=stages, version=event.sequence, defined_at=at
    )


def _next_due(tasks: tuple[tuple[str, dt.datetime], ...]) -> dt.datetime | None:
    return min((due for _, due in tasks), default=None)


def _apply_deal(state: BoardState, event: StoredEvent) -> None:
    envelope = event.envelope
    data = envelope.data
    at = envelope.occurred_at
    seq = event.sequence
    deal_id = envelope.aggregate_id
    row = state.deals.get(deal_id)
    if row is not None and seq <= row.version:
        return
    if isinstance(data, DealOpened):
        # A second DealOpened on one deal starts it afresh: the log's last word wins.
        state.deals[deal_id] = DealRow(
            deal_id=deal_id,
            pipeline_id=data.pipeline_id,
            stage=data.stage,
            # The worker reads the name opened with its lead's key; a fold without the vault never sees it.
            name=data.name or SEALED_NAME,
            amount=data.amount,
            currency=data.currency,
            owner=data.owner,
            status="open",
            stage_entered_at=at,
            last_activity_at=at,
            next_task_due_at=None,
            opened_at=at,
            closed_at=None,
            lost_reason=None,
            open_tasks=(),
            version=seq,
            expected_close_date=data.expected_close_date,
        )
        return
    if row is None:
        # Nothing to attach it to: a deal's events before its DealOpened are not on the board. Skipping is
        # deterministic, so a rebuild agrees.
        return
    replace = msgspec.structs.replace
    if isinstance(data, DealStageChanged):
        row = replace(row, stage=data.to_stage, stage_entered_at=at, last_activity_at=max(row.last_activity_at, at))
    elif isinstance(data, TouchpointLogged):
        row = replace(row, last_activity_at=max(row.last_activity_at, at))
    elif isinstance(data, DealAmountChanged):
        row = replace(row, amount=data.to_amount, currency=data.currency)
    elif isinstance(data, DealWon):
        entered = row.stage_entered_at if data.stage == row.stage else at
        row = replace(
            row,
            status="won",
            stage=data.stage,
            stage_entered_at=entered,
            amount=data.amount,
            currency=data.currency,
            closed_at=at,
            lost_reason=None,
        )
    elif isinstance(data, DealLost):
        entered = row.stage_entered_at if data.stage == row.stage else at
        row = replace(
            row, status="lost", stage=data.stage, stage_entered_at=entered, closed_at=at, lost_reason=data.reason
        )
    elif isinstance(data, DealReassigned):
        row = replace(row, owner=data.owner)
    elif isinstance(data, DealUpdated):
        row = _updated(row, data)
    elif isinstance(data, DealReopened) and row.status == "lost":
        # Back in play: a new stay in the stage it reopens in, so its age and rotting start afresh.
        row = replace(
            row,
            status="open",
            stage=data.stage,
            stage_entered_at=at,
            last_activity_at=max(row.last_activity_at, at),
            closed_at=None,
            lost_reason=None,
        )
    elif isinstance(data, TaskScheduled):
        # Scheduling is not activity: a task due next month must not keep a deal from rotting.
        tasks = tuple(sorted({**dict(row.open_tasks), data.task_id: data.due_at}.items()))
        row = replace(row, open_tasks=tasks, next_task_due_at=_next_due(tasks))
    elif isinstance(data, TaskCompleted):
        tasks = tuple((t, due) for t, due in row.open_tasks if t != data.task_id)
        row = replace(row, open_tasks=tasks, next_task_due_at=_next_due(tasks))
    state.deals[deal_id] = replace(row, version=seq)


def _updated(row: DealRow, data: DealUpdated) -> DealRow:
    """The row with the fields the update names set; a name read without its key stays as it was shown."""
    changes: dict[str, object] = {}
    if "name" in data.changed:
        changes["name"] = data.name or SEALED_NAME
    if "expected_close_date" in data.changed:
        changes["expected_close_date"] = data.expected_close_date
    if "next_step" in data.changed:
        changes["next_step"] = data.next_step
    return msgspec.structs.replace(row, **changes)


# --- the read side over rows --------------------------------------------------------------------------------


def is_rotting(status: Status, last_activity_at: dt.datetime, rotting_days: int | None, as_of: dt.datetime) -> bool:
    """An open deal with no activity for more than its stage's rotting days, as of a business time."""
    return status == "open" and rotting_days is not None and as_of - last_activity_at > dt.timedelta(rotting_days)


class AlertBadge(msgspec.Struct, frozen=True, kw_only=True):
    """An open follow-up SLA alert on a deal (joined from the SLA worker's read model at query time)."""

    alert_id: str
    kind: str
    rep: str | None
    deadline: dt.datetime
    escalated_to: str | None = None


class DealCard(msgspec.Struct, frozen=True, kw_only=True):
    deal_id: str
    name: str
    amount: Decimal
    currency: str
    owner: str | None
    status: Status
    stage_entered_at: dt.datetime
    age_in_stage_seconds: float
    last_activity_at: dt.datetime
    next_task_due_at: dt.datetime | None
    rotting: bool
    alerts: tuple[AlertBadge, ...] = ()
    # Joined from the people read model at query time (services/api/deal_people.py).
    decision_maker: str | None = None
    late_stage_without_decision_maker: bool = False


class Column(msgspec.Struct, frozen=True, kw_only=True):
    """One stage: counts and sums over every matching deal, one page of its deals (oldest in stage first).

    Sums are per currency: amounts in different currencies are never added together.
    """

    stage: str
    name: str | None
    probability: float
    rotting_days: int | None
    defined: bool
    count: int
    total: dict[str, Decimal]
    weighted: dict[str, Decimal]
    deals: list[DealCard]
    next_cursor: str | None


class PipelineBoard(msgspec.Struct, frozen=True, kw_only=True):
    pipeline_id: str
    name: str | None
    columns: list[Column]


class BoardCursor(msgspec.Struct, frozen=True, array_like=True):
    """Where a column's next page starts: after (stage_entered_at, deal_id) in that column."""

    pipeline_id: str
    stage: str
    status: Status
    owner: str | None
    stage_entered_at: dt.datetime
    deal_id: str

    def encode(self) -> str:
        return base64.urlsafe_b64encode(msgspec.json.encode(self)).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> BoardCursor:
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            return msgspec.json.decode(raw, type=cls)
        except (binascii.Error, ValueError, msgspec.DecodeError) as exc:
            raise ValueError("invalid board cursor") from exc


class ColumnStats(msgspec.Struct, frozen=True):
    count: int
    total: dict[str, Decimal]


class BoardQuery(msgspec.Struct, frozen=True, kw_only=True):
    """What a board request asks for, with a cursor's filters taking over when one is given."""

    pipeline_id: str | None = None
    stage: str | None = None
    owner: str | None = None
    status: Status = "open"
    after: tuple[dt.datetime, str] | None = None
    limit: int = 50

    @classmethod
    def make(
        cls, pipeline_id: str | None, owner: str | None, status: Status, cursor: str | None, limit: int
    ) -> BoardQuery:
        if not 1 <= limit <= 1000:
            raise ValueError("limit must be between 1 and 1000")
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}")
        if cursor is None:
            return cls(pipeline_id=pipeline_id, owner=owner, status=status, limit=limit)
        c = BoardCursor.decode(cursor)
        if (pipeline_id not in (None, c.pipeline_id)) or (owner not in (None, c.owner)):
            raise ValueError("the cursor belongs to another filter")
        return cls(
            pipeline_id=c.pipeline_id,
            stage=c.stage,
            owner=c.owner,
            status=c.status,
            after=(c.stage_entered_at, c.deal_id),
            limit=limit,
        )


def layout(
    query: BoardQuery,
    pipelines: Mapping[str, PipelineRow],
    stats: Mapping[tuple[str, str], ColumnStats],
    pages: Mapping[tuple[str, str], list[DealRow]],
    as_of: dt.datetime,
) -> list[PipelineBoard]:
    """Assemble the board from pipeline definitions, per-column stats and per-column pages (``limit + 1`` rows).

    Every defined pipeline appears (even empty) unless one is asked for; a pipeline or stage that deals refer
    to but no definition names still appears, after the defined stages, so every deal is in exactly one column.
    With a cursor only the cursor's column is returned.
    """
    ids = set(pipelines) | {p for p, _ in stats}
    if query.pipeline_id is not None:
        ids &= {query.pipeline_id}
    boards: list[PipelineBoard] = []
    for pipeline_id in sorted(ids):
        definition = pipelines.get(pipeline_id)
        stages = list(definition.stages) if definition else []
        known = {s.id for s in stages}
        extra = sorted(s for p, s in stats if p == pipeline_id and s not in known)
        columns: list[Column] = []
        for stage, defined in [(s, True) for s in stages] + [
            (Stage(id=s, name=s, probability=0.0), False) for s in extra
        ]:
            if query.stage is not None and stage.id != query.stage:
                continue
            st = stats.get((pipeline_id, stage.id), ColumnStats(0, {}))
            page = pages.get((pipeline_id, stage.id), [])
            more = len(page) > query.limit
            page = page[: query.limit]
            cards = [
                DealCard(
                    deal_id=d.deal_id,
                    name=d.name,
                    amount=in_minor_units(d.amount, d.currency),
                    currency=d.currency,
                    owner=d.owner,
                    status=d.status,
                    stage_entered_at=d.stage_entered_at,
                    age_in_stage_seconds=(as_of - d.stage_entered_at).total_seconds(),
                    last_activity_at=d.last_activity_at,
                    next_task_due_at=d.next_task_due_at,
                    rotting=is_rotting(d.status, d.last_activity_at, stage.rotting_days if defined else None, as_of),
                )
                for d in page
            ]
            next_cursor = (
                BoardCursor(
                    pipeline_id, stage.id, query.status, query.owner, page[-1].stage_entered_at, page[-1].deal_id
                ).encode()
                if more
                else None
            )
            columns.append(
                Column(
                    stage=stage.id,
                    name=stage.name if defined else None,
                    probability=stage.probability,
                    rotting_days=stage.rotting_days,
                    defined=defined,
                    count=st.count,
                    total=per_currency(st.total),
                    weighted=per_currency({c: weighted_amount(t, stage.probability) for c, t in st.total.items()}),
                    deals=cards,
                    next_cursor=next_cursor,
                )
            )
        boards.append(
            PipelineBoard(pipeline_id=pipeline_id, name=definition.name if definition else None, columns=columns)
        )
    return boards


def _matches(query: BoardQuery, deal: DealRow) -> bool:
    return (
        deal.status == query.status
        and (query.pipeline_id is None or deal.pipeline_id == query.pipeline_id)
        and (query.owner is None or deal.owner == query.owner)
        and (query.stage is None or deal.stage == query.stage)
    )


def build_board(
    state: BoardState,
    as_of: dt.datetime,
    pipeline_id: str | None = None,
    owner: str | None = None,
    status: Status = "open",
    cursor: str | None = None,
    limit: int = 50,
) -> list[PipelineBoard]:
    """The board from in-memory rows: the reference the SQL query is tested against."""
    query = BoardQuery.make(pipeline_id, owner, status, cursor, limit)
    counts: dict[tuple[str, str], int] = {}
    totals: dict[tuple[str, str], dict[str, Decimal]] = {}
    pages: dict[tuple[str, str], list[DealRow]] = {}
    for deal in state.deals.values():
        if not _matches(query, deal):
            continue
        key = (deal.pipeline_id, deal.stage)
        counts[key] = counts.get(key, 0) + 1
        per_currency = totals.setdefault(key, {})
        per_currency[deal.currency] = per_currency.get(deal.currency, Decimal(0)) + deal.amount
        if query.after is None or (deal.stage_entered_at, deal.deal_id) > query.after:
            pages.setdefault(key, []).append(deal)
    for page in pages.values():
        page.sort(key=lambda d: (d.stage_entered_at, d.deal_id))
        del page[query.limit + 1 :]
    stats = {key: ColumnStats(n, totals[key]) for key, n in counts.items()}
    return layout(query, state.pipelines, stats, pages, as_of)
