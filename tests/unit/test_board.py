"""The board fold and the in-memory board, without servers."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from events.types import PipelineDefined, StageDefinition
from projections.board import BoardState, Status, build_board, fold, is_rotting
from tests.builders import T0
from tests.projection_fixtures import (
    DAY,
    done,
    expected_rows,
    moved,
    opened,
    sales_script,
    script_events,
    stored,
    task,
    touch,
)


def test_the_scripted_scenario_folds_to_the_expected_rows() -> None:
    state = fold(script_events(sales_script()))
    assert state.deals == expected_rows()
    assert [s.id for s in state.pipelines["sales"].stages] == ["new", "qualified", "proposal", "negotiation"]
    assert state.pipelines["sales"].version == 1


def test_the_scripted_board_has_columns_sums_weights_and_rotting() -> None:
    [sales] = build_board(fold(script_events(sales_script())), as_of=T0 + 12 * DAY)
    assert sales.name == "Sales"
    by_stage = {c.stage: c for c in sales.columns}
    assert [c.stage for c in sales.columns] == ["new", "qualified", "proposal", "negotiation", "pilot"]
    assert [c.count for c in sales.columns] == [1, 1, 0, 0, 1]
    assert by_stage["new"].total == {"USD": Decimal(300)} and by_stage["new"].weighted == {"USD": Decimal(30)}
    assert by_stage["qualified"].weighted == {"EUR": Decimal(300)}
    assert not by_stage["pilot"].defined and by_stage["pilot"].weighted == {"EUR": Decimal(0)}
    # 11 days idle against 7 rots; exactly 10 days against 10 does not; an undefined stage never rots.
    assert by_stage["new"].deals[0].rotting
    assert not by_stage["qualified"].deals[0].rotting
    assert not by_stage["pilot"].deals[0].rotting
    assert by_stage["qualified"].deals[0].age_in_stage_seconds == (10 * DAY).total_seconds()
    assert by_stage["qualified"].deals[0].next_task_due_at == T0 + 30 * DAY


def test_closed_deals_leave_the_open_board_but_answer_a_status_filter() -> None:
    state = fold(script_events(sales_script()))
    [won] = build_board(state, as_of=T0, status="won")
    assert [(c.stage, [d.deal_id for d in c.deals]) for c in won.columns if c.count] == [("proposal", ["initech"])]
    [lost] = build_board(state, as_of=T0, status="lost")
    assert [d.deal_id for c in lost.columns for d in c.deals] == ["umbrella"]
    assert not any(d.rotting for c in lost.columns for d in c.deals)
    [mine] = build_board(state, as_of=T0, owner="bo")
    assert [d.deal_id for c in mine.columns for d in c.deals] == ["globex"]


def test_replayed_and_stale_events_change_nothing() -> None:
    events = script_events(sales_script())
    once = fold(events)
    assert fold(events, once.copy()) == once
    assert fold(events[:5], once.copy()) == once


def test_a_scheduled_task_is_not_activity_and_the_earliest_open_task_is_next() -> None:
    state = fold(
        [
            stored(1, opened()),
            stored(2, task("a", T0 + 9 * DAY), at=T0 + DAY),
            stored(3, task("b", T0 + 5 * DAY), at=T0 + 2 * DAY),
        ]
    )
    row = state.deals["d1"]
    assert row.last_activity_at == T0 and row.next_task_due_at == T0 + 5 * DAY
    fold([stored(4, done("b"), at=T0 + 3 * DAY)], state)
    assert state.deals["d1"].next_task_due_at == T0 + 9 * DAY
    fold([stored(5, done("a")), stored(6, done("missing"))], state)
    assert state.deals["d1"].next_task_due_at is None and state.deals["d1"].version == 6


def test_a_late_touchpoint_never_moves_last_activity_back() -> None:
    state = fold([stored(1, opened()), stored(2, touch(), at=T0 + 3 * DAY), stored(3, touch(2), at=T0 + DAY)])
    assert state.deals["d1"].last_activity_at == T0 + 3 * DAY


def test_a_pipeline_redefinition_replaces_it_and_a_stale_one_is_ignored() -> None:
    v2 = PipelineDefined(name="Sales v2", stages=[StageDefinition(id="only", name="Only", probability=1.0)])
    state = fold([stored(1, v2, "sales", aggregate_type="pipeline")])
    assert fold([stored(1, v2, "sales", aggregate_type="pipeline")], state.copy()) == state
    state = fold([stored(2, v2, "p", aggregate_type="pipeline"), stored(5, v2, "p", aggregate_type="pipeline")])
    assert state.pipelines["p"].version == 5


def test_events_before_a_deal_is_opened_are_not_on_the_board() -> None:
    state = fold([stored(1, touch()), stored(2, moved("a", "b")), stored(3, opened())])
    assert state.deals["d1"].stage == "new" and state.deals["d1"].version == 3


def test_moving_a_deal_resets_its_age_in_stage() -> None:
    state = fold([stored(1, opened()), stored(2, moved("new", "qualified"), at=T0 + 4 * DAY)])
    assert state.deals["d1"].stage_entered_at == T0 + 4 * DAY


@pytest.mark.parametrize(
    ("idle", "days", "status", "expected"),
    [(8, 7, "open", True), (7, 7, "open", False), (100, None, "open", False), (100, 7, "won", False)],
)
def test_rotting(idle: int, days: int | None, status: Status, expected: bool) -> None:
    assert is_rotting(status, T0, days, T0 + idle * DAY) is expected


def test_cursor_pages_walk_one_column_in_order() -> None:
    events = [
        stored(
            1,
            PipelineDefined(name="P", stages=[StageDefinition(id="new", name="New", probability=0.5)]),
            "sales",
            aggregate_type="pipeline",
        )
    ]
    events += [stored(i + 2, opened(f"D{i}"), f"d{i:02}", at=T0 + (i % 4) * DAY) for i in range(23)]
    state = fold(events)
    [first] = build_board(state, as_of=T0 + 10 * DAY, limit=10)
    seen = [d.deal_id for d in first.columns[0].deals]
    cursor = first.columns[0].next_cursor
    assert first.columns[0].count == 23
    while cursor is not None:
        [page] = build_board(state, as_of=T0 + 10 * DAY, cursor=cursor, limit=10)
        assert [c.stage for c in page.columns] == ["new"] and page.columns[0].count == 23
        seen += [d.deal_id for d in page.columns[0].deals]
        cursor = page.columns[0].next_cursor
    ordered = sorted(state.deals.values(), key=lambda d: (d.stage_entered_at, d.deal_id))
    assert seen == [d.deal_id for d in ordered]


def test_bad_cursor_and_limit_are_refused() -> None:
    with pytest.raises(ValueError, match="cursor"):
        build_board(BoardState(), as_of=T0, cursor="not-a-cursor")
    with pytest.raises(ValueError, match="limit"):
        build_board(BoardState(), as_of=T0, limit=0)


def test_as_of_is_business_time_not_the_clock() -> None:
    state = fold(script_events(sales_script()))
    early = build_board(state, as_of=T0 + 3 * DAY)
    late = build_board(state, as_of=T0 + dt.timedelta(days=400))
    assert not any(d.rotting for b in early for c in b.columns for d in c.deals)
    assert [d.deal_id for b in late for c in b.columns for d in c.deals if d.rotting] == ["globex", "acme"]
