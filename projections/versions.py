"""Which build of each read model serves reads, and when a newer build takes over.

A build is one projection at one version (optionally a labelled copy, e.g. a rebuild), with its own tables
(``<build>_<table>``) and its own checkpoints. ``projection_versions`` holds the serving build of each
projection. A projection's first build serves from its start; a build of a higher version fills its own
tables from the start of the log while the serving one keeps answering, and takes over once every one of
its shards has reached the serving build's position. A build never takes over from a higher version, so an
old worker left running cannot switch the readers back. A rebuild (``dealstream rebuild``) is a build of
the same version under a new label that takes over once caught up; the running workers of that version
then follow it to its tables, so nothing is left updating tables nobody reads.

A build writes only its own tables and checkpoints: its shards all split the log the same way (``k/N`` with
one N), and ``projection_builds`` records the rules it was made from, so that no process continues it under
other rules and ``dealstream verify`` can rebuild it under the same ones.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
from psycopg import AsyncConnection
from psycopg.errors import UndefinedTable

VERSIONS_DDL = """
CREATE TABLE IF NOT EXISTS projection_versions (
    projection text PRIMARY KEY,
    build text NOT NULL,
    version integer NOT NULL,
    switched_at timestamptz NOT NULL DEFAULT now()
)
"""

BUILDS_DDL = """
CREATE TABLE IF NOT EXISTS projection_builds (
    build text PRIMARY KEY,
    projection text NOT NULL,
    version integer NOT NULL,
    rules_sha256 text,
    rules_source text,
    rules text,
    recorded_at timestamptz NOT NULL DEFAULT now()
)
"""


class BuildRules(msgspec.Struct, frozen=True):
    """The rules a build is made from: the file's text, where it was read (``""``: no file, empty rules), and
    ``sha256``, the digest of the part of them the build uses (so that another section of a shared file can
    change without touching it)."""

    text: str
    source: str
    sha256: str
    # Whether the build's rows depend on the rules (changed rules then need a new version). Not binding (notify's
    # recipients): the rules steer only what the worker does from now on, and the record follows the latest.
    binding: bool = True

    def describe(self) -> str:
        return f"rules {self.sha256[:12]} from {self.source or 'no file (empty rules)'}"


class BuildConflict(Exception):
    """A process would write into a build that is not its own: other rules, or another split of the log."""


class BuildVersion(msgspec.Struct, frozen=True):
    """What a build is a version of: the fold's ``logic`` version and, for a fold made from the sales rules, the
    ``rules`` version it folds by. A new version of either makes a new build that rebuilds from the log."""

    logic: int
    rules: int | None = None

    @property
    def number(self) -> int:
        """The number in the build's name: the logic version, followed by the rules version in two digits when
        the fold has rules (``scores_v101`` is logic 1 under rules 1)."""
        return self.logic if self.rules is None else 100 * self.logic + self.rules


_LABEL = re.compile(r"[a-z0-9_]{1,32}")


def build_name(projection: str, version: int, instance: str = "") -> str:
    """``<projection>_v<version>[_<instance>]``: the prefix of the build's tables and its checkpoint key."""
    if not re.fullmatch(r"[a-z][a-z0-9_]{0,23}", projection) or version < 1:
        raise ValueError(f"projection {projection!r} v{version}: need a lowercase name and a version >= 1")
    if instance and not _LABEL.fullmatch(instance):
        raise ValueError(f"build label {instance!r}: up to 32 of a-z 0-9 _")
    return f"{projection}_v{version}" + (f"_{instance}" if instance else "")


def label_of(build: str) -> str:
    """The label of a build name (``""`` for a version's own build)."""
    match = re.fullmatch(r"[a-z][a-z0-9_]*?_v\d+(?:_([a-z0-9_]+))?", build)
    if match is None:
        raise ValueError(f"{build!r} is not a build name")
    return match.group(1) or ""


class Build(msgspec.Struct, frozen=True):
    """One build of a projection and the checkpoints of its shards (sequence per ``k/N`` key)."""

    projection: str
    build: str
    version: int
    checkpoints: dict[str, int] = {}


def takes_over(candidate: Build, serving: Build | None, shard_count: int, rebuild: bool = False) -> bool:
    """Whether ``candidate`` should become the serving build now.

    Yes when nothing serves yet. Otherwise only a higher version (or, for a ``rebuild``, the same version),
    and only once all ``shard_count`` of its shards have checkpoints at or past the furthest checkpoint of
    the serving build: switching must never show readers an older board than the one they had.
    """
    if serving is None:
        return True
    if candidate.build == serving.build or candidate.version < serving.version:
        return False
    if candidate.version == serving.version and not rebuild:
        return False
    mine = [seq for key, seq in candidate.checkpoints.items() if key.endswith(f"/{shard_count}")]
    if len(mine) != shard_count:
        return False
    return min(mine) >= max(serving.checkpoints.values(), default=0)


async def recorded_rules(conn: AsyncConnection[Any], build: str) -> BuildRules | None:
    """The rules ``build`` was recorded as made from, or None if none were recorded."""
    try:
        async with conn.transaction():
            cur = await conn.execute(
                "SELECT rules, rules_source, rules_sha256 FROM projection_builds "
                "WHERE build = %s AND rules IS NOT NULL",
                (build,),
            )
            row = await cur.fetchone()
    except UndefinedTable:
        return None
    return None if row is None else BuildRules(str(row[0]), str(row[1] or ""), str(row[2]))


async def claim(
    conn: AsyncConnection[Any], projection: str, build: str, version: int, shard_key: str, rules: BuildRules | None
) -> None:
    """Check that a shard may write into ``build``, record what it is made from, and give the shard a checkpoint.

    BuildConflict if the build's other shards split the log another way (``k/N`` with another N: the shard would
    apply again, from the start, events they applied), or if it was made from other rules. ``rules`` None: the
    caller does not say (nothing is checked or recorded); a build without recorded rules takes the first given."""
    count = shard_key.split("/")[1]
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext(current_schema() || %s))", (f"build:{build}",))
        others = sorted(k for k in await checkpoints_of(conn, build) if k.split("/")[1] != count)
        if others:
            raise BuildConflict(
                f"{build} is built in shards {', '.join(others)}; shard {shard_key} would apply their events again "
                f"in their tables: run every shard of a build with the same N, or give this one another build label"
            )
        await conn.execute(
            "INSERT INTO projection_builds (build, projection, version) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
            (build, projection, version),
        )
        if rules is not None:
            recorded = await recorded_rules(conn, build)
            if recorded is None or (recorded.sha256 != rules.sha256 and not rules.binding):
                await conn.execute(
                    "UPDATE projection_builds SET rules = %s, rules_source = %s, rules_sha256 = %s WHERE build = %s",
                    (rules.text, rules.source, rules.sha256, build),
                )
            elif recorded.sha256 != rules.sha256:
                raise BuildConflict(
                    f"{build} was made from {recorded.describe()}; this process has {rules.describe()}: give changed "
                    "rules a new version (or the worker another build label) instead of mixing them in one build"
                )
        await conn.execute(
            "INSERT INTO projection_checkpoints (projection, partition_key, last_sequence) VALUES (%s, %s, 0) "
            "ON CONFLICT DO NOTHING",
            (build, shard_key),
        )


async def serving_build(conn: AsyncConnection[Any], projection: str) -> Build | None:
    """The serving build of ``projection`` with its checkpoints, or None if it has none yet."""
    cur = await conn.execute(
        "SELECT v.build, v.version, c.partition_key, c.last_sequence FROM projection_versions v "
        "LEFT JOIN projection_checkpoints c ON c.projection = v.build WHERE v.projection = %s",
        (projection,),
    )
    rows = await cur.fetchall()
    if not rows:
        return None
    return Build(projection, rows[0][0], rows[0][1], {r[2]: r[3] for r in rows if r[2] is not None})


async def checkpoints_of(conn: AsyncConnection[Any], build: str) -> dict[str, int]:
    cur = await conn.execute(
        "SELECT partition_key, last_sequence FROM projection_checkpoints WHERE projection = %s", (build,)
    )
    return {str(r[0]): int(r[1]) for r in await cur.fetchall()}


async def register(conn: AsyncConnection[Any], projection: str, build: str, version: int) -> None:
    """Make ``build`` serve ``projection`` if nothing serves it yet (a first deployment)."""
    await conn.execute(
        "INSERT INTO projection_versions (projection, build, version) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
        (projection, build, version),
    )


async def try_take_over(
    conn: AsyncConnection[Any], projection: str, build: str, version: int, shard_count: int, rebuild: bool = False
) -> Build | None:
    """Switch readers to ``build`` if :func:`takes_over` allows it; returns the build it replaced, if it did.

    The row is locked for the decision, so two shards finishing at once switch once."""
    async with conn.transaction():
        cur = await conn.execute(
            "SELECT build FROM projection_versions WHERE projection = %s FOR UPDATE", (projection,)
        )
        if await cur.fetchone() is None:
            await register(conn, projection, build, version)
            return None
        serving = await serving_build(conn, projection)
        candidate = Build(projection, build, version, await checkpoints_of(conn, build))
        if serving is None or not takes_over(candidate, serving, shard_count, rebuild):
            return None
        await conn.execute(
            "UPDATE projection_versions SET build = %s, version = %s, switched_at = now() WHERE projection = %s",
            (build, version, projection),
        )
        return serving


async def serving_build_name(conn: AsyncConnection[Any], projection: str, default: str) -> str:
    """The build readers of ``projection`` use: the registered one, else ``default`` (before any worker ran)."""
    try:
        async with conn.transaction():
            cur = await conn.execute("SELECT build FROM projection_versions WHERE projection = %s", (projection,))
            row = await cur.fetchone()
    except UndefinedTable:
        row = None  # no worker has run in this database yet: the query on the default tables will say so
    return str(row[0]) if row else default


async def switch(conn: AsyncConnection[Any], projection: str, build: str) -> Build | None:
    """Point readers of ``projection`` at ``build`` by hand (after comparing, or to roll back); returns the
    build it replaced. ValueError if the build has no checkpoint: nothing has built it."""
    match = re.fullmatch(rf"{re.escape(projection)}_v(\d+)(_[a-z0-9_]+)?", build)
    if match is None:
        raise ValueError(f"{build!r} is not a build of {projection!r} (<name>_v<version>[_<label>])")
    async with conn.transaction():
        if not await checkpoints_of(conn, build):
            raise ValueError(f"no worker has built {build!r} in this database")
        before = await serving_build(conn, projection)
        await conn.execute(
            "INSERT INTO projection_versions (projection, build, version) VALUES (%s, %s, %s) "
            "ON CONFLICT (projection) DO UPDATE SET build = EXCLUDED.build, version = EXCLUDED.version, "
            "switched_at = now()",
            (projection, build, int(match.group(1))),
        )
    return before


async def builds(conn: AsyncConnection[Any]) -> list[tuple[str, str, bool, dict[str, int]]]:
    """Every build with checkpoints: (projection, build, serving, checkpoints by shard)."""
    cur = await conn.execute(
        "SELECT c.projection, c.partition_key, c.last_sequence, v.build IS NOT NULL FROM projection_checkpoints c "
        "LEFT JOIN projection_versions v ON v.build = c.projection ORDER BY c.projection, c.partition_key"
    )
    out: dict[str, tuple[str, str, bool, dict[str, int]]] = {}
    for build, key, seq, serving in await cur.fetchall():
        name = re.sub(r"_v\d+(_[a-z0-9_]+)?$", "", build)
        out.setdefault(build, (name, build, bool(serving), {}))[3][key] = int(seq)
    return list(out.values())
