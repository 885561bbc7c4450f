"""The worker registry: what ``dealstream worker <name>`` and ``python -m workers <name>`` can run."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable

import structlog

from events.config import NatsSettings
from projections.board_store import BoardProjection
from projections.engine import Projection, Shard
from projections.velocity_store import VelocityProjection
from workers.engine import EngineSettings, Lag, ProjectionEngine, lag_of

log = structlog.get_logger("dealstream.worker")

WORKERS: dict[str, Callable[[str], Projection]] = {
    "board": BoardProjection,
    "velocity": VelocityProjection,
}
"""Worker name -> the projection it feeds, given a build label ("" for the version's own build)."""


def _projection(name: str, instance: str | None = None) -> Projection:
    """``instance`` defaults to ``DEALSTREAM_ENGINE_INSTANCE``: a labelled build with its own tables, e.g. a
    rebuild to compare with the live one."""
    try:
        factory = WORKERS[name]
    except KeyError:
        raise ValueError(f"unknown worker {name!r}; known: {sorted(WORKERS)}") from None
    return factory(os.environ.get("DEALSTREAM_ENGINE_INSTANCE", "") if instance is None else instance)


def _database_url(database_url: str | None) -> str:
    url = database_url or os.environ.get("DATABASE_URL")
    if not url:
        raise ValueError("set DATABASE_URL (a PostgreSQL conninfo or URL)")
    return url


async def serve_worker(
    name: str,
    partition: str | Shard = "0/1",
    nats_settings: NatsSettings | None = None,
    database_url: str | None = None,
    settings: EngineSettings | None = None,
    stop: asyncio.Event | None = None,
    instance: str | None = None,
) -> None:
    """Run one worker in the running loop until ``stop`` is set (or forever)."""
    shard = partition if isinstance(partition, Shard) else Shard.parse(partition)
    engine = ProjectionEngine(
        _projection(name, instance),
        nats_settings or NatsSettings.from_env(),
        _database_url(database_url),
        shard,
        settings or EngineSettings.from_env(),
    )
    await engine.run(stop)


def run_worker(
    name: str,
    partition: str = "0/1",
    nats_settings: NatsSettings | None = None,
    database_url: str | None = None,
    settings: EngineSettings | None = None,
) -> int:
    """Run one worker process until SIGTERM or SIGINT (the batch in hand is finished, committed and acked).

    Settings default to the environment (``DEALSTREAM_NATS_URL``, ``DEALSTREAM_PREFIX``, ``DATABASE_URL``,
    ``DEALSTREAM_ENGINE_*``, see :class:`EngineSettings`, and ``DEALSTREAM_ENGINE_INSTANCE``, a build label).
    Returns the process exit code.
    """
    try:
        shard = Shard.parse(partition)
        projection = _projection(name)
        url = _database_url(database_url)
    except ValueError as exc:
        log.error("worker.invalid", error=str(exc))
        return 2

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        log.info("worker.start", worker=name, build=projection.build, partition=shard.key)
        await serve_worker(name, shard, nats_settings, url, settings, stop)

    asyncio.run(main())
    return 0


async def worker_lag(
    name: str, nats_settings: NatsSettings | None = None, database_url: str | None = None
) -> list[Lag]:
    """Lag of every shard of a worker's projection that has a checkpoint (for the CLI, the API and alerts)."""
    return await lag_of(_projection(name, ""), nats_settings or NatsSettings.from_env(), _database_url(database_url))
