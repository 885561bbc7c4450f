"""Properties of the board over generated logs: every deal in exactly one column. The fold's laws (idempotent,
batch- and shard-split invariant) are in test_fold_laws, over these logs."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from events.envelope import StoredEvent
from events.types import DealReassigned, DealReopened, DealUpdated, Event, PipelineDefined, StageDefinition
from projections.board import STATUSES, build_board, fold
from tests.builders import T0
from tests.projection_fixtures import amount, done, lost, moved, opened, stored, task, touch, won

STAGES = ["new", "qualified", "proposal", "odd"]
DEALS = [f"deal{i}" for i in range(6)]
PIPELINES = ["p1", "p2"]
HOUR = dt.timedelta(hours=1)


@st.composite
def deal_event(draw: st.DrawFn) -> Event:
    kinds = ["open", "move", "touch", "task", "done", "amount", "won", "lost", "reassign", "update", "reopen"]
    kind = draw(st.sampled_from(kinds))
    stage = draw(st.sampled_from(STAGES))
    if kind in ("reassign", "update", "reopen"):
        return draw(deal_edit(stage))
    if kind == "open":
        return opened(
            stage=stage,
            amount=str(draw(st.integers(0, 10_000))),
            owner=draw(st.sampled_from(["a", "b"])),
            currency=draw(st.sampled_from(["EUR", "USD"])),
            pipeline_id=draw(st.sampled_from(PIPELINES)),
        )
    if kind == "move":
        return moved("x", stage)
    if kind == "touch":
        return touch()
    task_id = draw(st.sampled_from(["t1", "t2", "t3"]))
    if kind == "task":
        return task(task_id, T0 + draw(st.integers(0, 2000)) * HOUR)
    if kind == "done":
        return done(task_id)
    if kind == "amount":
        return amount("0", str(draw(st.integers(0, 10_000))))
    return won(stage) if kind == "won" else lost(stage)


@st.composite
def deal_edit(draw: st.DrawFn, stage: str) -> Event:
    """A reassignment, a correction or a reopening (the events of deal edits)."""
    kind = draw(st.sampled_from(["reassign", "update", "reopen"]))
    if kind == "reassign":
        return DealReassigned(owner=draw(st.sampled_from(["a", "b", "c"])), previous_owner="a")
    if kind == "reopen":
        return DealReopened(stage=stage, lost_stage="new", lost_reason="price")
    changed = tuple(
        draw(st.lists(st.sampled_from(["name", "expected_close_date", "next_step"]), min_size=1, unique=True))
    )
    close = draw(st.none() | st.dates(dt.date(2026, 1, 1), dt.date(2027, 1, 1)))
    return DealUpdated(
        changed=changed, name="Renamed", expected_close_date=close, next_step=draw(st.none() | st.just("call"))
    )


@st.composite
def logs(draw: st.DrawFn) -> list[StoredEvent]:
    """A log: deal and pipeline events with strictly increasing sequences (with gaps: other aggregates)."""
    n = draw(st.integers(0, 60))
    events: list[StoredEvent] = []
    seq = 0
    for _ in range(n):
        seq += draw(st.integers(1, 3))
        at = T0 + draw(st.integers(0, 1000)) * HOUR
        if draw(st.integers(0, 9)) == 0:
            stages = draw(st.lists(st.sampled_from(STAGES[:3]), min_size=1, max_size=3, unique=True))
            rotting = st.none() | st.integers(0, 30)
            data: Event = PipelineDefined(
                name="P",
                stages=[
                    StageDefinition(id=s, name=s.title(), probability=0.25, rotting_days=draw(rotting)) for s in stages
                ],
            )
            events.append(stored(seq, data, draw(st.sampled_from(PIPELINES)), at, "pipeline"))
        else:
            events.append(stored(seq, draw(deal_event()), draw(st.sampled_from(DEALS)), at))
    return events


@settings(max_examples=200, deadline=None)
@given(logs(), st.integers(0, 2000))
def test_every_deal_is_in_exactly_one_column_and_counts_add_up(events: list[StoredEvent], hours: int) -> None:
    state = fold(events)
    as_of = T0 + hours * HOUR
    for status in STATUSES:
        boards = build_board(state, as_of=as_of, status=status, limit=1000)
        placed = [d.deal_id for b in boards for c in b.columns for d in c.deals]
        wanted = sorted(d.deal_id for d in state.deals.values() if d.status == status)
        assert sorted(placed) == wanted
        assert len(placed) == len(set(placed))
        for board in boards:
            assert len({c.stage for c in board.columns}) == len(board.columns)
            for column in board.columns:
                assert column.count >= 0 and column.count == len(column.deals)
                assert all(v >= 0 for v in column.total.values())
                for currency, total in column.total.items():
                    assert total == sum((d.amount for d in column.deals if d.currency == currency), Decimal(0))
                assert all(d.rotting is False for d in column.deals) or status == "open"
