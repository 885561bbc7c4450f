"""The tasks read model in PostgreSQL (a rep's open, overdue and due-today tasks) and its list query."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, Literal

import msgspec
from psycopg import AsyncConnection, AsyncCursor

from events.aggregates import Rejected
from events.envelope import AggregateType, StoredEvent
from events.types import Event, LeadErased, TaskScheduled
from projections.batch import BatchProjection, changed
from projections.board import ERASED_NAME
from projections.instants import utc, utc_or_none
from projections.listing import SortField, Where, bounded_limit, decode_cursor, keyset, page_of, parse_sort
from projections.tasks import TaskKey, TaskRow, TasksState, TaskSubject, apply
from projections.versions import build_name

VERSION = 1
"""The tasks fold's logic version: bump it when a change to the fold alters rows, and the new build rebuilds."""
BUILD = build_name("tasks", VERSION)

_SUBJECT_FIELDS = ("subject_type", "subject_id", "owner", "lead_id", "version")
_TASK_FIELDS = (
    "subject_type",
    "subject_id",
    "task_id",
    "title",
    "due_at",
    "scheduled_at",
    "own_owner",
    "owner",
    "lead_id",
    "completed_at",
    "version",
)
_TASK_COLUMNS = ", ".join(_TASK_FIELDS)
TaskStatus = Literal["open", "overdue", "due_today"]
TASK_STATUSES: tuple[TaskStatus, ...] = ("open", "overdue", "due_today")


def _upsert(table: str, fields: Sequence[str], key: str, extra: str = "") -> str:
    names = [*fields, *([extra] if extra else [])]
    values = ", ".join(["%s"] * len(names))
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in names if c not in key.split(", "))
    return (
        f"INSERT INTO {table} ({', '.join(names)}) VALUES ({values}) ON CONFLICT ({key}) "  # noqa: S608
        f"DO UPDATE SET {updates} WHERE {table}.version < EXCLUDED.version"
    )


class TasksSql:
    def __init__(self, build: str) -> None:
        self.subjects, self.tasks = f"{build}_subjects", f"{build}_tasks"
        self.ddl = (
            f"CREATE TABLE IF NOT EXISTS {self.subjects} (subject_type text NOT NULL, subject_id text NOT NULL, "
            "owner text, lead_id text, version bigint NOT NULL, PRIMARY KEY (subject_type, subject_id))",
            f"CREATE TABLE IF NOT EXISTS {self.tasks} (task_key text PRIMARY KEY, subject_type text NOT NULL, "
            "subject_id text NOT NULL, task_id text NOT NULL, title text NOT NULL, due_at timestamptz NOT NULL, "
            "scheduled_at timestamptz NOT NULL, own_owner text, owner text, lead_id text, completed_at timestamptz, "
            "version bigint NOT NULL)",
            f"CREATE INDEX IF NOT EXISTS {self.tasks}_subject ON {self.tasks} (subject_type, subject_id)",
            # A rep's open tasks in due order: the list is one range scan of this index.
            f"CREATE INDEX IF NOT EXISTS {self.tasks}_owner_due ON {self.tasks} (owner, due_at, task_key) "
            "WHERE completed_at IS NULL",
            f"CREATE INDEX IF NOT EXISTS {self.tasks}_lead ON {self.tasks} (lead_id)",
        )
        self.upsert_subject = _upsert(self.subjects, _SUBJECT_FIELDS, "subject_type, subject_id")
        self.upsert_task = _upsert(self.tasks, _TASK_FIELDS, "task_key", "task_key")
        self.scrub_lead = f"UPDATE {self.tasks} SET title = %s WHERE lead_id = %s AND title <> %s"  # noqa: S608


def task_key(key: TaskKey) -> str:
    """One text key per task ('/' is in no id, so the parts cannot run together)."""
    return "/".join(key)


def _task(r: Sequence[Any]) -> TaskRow:
    row = dict(zip(_TASK_FIELDS, r, strict=True))
    row.update(due_at=utc(row["due_at"]), scheduled_at=utc(row["scheduled_at"]))
    row["completed_at"] = utc_or_none(row["completed_at"])
    return TaskRow(**row)


class TasksProjection(BatchProjection[TasksState]):
    """Every follow-up task with its effective owner and due time: ``GET /v1/tasks`` reads it."""

    name = "tasks"
    version = VERSION
    # A task and the lead or deal it hangs on are one aggregate: split by partition like them.
    partitioned: tuple[AggregateType, ...] = ("lead", "deal")
    broadcast: tuple[AggregateType, ...] = ()
    # A task's title, sealed in the log; scrubbed here when the lead it is about is erased.
    reads_personal: tuple[type[Event], ...] = (TaskScheduled,)

    def __init__(self, instance: str = "") -> None:
        self.build = build_name(self.name, self.version, instance)
        self.sql = TasksSql(self.build)

    def ddl(self) -> Sequence[str]:
        return self.sql.ddl

    async def load_touched(self, conn: AsyncConnection[Any], events: Sequence[StoredEvent]) -> TasksState:
        keys = sorted({(e.envelope.aggregate_type, e.envelope.aggregate_id) for e in events})
        types, ids = [k[0] for k in keys], [k[1] for k in keys]
        state = TasksState()
        async with conn.cursor() as cur:
            await cur.execute(
                f"SELECT {', '.join(_SUBJECT_FIELDS)} FROM {self.sql.subjects} "  # noqa: S608
                "WHERE (subject_type, subject_id) IN (SELECT * FROM unnest(%s::text[], %s::text[]))",
                (types, ids),
            )
            for r in await cur.fetchall():
                state.subjects[(r[0], r[1])] = TaskSubject(**dict(zip(_SUBJECT_FIELDS, r, strict=True)))
            await cur.execute(
                f"SELECT {_TASK_COLUMNS} FROM {self.sql.tasks} "  # noqa: S608
                "WHERE (subject_type, subject_id) IN (SELECT * FROM unnest(%s::text[], %s::text[]))",
                (types, ids),
            )
            for r in await cur.fetchall():
                task = _task(r)
                state.tasks[(task.subject_type, task.subject_id, task.task_id)] = task
        return state

    def fold(self, state: TasksState, event: StoredEvent) -> None:
        apply(state, event)

    async def write_changes(
        self, cur: AsyncCursor[Any], before: TasksState, after: TasksState, events: Sequence[StoredEvent]
    ) -> None:
        subjects = changed(after.subjects, before.subjects)
        if subjects:
            await cur.executemany(
                self.sql.upsert_subject, [tuple(getattr(s, f) for f in _SUBJECT_FIELDS) for s in subjects]
            )
        tasks = [(k, t) for k, t in sorted(after.tasks.items()) if t is not before.tasks.get(k)]
        if tasks:
            await cur.executemany(
                self.sql.upsert_task, [(*(getattr(t, f) for f in _TASK_FIELDS), task_key(k)) for k, t in tasks]
            )
        # After the batch's rows are written, so a task folded in the same batch is scrubbed too.
        for e in events:
            if isinstance(e.envelope.data, LeadErased):
                await cur.execute(self.sql.scrub_lead, (ERASED_NAME, e.envelope.aggregate_id, ERASED_NAME))


class TaskItem(msgspec.Struct, frozen=True, kw_only=True):
    """One task in a rep's list: what it is on, its title, when it is due, whose it is."""

    subject_type: str
    subject_id: str
    task_id: str
    title: str
    due_at: dt.datetime
    scheduled_at: dt.datetime
    owner: str | None
    overdue: bool


class TaskPage(msgspec.Struct, frozen=True, kw_only=True):
    tasks: list[TaskItem]
    next_cursor: str | None


_SORTS = (SortField("due_at", "due_at", "time"),)


async def task_page(
    conn: AsyncConnection[Any],
    owner: str | None,
    status: TaskStatus,
    now: dt.datetime,
    today: tuple[dt.datetime, dt.datetime] | None,
    cursor: str | None = None,
    limit: int | None = None,
    build: str = BUILD,
) -> TaskPage:
    """Open tasks, earliest due first: all of them, the overdue ones (due before ``now``), or those due in
    ``today`` (the owner's day, [start, end) in UTC)."""
    if status not in TASK_STATUSES:
        raise Rejected("status", f"must be one of {', '.join(TASK_STATUSES)}", 422)
    size = bounded_limit(limit)
    order = parse_sort(None, _SORTS, "due_at")
    named: dict[str, object] = {"owner": owner, "status": status, "today": today and today[0].isoformat()}
    after = decode_cursor(cursor, order, named) if cursor is not None else None
    where = Where(["completed_at IS NULL"])
    where.add_if(owner, "owner = %s")
    if status == "overdue":
        where.add("due_at < %s", now)
    elif status == "due_today":
        assert today is not None
        where.add("due_at >= %s AND due_at < %s", *today)
    order_by = keyset(where, order, after, "task_key")
    tables = TasksSql(build)
    cur = await conn.execute(
        f"SELECT {_TASK_COLUMNS}, task_key FROM {tables.tasks} WHERE {where.sql} {order_by} LIMIT %s",  # noqa: S608
        [*where.params, size + 1],
    )
    rows = [(_task(r[:-1]), r[-1]) for r in await cur.fetchall()]
    page = page_of(rows, size, order, named, lambda row: (row[0].due_at, row[1]))
    items = [
        TaskItem(
            subject_type=t.subject_type,
            subject_id=t.subject_id,
            task_id=t.task_id,
            title=t.title,
            due_at=t.due_at,
            scheduled_at=t.scheduled_at,
            owner=t.owner,
            overdue=t.due_at < now,
        )
        for t, _ in page.rows
    ]
    return TaskPage(tasks=items, next_cursor=page.next_cursor)
