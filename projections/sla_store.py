"""The SLA timers in PostgreSQL: the projection that writes them, and the queries the scheduler and the API use."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, Literal

import msgspec
from psycopg import AsyncConnection, AsyncCursor

from events.envelope import AggregateType, StoredEvent
from events.subjects import partition_of
from projections.batch import BatchProjection, changed
from projections.sla import SlaState, Subject, Timer, apply
from projections.sla_rules import SlaRules
from projections.staging import StagedUpsert, typed
from projections.versions import BuildVersion, build_name

VERSION = 2
"""The SLA fold's logic version. A build is this and the policies' version (:class:`BuildVersion`), so a new
policy version rebuilds the timers too (``sla_v201`` is fold v2 under policies v1)."""

_DDL = (
    """
    CREATE TABLE IF NOT EXISTS {t}subjects (
        subject_type text NOT NULL,
        subject_id text NOT NULL,
        owner text,
        source text,
        pipeline_id text,
        stage text,
        open boolean NOT NULL,
        version bigint NOT NULL,
        PRIMARY KEY (subject_type, subject_id)
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS {t}timers (
        timer_id text PRIMARY KEY,
        subject_type text NOT NULL,
        subject_id text NOT NULL,
        partition smallint NOT NULL,
        kind text NOT NULL,
        policy text NOT NULL,
        rep text,
        started_at timestamptz NOT NULL,
        deadline timestamptz NOT NULL,
        state text NOT NULL,
        met_at timestamptz,
        task_id text,
        stage text,
        escalate_at timestamptz,
        raised_at timestamptz,
        escalated_to text,
        escalated_at timestamptz,
        resolved_at timestamptz,
        resolution text,
        version bigint NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS {t}timers_subject ON {t}timers (subject_type, subject_id) WHERE state IN "
    "('pending', 'raised', 'lapsed')",
    "CREATE INDEX IF NOT EXISTS {t}timers_due ON {t}timers (deadline) WHERE state = 'pending'",
    "CREATE INDEX IF NOT EXISTS {t}timers_escalation ON {t}timers (escalate_at) "
    "WHERE state = 'raised' AND resolved_at IS NULL AND escalated_at IS NULL",
    "CREATE INDEX IF NOT EXISTS {t}timers_alerts ON {t}timers (raised_at DESC, timer_id) WHERE state = 'raised'",
    """
    CREATE TABLE IF NOT EXISTS {t}pipelines (
        pipeline_id text PRIMARY KEY,
        rotting jsonb NOT NULL,
        version bigint NOT NULL
    )
    """,
)

_SUBJECT_FIELDS = ("subject_type", "subject_id", "owner", "source", "pipeline_id", "stage", "open", "version")
_TIMER_FIELDS: tuple[str, ...] = Timer.__struct_fields__
"""The timer table's columns, in the order a row is written: the Timer's own fields."""
TIMER_COLUMNS = ", ".join(_TIMER_FIELDS)
_SUBJECT_COLUMNS = ", ".join(_SUBJECT_FIELDS)


def _upsert(table: str, fields: Sequence[str], key: str, extra: Sequence[str] = ()) -> str:
    names = [*fields, *extra]
    return (
        f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join(['%s'] * len(names))}) "  # noqa: S608
        f"ON CONFLICT ({key}) DO UPDATE SET "
        + ", ".join(f"{c} = EXCLUDED.{c}" for c in names if c not in key.split(", "))
        + f" WHERE {table}.version < EXCLUDED.version"
    )


class SlaSql:
    """The statements over one build's tables."""

    def __init__(self, build: str) -> None:
        t = f"{build}_"
        self.subjects, self.timers, self.pipelines = f"{t}subjects", f"{t}timers", f"{t}pipelines"
        self.ddl = tuple(statement.format(t=t) for statement in _DDL)
        self.staged_subjects = StagedUpsert(self.subjects, typed(_DDL[0], _SUBJECT_FIELDS), "subject_type, subject_id")
        self.staged_timers = StagedUpsert(self.timers, typed(_DDL[1], (*_TIMER_FIELDS, "partition")), "timer_id")
        self.upsert_pipeline = _upsert(self.pipelines, ("pipeline_id", "rotting", "version"), "pipeline_id")


def timer_from_record(r: Sequence[Any]) -> Timer:
    return Timer(**{name: value for name, value in zip(_TIMER_FIELDS, r, strict=True)})


def _timer_params(t: Timer) -> tuple[Any, ...]:
    return (*msgspec.structs.astuple(t), partition_of(t.subject_id))


_rotting_decoder = msgspec.json.Decoder(dict[str, int | None])


async def load_state(
    conn: AsyncConnection[Any],
    sql: SlaSql,
    subjects: Sequence[tuple[str, str]],
    timer_ids: Sequence[str],
) -> SlaState:
    """The touched subjects with their open timers, the timers named by alert events, and every pipeline."""
    state = SlaState()
    async with conn.cursor() as cur:
        if subjects:
            types, ids = [s[0] for s in subjects], [s[1] for s in subjects]
            await cur.execute(
                f"SELECT {_SUBJECT_COLUMNS} FROM {sql.subjects} "  # noqa: S608
                "WHERE (subject_type, subject_id) IN (SELECT * FROM unnest(%s::text[], %s::text[]))",
                (types, ids),
            )
            for r in await cur.fetchall():
                subject = Subject(**dict(zip(_SUBJECT_FIELDS, r, strict=True)))
                state.subjects[(subject.subject_type, subject.subject_id)] = subject
            await cur.execute(
                f"SELECT {TIMER_COLUMNS} FROM {sql.timers} "  # noqa: S608
                "WHERE (subject_type, subject_id) IN (SELECT * FROM unnest(%s::text[], %s::text[])) "
                "AND state IN ('pending', 'raised', 'lapsed')",
                (types, ids),
            )
            for r in await cur.fetchall():
                timer = timer_from_record(r)
                state.timers[timer.timer_id] = timer
        if timer_ids:
            await cur.execute(
                f"SELECT {TIMER_COLUMNS} FROM {sql.timers} WHERE timer_id = ANY(%s)",  # noqa: S608
                (list(timer_ids),),
            )
            for r in await cur.fetchall():
                timer = timer_from_record(r)
                state.timers[timer.timer_id] = timer
        await cur.execute(f"SELECT pipeline_id, rotting::text, version FROM {sql.pipelines}")  # noqa: S608
        for pipeline_id, rotting, version in await cur.fetchall():
            state.pipelines[pipeline_id] = _rotting_decoder.decode(rotting)
            state.pipeline_versions[pipeline_id] = version
    return state


class SlaProjection(BatchProjection[SlaState]):
    """Follow-up SLA timers and the alerts raised on them."""

    name = "sla"
    partitioned: tuple[AggregateType, ...] = ("lead", "deal")
    # Every shard needs every pipeline (rotting days) and sees every alert; it folds the alerts of its own timers.
    broadcast: tuple[AggregateType, ...] = ("pipeline", "alert")

    def __init__(self, rules: SlaRules, instance: str = "") -> None:
        self.rules = rules
        self.version = BuildVersion(VERSION, rules.version).number
        self.build = build_name(self.name, self.version, instance)
        self.sql = SlaSql(self.build)

    def ddl(self) -> Sequence[str]:
        return self.sql.ddl

    async def load_touched(self, conn: AsyncConnection[Any], events: Sequence[StoredEvent]) -> SlaState:
        subjects = sorted(
            {
                (e.envelope.aggregate_type, e.envelope.aggregate_id)
                for e in events
                if e.envelope.aggregate_type != "alert"
            }
            - {("pipeline", e.envelope.aggregate_id) for e in events}
        )
        alerts = sorted({e.envelope.aggregate_id for e in events if e.envelope.aggregate_type == "alert"})
        return await load_state(conn, self.sql, subjects, alerts)

    def fold(self, state: SlaState, event: StoredEvent) -> None:
        apply(state, event, self.rules)

    async def write_changes(
        self, cur: AsyncCursor[Any], before: SlaState, after: SlaState, events: Sequence[StoredEvent]
    ) -> None:
        changed_subjects = changed(after.subjects, before.subjects)
        changed_timers = changed(after.timers, before.timers)
        # A pipeline's rotting days are a plain dict, replaced with its version: compared by version, not identity.
        changed_pipelines = [
            (k, msgspec.json.encode(after.pipelines[k]).decode(), after.pipeline_versions[k])
            for k in sorted(after.pipelines)
            if after.pipeline_versions[k] != before.pipeline_versions.get(k)
        ]
        if changed_subjects:
            await self.sql.staged_subjects.write(
                cur, [tuple(getattr(s, f) for f in _SUBJECT_FIELDS) for s in changed_subjects]
            )
        if changed_timers:
            await self.sql.staged_timers.write(cur, [_timer_params(t) for t in changed_timers])
        if changed_pipelines:
            await cur.executemany(self.sql.upsert_pipeline, changed_pipelines)


async def read_state(conn: AsyncConnection[Any], build: str) -> SlaState:
    """Every stored row of one build: for tests and rebuild comparisons."""
    sql = SlaSql(build)
    state = SlaState()
    async with conn.cursor() as cur:
        await cur.execute(f"SELECT {_SUBJECT_COLUMNS} FROM {sql.subjects}")  # noqa: S608
        for r in await cur.fetchall():
            subject = Subject(**dict(zip(_SUBJECT_FIELDS, r, strict=True)))
            state.subjects[(subject.subject_type, subject.subject_id)] = subject
        await cur.execute(f"SELECT {TIMER_COLUMNS} FROM {sql.timers}")  # noqa: S608
        for r in await cur.fetchall():
            timer = timer_from_record(r)
            state.timers[timer.timer_id] = timer
    return state


async def due_timers(
    conn: AsyncConnection[Any], build: str, partitions: Sequence[int], now: dt.datetime, limit: int = 200
) -> list[Timer]:
    """Pending timers of these partitions whose deadline has passed and that were not met in time."""
    cur = await conn.execute(
        f"SELECT {TIMER_COLUMNS} FROM {SlaSql(build).timers} WHERE state = 'pending' AND deadline <= %s "  # noqa: S608
        "AND (met_at IS NULL OR met_at > deadline) AND partition = ANY(%s) ORDER BY deadline, timer_id LIMIT %s",
        (now, list(partitions), limit),
    )
    return [timer_from_record(r) for r in await cur.fetchall()]


async def due_escalations(
    conn: AsyncConnection[Any], build: str, partitions: Sequence[int], now: dt.datetime, limit: int = 200
) -> list[Timer]:
    """Raised alerts, unanswered and not yet escalated, whose escalation time has passed."""
    cur = await conn.execute(
        f"SELECT {TIMER_COLUMNS} FROM {SlaSql(build).timers} WHERE state = 'raised' AND resolved_at IS NULL "  # noqa: S608
        "AND escalated_at IS NULL AND escalate_at <= %s AND partition = ANY(%s) ORDER BY escalate_at, timer_id "
        "LIMIT %s",
        (now, list(partitions), limit),
    )
    return [timer_from_record(r) for r in await cur.fetchall()]


AlertStatus = Literal["open", "resolved", "all"]


async def alerts(
    conn: AsyncConnection[Any],
    build: str,
    rep: str | None = None,
    status: AlertStatus = "all",
    subject: tuple[str, str] | None = None,
    before: tuple[dt.datetime, str] | None = None,
    limit: int = 50,
) -> list[Timer]:
    """Raised alerts, newest first: by rep (the rep or the manager it was escalated to), open or resolved,
    for one lead or deal; ``before`` is the keyset of the last alert of the previous page."""
    where = ["state = 'raised'"]
    params: list[Any] = []
    if rep is not None:
        where.append("(rep = %s OR escalated_to = %s)")
        params += [rep, rep]
    if status == "open":
        where.append("resolved_at IS NULL")
    elif status == "resolved":
        where.append("resolved_at IS NOT NULL")
    if subject is not None:
        where.append("subject_type = %s AND subject_id = %s")
        params += list(subject)
    if before is not None:
        where.append("(raised_at, timer_id) < (%s, %s)")
        params += list(before)
    cur = await conn.execute(
        f"SELECT {TIMER_COLUMNS} FROM {SlaSql(build).timers} WHERE {' AND '.join(where)} "  # noqa: S608
        "ORDER BY raised_at DESC, timer_id DESC LIMIT %s",
        (*params, limit),
    )
    return [timer_from_record(r) for r in await cur.fetchall()]
