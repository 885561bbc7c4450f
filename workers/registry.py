"""The worker registry: what ``dealstream worker <name>`` and ``python -m workers <name>`` can run."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import structlog

from events.config import NatsSettings
from events.streams import StreamsNotReady
from events.types import LeadCaptured
from projections.board_store import BoardProjection
from projections.contract import Projection, Shard
from projections.notify import notify_rules_from_toml
from projections.notify_store import NotifyProjection
from projections.routing import routing_rules_from_toml
from projections.routing_store import RoutingProjection
from projections.scores_store import ScoresProjection
from projections.scoring import fit_score, profile_from, scoring_rules_from_toml
from projections.sla_rules import sla_rules_from_toml
from projections.sla_store import SlaProjection
from projections.velocity_store import VelocityProjection
from projections.versions import BuildConflict, BuildRules, label_of, recorded_rules, serving_build
from workers.actor import Actor
from workers.engine import EngineSettings, ProjectionEngine
from workers.lag import Lag, lag_of
from workers.notify import NotifyActor
from workers.routing import RoutingActor
from workers.scores import QualificationActor
from workers.sla import AlertScheduler

log = structlog.get_logger("dealstream.worker")


def _rules_file() -> tuple[str, str]:
    """The rules file named by ``DEALSTREAM_RULES`` (see deploy/sales.toml): its text and path; empty rules
    without one."""
    path = os.environ.get("DEALSTREAM_RULES")
    if not path:
        log.warning("rules.none", hint="set DEALSTREAM_RULES to a TOML rules file, e.g. deploy/sales.toml")
        return "", ""
    return Path(path).read_text(encoding="utf-8"), str(Path(path).resolve())


def _rules_text() -> str:
    return _rules_file()[0]


def sla_projection(instance: str = "", text: str | None = None) -> SlaProjection:
    return SlaProjection(sla_rules_from_toml(_rules_text() if text is None else text), instance)


def routing_projection(instance: str = "", text: str | None = None) -> RoutingProjection:
    text = _rules_text() if text is None else text
    scoring = scoring_rules_from_toml(text)

    def fit(captured: LeadCaptured, source: str) -> float:
        return fit_score(scoring, profile_from(captured, source))

    return RoutingProjection(routing_rules_from_toml(text), fit, instance=instance)


def scores_projection(instance: str = "", text: str | None = None) -> ScoresProjection:
    return ScoresProjection(scoring_rules_from_toml(_rules_text() if text is None else text), instance)


def notify_projection(instance: str = "", text: str | None = None) -> NotifyProjection:
    return NotifyProjection(notify_rules_from_toml(_rules_text() if text is None else text), instance)


WORKERS: dict[str, Callable[[str], Projection]] = {
    "board": BoardProjection,
    "velocity": VelocityProjection,
    "sla": sla_projection,
    "routing": routing_projection,
    "scores": scores_projection,
    "notify": notify_projection,
}
"""Worker name -> the projection it feeds, given a build label ("" for the version's own build)."""

RULED: dict[str, Callable[[str, str], Projection]] = {
    "sla": sla_projection,
    "routing": routing_projection,
    "scores": scores_projection,
    "notify": notify_projection,
}
"""The workers whose projection is made from the sales rules: name -> (label, rules text) -> projection."""

ACTORS: dict[type[Any], Callable[[ProjectionEngine, NatsSettings, str], Actor]] = {
    SlaProjection: AlertScheduler,
    RoutingProjection: RoutingActor,
    NotifyProjection: NotifyActor,
    ScoresProjection: QualificationActor,
}
"""Projection type -> the actor that runs beside its engine and acts on its tables."""


def projection_of(name: str, instance: str | None = None, rules: BuildRules | None = None) -> Projection:
    """``instance`` defaults to ``DEALSTREAM_ENGINE_INSTANCE``: a labelled build with its own tables, e.g. a
    rebuild to compare with the live one. ``rules`` default to ``DEALSTREAM_RULES``'s (for the workers that
    take rules)."""
    try:
        factory = WORKERS[name]
    except KeyError:
        raise ValueError(f"unknown worker {name!r}; known: {sorted(WORKERS)}") from None
    label = os.environ.get("DEALSTREAM_ENGINE_INSTANCE", "") if instance is None else instance
    if rules is not None and name in RULED:
        return RULED[name](label, rules.text)
    return factory(label)


_USES: dict[str, Callable[[str], object]] = {
    "sla": sla_rules_from_toml,
    "routing": lambda text: (routing_rules_from_toml(text), scoring_rules_from_toml(text)),
    "scores": scoring_rules_from_toml,
    "notify": notify_rules_from_toml,
}
"""What of the rules file each worker's build is made from."""


def build_rules(name: str, text: str, source: str) -> BuildRules:
    """``text`` as ``name``'s build records it: with the digest of the rules it reads from the text."""
    used = msgspec.json.encode(_USES[name](text))
    # Notify's rules (recipients, channels) have no version: they steer deliveries from now on, not its rows.
    return BuildRules(text, source, hashlib.sha256(used).hexdigest(), binding=name != "notify")


def rules_of(name: str) -> BuildRules | None:
    """What a worker's build is made from: ``DEALSTREAM_RULES``'s rules, or None for a worker without rules."""
    return build_rules(name, *_rules_file()) if name in RULED else None


async def like_serving(name: str, label: str, database_url: str) -> tuple[Projection, BuildRules | None]:
    """A new build (``label``) of the build serving ``name``, made from the rules that build was made from.

    RulesUnknown if the serving build takes rules and has none recorded (a build older than the records)."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        try:
            serving = await serving_build(conn, name)
        except psycopg.errors.UndefinedTable:
            serving = None
        if name not in RULED:
            return projection_of(name, label), None
        if serving is None:
            fresh = rules_of(name)
            return projection_of(name, label, fresh), fresh
        rules = await recorded_rules(conn, serving.build)
    if rules is None:
        raise RulesUnknown(
            f"{serving.build} serves {name} but has no recorded rules (it was built before builds recorded them): "
            f"restart its worker with DEALSTREAM_RULES set to the file it runs on, which records them, then retry"
        )
    return projection_of(name, label, rules), rules


class RulesUnknown(ValueError):
    """The rules a build was made from are not known, so nothing can be built like it."""


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
    rules = rules_of(name)
    projection = projection_of(name, instance, rules)
    # Only the version's own build follows a rebuild that took over; a labelled build stays in its tables.
    follows = label_of(projection.build) == ""
    while not stop.is_set():
        engine = await _serve_once(projection, nats_settings, url, shard, settings, stop, rules, follows)
        if engine.refused is not None:
            raise BuildConflict(engine.refused)
        if engine.moved_to is None:
            return
        # A rebuild of this version took over: go on in its build (its tables, its checkpoints).
        projection = projection_of(name, label_of(engine.moved_to), rules)


async def _serve_once(
    projection: Projection,
    nats_settings: NatsSettings,
    url: str,
    shard: Shard,
    settings: EngineSettings,
    stop: asyncio.Event,
    rules: BuildRules | None,
    follows: bool,
) -> ProjectionEngine:
    engine = ProjectionEngine(projection, nats_settings, url, shard, settings, rules, follows)
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
    except BuildConflict as exc:
        log.error("worker.refused", worker=name, reason=str(exc))
        return 2
    return 0


async def worker_lag(
    name: str, nats_settings: NatsSettings | None = None, database_url: str | None = None
) -> list[Lag]:
    """Lag of every shard of a worker's projection that has a checkpoint (for the CLI, the API and alerts)."""
    return await lag_of(projection_of(name, ""), nats_settings or NatsSettings.from_env(), _database_url(database_url))
