"""Rebuild and verify a read model from the log, beside the live one.

``rebuild``: a new build of the same version (label ``r<UTC time>``) replays the log from the start into
fresh tables while the live build keeps serving, reports its progress, and takes over once caught up; the
running workers of that version then follow it (see :meth:`workers.engine.ProjectionEngine`). It replays
the whole log in one process (shard 0/1).

``verify``: a shadow build (label ``v<UTC time>``) replays the log, then its tables are compared row by
row with the serving build's, in one snapshot taken when both stand at the same checkpoint; the shadow's
tables, checkpoints and consumer are removed afterwards.

Both are made from the rules the serving build recorded (:func:`workers.registry.like_serving`): a rebuild
or a comparison under other rules would differ by the rules, not by the log.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import msgspec
import psycopg
from nats.js.errors import NotFoundError
from psycopg import sql
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, ProgressColumn, Task, TextColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgress
from rich.text import Text

from events.config import NatsSettings, connect
from projections.contract import Projection, Shard, consumer_name
from projections.versions import BuildRules, recorded_rules, serving_build
from workers.engine import EngineSettings, ProjectionEngine
from workers.lag import measure_lag


class Progress(msgspec.Struct, frozen=True, kw_only=True):
    build: str
    done: int
    total: int
    serving: bool


class _Rate(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(f"{task.speed or 0:,.0f} ev/s")


@contextlib.contextmanager
def progress_bar(console: Console | None = None) -> Iterator[Callable[[Progress], None]]:
    """A terminal bar (rich) with the events done, their rate and the time left, fed with a build's progress."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("events"), _Rate())
    with RichProgress(*columns, TimeRemainingColumn(), console=console) as shown:
        task = shown.add_task("", total=None)

        def update(p: Progress) -> None:
            shown.update(task, description=p.build, completed=p.done, total=p.total)

        yield update


async def _build(
    projection: Projection,
    nats_settings: NatsSettings,
    url: str,
    mode: str,
    until: Callable[[ProjectionEngine, Any], bool],
    on_progress: Callable[[Progress], None],
    stop: asyncio.Event | None = None,
    rules: BuildRules | None = None,
) -> ProjectionEngine:
    settings = EngineSettings(mode=mode, lag_interval=3600.0)  # type: ignore[arg-type]
    engine = ProjectionEngine(projection, nats_settings, url, Shard(), settings, rules, follows_rebuilds=False)
    halt = asyncio.Event()
    task = asyncio.create_task(engine.run(halt))
    nc, js = await connect(nats_settings, f"dealstream-{mode}")
    try:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            while not (stop is not None and stop.is_set()):
                await asyncio.sleep(1.0)
                if task.done():
                    break
                try:
                    lag = await measure_lag(js, conn, nats_settings.naming, projection, Shard())
                except psycopg.errors.UndefinedTable:
                    continue
                on_progress(
                    Progress(
                        build=projection.build,
                        done=lag.checkpoint,
                        total=lag.stream_last_sequence,
                        serving=engine.serving,
                    )
                )
                if until(engine, lag):
                    break
    finally:
        halt.set()
        await asyncio.wait_for(task, 60)
        await nc.close()
    if engine.refused is not None:
        raise RuntimeError(engine.refused)
    return engine


async def rebuild(
    projection: Projection,
    nats_settings: NatsSettings,
    url: str,
    on_progress: Callable[[Progress], None] = lambda _: None,
    stop: asyncio.Event | None = None,
    rules: BuildRules | None = None,
) -> bool:
    """Replay the log into a fresh build of ``projection`` (give it a new label) until it serves; returns
    whether it took over. ``rules``: what it is made from (recorded with it)."""
    engine = await _build(
        projection, nats_settings, url, "rebuild", lambda e, _lag: e.serving, on_progress, stop, rules
    )
    return engine.serving


class TableDiff(msgspec.Struct, frozen=True, kw_only=True):
    table: str
    live_rows: int
    rebuilt_rows: int
    only_live: int
    only_rebuilt: int
    sample_only_live: list[str]
    sample_only_rebuilt: list[str]


class Verification(msgspec.Struct, frozen=True, kw_only=True):
    live: str
    rebuilt: str
    sequence: int
    tables: list[TableDiff]

    @property
    def same(self) -> bool:
        return all(t.only_live == 0 and t.only_rebuilt == 0 for t in self.tables)


async def _tables(conn: psycopg.AsyncConnection[Any], build: str) -> list[str]:
    cur = await conn.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() "
        "AND table_type = 'BASE TABLE' AND starts_with(table_name, %s) ORDER BY table_name",
        (f"{build}_",),
    )
    return [str(r[0])[len(build) + 1 :] for r in await cur.fetchall()]


async def _checkpoint(conn: psycopg.AsyncConnection[Any], build: str) -> int | None:
    cur = await conn.execute("SELECT min(last_sequence) FROM projection_checkpoints WHERE projection = %s", (build,))
    row = await cur.fetchone()
    return None if row is None or row[0] is None else int(row[0])


async def compare(conn: psycopg.AsyncConnection[Any], live: str, rebuilt: str) -> Verification | None:
    """Row-by-row comparison of two builds in one snapshot; None if they do not stand at one checkpoint."""
    async with conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        a, b = await _checkpoint(conn, live), await _checkpoint(conn, rebuilt)
        if a is None or a != b:
            return None
        diffs = []
        for suffix in await _tables(conn, rebuilt):
            left, right = sql.Identifier(f"{live}_{suffix}"), sql.Identifier(f"{rebuilt}_{suffix}")
            counts = []
            samples = []
            for x, y in ((left, right), (right, left)):
                cur = await conn.execute(
                    sql.SQL("SELECT t::text FROM (SELECT * FROM {} EXCEPT ALL SELECT * FROM {}) t").format(x, y)
                )
                rows = [str(r[0]) for r in await cur.fetchall()]
                counts.append(len(rows))
                samples.append(rows[:5])
            sizes = []
            for t in (left, right):
                cur = await conn.execute(sql.SQL("SELECT count(*) FROM {}").format(t))
                row = await cur.fetchone()
                sizes.append(int(row[0]) if row else 0)
            diffs.append(
                TableDiff(
                    table=suffix,
                    live_rows=sizes[0],
                    rebuilt_rows=sizes[1],
                    only_live=counts[0],
                    only_rebuilt=counts[1],
                    sample_only_live=samples[0],
                    sample_only_rebuilt=samples[1],
                )
            )
        return Verification(live=live, rebuilt=rebuilt, sequence=a, tables=diffs)


async def drop_build(conn: psycopg.AsyncConnection[Any], nats_settings: NatsSettings, projection: Projection) -> None:
    """Remove a build nobody serves: its tables, its checkpoints and its durable consumer."""
    for suffix in await _tables(conn, projection.build):
        await conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(f"{projection.build}_{suffix}")))
    await conn.execute("DELETE FROM projection_checkpoints WHERE projection = %s", (projection.build,))
    with contextlib.suppress(psycopg.errors.UndefinedTable):
        async with conn.transaction():
            await conn.execute("DELETE FROM projection_builds WHERE build = %s", (projection.build,))
    nc, js = await connect(nats_settings, "dealstream-drop")
    try:
        with contextlib.suppress(NotFoundError):
            await js.delete_consumer(
                nats_settings.naming.events_stream, consumer_name(nats_settings.naming, projection, Shard())
            )
    finally:
        await nc.close()


async def verify(
    shadow: Projection,
    nats_settings: NatsSettings,
    url: str,
    on_progress: Callable[[Progress], None] = lambda _: None,
    attempts: int = 30,
    rules: BuildRules | None = None,
) -> Verification:
    """Replay the log into ``shadow`` (a labelled build of the live projection, made from ``rules``), compare it
    with the serving build at one checkpoint, and remove it. Raises ``RuntimeError`` before building anything
    if nothing serves, the serving build is another version, or it recorded other rules than ``rules``; and if
    the two never stood at one checkpoint (a log that never pauses)."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        live = await serving_build(conn, shadow.name)
        if live is None:
            raise RuntimeError(f"no build of {shadow.name!r} serves: nothing to verify against")
        if live.version != shadow.version:
            raise RuntimeError(f"{live.build} is version {live.version}; this code builds {shadow.version}")
        recorded = await recorded_rules(conn, live.build)
        if rules is not None and recorded is not None and recorded.sha256 != rules.sha256:
            raise RuntimeError(
                f"{live.build} was made from {recorded.describe()}, not {rules.describe()}: "
                "a comparison would show the rules' differences, not the log's"
            )
    await _build(shadow, nats_settings, url, "shadow", lambda _e, lag: lag.caught_up, on_progress, None, rules)
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        try:
            for _ in range(attempts):
                result = await compare(conn, live.build, shadow.build)
                if result is not None:
                    return result
                # Bring the shadow to the log's end again, then look for a moment both agree on.
                await _build(
                    shadow, nats_settings, url, "shadow", lambda _e, lag: lag.caught_up, on_progress, None, rules
                )
            raise RuntimeError("the live and the rebuilt read model never stood at the same checkpoint")
        finally:
            await drop_build(conn, nats_settings, shadow)
