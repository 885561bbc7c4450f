"""How far a projection's shards are behind the log, and when one has stopped moving."""

from __future__ import annotations

import contextlib
import datetime as dt
from typing import Any

import msgspec
import psycopg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from events.config import NatsSettings, connect
from events.subjects import Naming
from projections.contract import Projection, Shard, checkpoint_name, consumer_filter
from projections.versions import serving_build
from workers.checkpoints import read_checkpoint


class Lag(msgspec.Struct, frozen=True, kw_only=True):
    """How far one shard of a projection is behind the log."""

    projection: str
    partition_key: str
    stream_last_sequence: int
    checkpoint: int
    first_unapplied_sequence: int | None
    oldest_unapplied_age_seconds: float | None
    serving: bool = False

    @property
    def caught_up(self) -> bool:
        return self.first_unapplied_sequence is None


class StallWatch:
    """Tells, from one lag report to the next, whether a shard with events waiting did not move at all."""

    def __init__(self) -> None:
        self._stalled_at: int | None = None

    def reset(self) -> None:
        self._stalled_at = None

    def stalled(self, lag: Lag) -> bool:
        stalled = not lag.caught_up and lag.checkpoint == self._stalled_at
        self._stalled_at = None if lag.caught_up else lag.checkpoint
        return stalled


async def measure_lag(
    js: JetStreamContext,
    conn: psycopg.AsyncConnection[Any],
    naming: Naming,
    projection: Projection,
    shard: Shard,
    build: str | None = None,
) -> Lag:
    """The stream's last sequence, this shard's checkpoint, and the first event in its consumer's filter past
    the checkpoint with its age (wall clock since it entered the log: an operational figure, not business time).
    ``build``: another build of the projection than the code's own (e.g. the one still serving).

    Every shard reads (and skips) the events of the other shards, so its checkpoint moves past them too."""
    info = await js.stream_info(naming.events_stream)
    key = build or checkpoint_name(projection)
    checkpoint = await read_checkpoint(conn, key, shard.key)
    first: Any = None
    with contextlib.suppress(NotFoundError):
        first = await js.get_msg(
            naming.events_stream,
            seq=checkpoint + 1,
            subject=consumer_filter(naming, projection),
            next=True,
            direct=True,
        )
    age = None
    if first is not None and first.time is not None:
        age = max(0.0, (dt.datetime.now(dt.UTC) - first.time).total_seconds())
    return Lag(
        projection=key,
        partition_key=shard.key,
        stream_last_sequence=int(info.state.last_seq),
        checkpoint=checkpoint,
        first_unapplied_sequence=None if first is None else int(first.seq),
        oldest_unapplied_age_seconds=age,
    )


async def lag_of(projection: Projection, nats_settings: NatsSettings, database_url: str) -> list[Lag]:
    """Lag of every shard of every build of a projection that has a checkpoint (connects, measures,
    disconnects); the serving build is marked."""
    nc, js = await connect(nats_settings, "dealstream-lag")
    try:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            try:
                cur = await conn.execute(
                    "SELECT projection, partition_key FROM projection_checkpoints WHERE projection ~ %s "
                    "ORDER BY projection, partition_key",
                    (f"^{projection.name}_v[0-9]+(_|$)",),
                )
                keys = [(str(r[0]), str(r[1])) for r in await cur.fetchall()]
                serving = await serving_build(conn, projection.name)
            except psycopg.errors.UndefinedTable:
                return []
            lags = []
            for build, key in keys:
                lag = await measure_lag(js, conn, nats_settings.naming, projection, Shard.parse(key), build)
                lags.append(msgspec.structs.replace(lag, serving=serving is not None and serving.build == build))
            return lags
    finally:
        await nc.close()
