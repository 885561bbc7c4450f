"""The worker registry: what ``dealstream worker <name>`` and ``python -m workers <name>`` can run."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from events.config import NatsSettings
from events.streams import StreamsNotReady
from events.types import LeadCaptured
from projections.board_store import BoardProjection
from projections.engine import Projection, Shard
from projections.notify import notify_rules_from_toml
from projections.notify_store import NotifyProjection
from projections.routing import routing_rules_from_toml
from projections.routing_store import RoutingProjection
from projections.scores_store import ScoresProjection
from projections.scoring import fit_score, profile_from, scoring_rules_from_toml
from projections.sla_rules import sla_rules_from_toml
from projections.sla_store import SlaProjection
from projections.velocity_store import VelocityProjection
from projections.versions import label_of
from workers.actor import Actor
from workers.engine import EngineSettings, Lag, ProjectionEngine, lag_of
from workers.notify import NotifyActor
from workers.routing import RoutingActor
from workers.scores import QualificationActor
from workers.sla import AlertScheduler

log = structlog.get_logger("dealstream.worker")


def _rules_text() -> str:
    """The rules file named by ``DEALSTREAM_RULES`` (see deploy/sales.toml); empty rules without one."""
    path = os.environ.get("DEALSTREAM_RULES")
    if not path:
        log.warning("rules.none", hint="set DEALSTREAM_RULES to a TOML rules file, e.g. deploy/sales.toml")
        return ""
    return Path(path).read_text(encoding="utf-8")


def sla_projection(instance: str = "") -> SlaProjection:
    return SlaProjection(sla_rules_from_toml(_rules_text()), instance)


def routing_projection(instance: str = "") -> RoutingProjection:
    text = _rules_text()
    scoring = scoring_rules_from_toml(text)

    def fit(captured: LeadCaptured, source: str) -> float:
        return fit_score(scoring, profile_from(captured, source))

    return RoutingProjection(routing_rules_from_toml(text), fit, instance=instance)


def scores_projection(instance: str = "") -> ScoresProjection:
    return ScoresProjection(scoring_rules_from_toml(_rules_text()), instance)


def notify_projection(instance: str = "") -> NotifyProjection:
    return NotifyProjection(notify_rules_from_toml(_rules_text()), instance)


WORKERS: dict[str, Callable[[str], Projection]] = {
    "board": BoardProjection,
    "velocity": VelocityProjection,
    "sla": sla_projection,
    "routing": routing_projection,
    "scores": scores_projection,
    "notify": notify_projection,
}
"""Worker name -> the projection it feeds, given a build label ("" for the version's own build)."""

ACTORS: dict[type[Any], Callable[[ProjectionEngine, NatsSettings, str], Actor]] = {
    SlaProjection: AlertScheduler,
    RoutingProjection: RoutingActor,
    NotifyProjection: NotifyActor,
    ScoresProjection: QualificationActor,
}
"""Projection type -> the actor that runs beside its engine and acts on its tables."""


def projection_of(name: str, instance: str | None = None) -> Projection:
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
    nats_settings = nats_settings or NatsSettings.from_env()
    url = _database_url(database_url)
    settings = settings or EngineSettings.from_env()
    stop = stop or asyncio.Event()
    while not stop.is_set():
        engine = await _serve_once(projection_of(name, instance), nats_settings, url, shard, settings, stop)
        if engine.moved_to is None:
            return
        # A rebuild of this version took over: go on in its build (its tables, its checkpoints).
        instance = label_of(engine.moved_to)


async def _serve_once(
    projection: Projection,
    nats_settings: NatsSettings,
    url: str,
    shard: Shard,
    settings: EngineSettings,
    stop: asyncio.Event,
) -> ProjectionEngine:
    engine = ProjectionEngine(projection, nats_settings, url, shard, settings)
    actor = ACTORS.get(type(projection))
    if actor is None:
        await engine.run(stop)
        return engine
    # The engine returns when asked to stop or when it moved to another build; the actor stops with it.
    actor_stop = asyncio.Event()

    async def engine_part() -> None:
        try:
            await engine.run(stop)
        finally:
            actor_stop.set()

    await asyncio.gather(engine_part(), actor(engine, nats_settings, url).run(actor_stop))
    return engine


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
        projection = projection_of(name)
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

    try:
        asyncio.run(main())
    except StreamsNotReady as exc:
        log.error("worker.refused", worker=name, error=str(exc))
        return 3
    return 0


async def worker_lag(
    name: str, nats_settings: NatsSettings | None = None, database_url: str | None = None
) -> list[Lag]:
    """Lag of every shard of a worker's projection that has a checkpoint (for the CLI, the API and alerts)."""
    return await lag_of(projection_of(name, ""), nats_settings or NatsSettings.from_env(), _database_url(database_url))
