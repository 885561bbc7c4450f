"""The velocity and tasks stores keep what the deal edits fold to: reassignments, reopenings and task owners are
read back from PostgreSQL as the pure fold holds them, however the batches overlap."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest

from events.envelope import StoredEvent
from events.types import DealReassigned, DealReopened, TaskCompleted, TaskScheduled
from projections import tasks, velocity
from projections.tasks_store import TasksProjection, task_page
from projections.velocity_store import VelocityProjection, read_state
from tests.projection_fixtures import lost, opened, stored
from workers.checkpoints import ensure_schema

pytestmark = pytest.mark.integration

T0 = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)


def log() -> list[StoredEvent]:
    return [
        stored(1, opened(stage="new", owner="ana"), "d1", T0),
        stored(2, TaskScheduled(task_id="t1", title="Call", due_at=T0 + DAY), "d1", T0),
        stored(3, DealReassigned(owner="ben", previous_owner="ana"), "d1", T0 + DAY),
        stored(4, lost("new", "price"), "d1", T0 + 2 * DAY),
        stored(5, DealReopened(stage="new", lost_stage="new", lost_reason="price"), "d1", T0 + 3 * DAY),
        stored(6, opened(stage="new", owner="cy"), "d2", T0),
        stored(7, TaskScheduled(task_id="t1", title="Demo", due_at=T0 + 2 * DAY, owner="bo"), "d2", T0),
        stored(8, TaskCompleted(task_id="t1"), "d2", T0 + DAY),
    ]


async def test_overlapping_batches_store_what_the_folds_hold(pg_dsn: str) -> None:
    events = log()
    facts, todo = VelocityProjection(), TasksProjection()
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        for projection in (facts, todo):
            await ensure_schema(conn, projection)
        for batch in (events[:3], events[:4], events[2:], events, events[-1:]):
            async with conn.transaction():
                await facts.apply_batch(conn, batch)
                await todo.apply_batch(conn, batch)
        stored_facts = await read_state(conn)
        page = await task_page(conn, None, "open", T0, None, build=todo.build)
        everything = await task_page(conn, "ben", "overdue", T0 + 5 * DAY, None, build=todo.build)
    assert stored_facts == velocity.fold(events)
    reopened = stored_facts.deals["d1"]
    assert reopened.outcome is None and [r.lost_reason for r in reopened.reopens] == ["price"]
    assert velocity.deal_owner(reopened) == "ben"
    expected = tasks.fold(events)
    assert [(t.subject_id, t.task_id, t.owner) for t in page.tasks] == [("d1", "t1", "ben")]
    assert [t.task_id for t in everything.tasks] == ["t1"] and everything.tasks[0].overdue
    assert {k: v.owner for k, v in expected.tasks.items() if v.completed_at is None} == {("deal", "d1", "t1"): "ben"}
