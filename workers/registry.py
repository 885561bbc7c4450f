"""The worker registry: what ``dealstream worker <name>`` and ``python -m workers <name>`` can run."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from typing import Any

import msgspec
import psycopg
import structlog

from events.config import NatsSettings
from events.streams import StreamsNotReady
from events.types import LeadCaptured
from projections.board_store import BoardProjection
from projections.compliance_store import ComplianceProjection
from projections.contract import Projection, Shard
from projections.lead_records_store import LeadRecordsProjection
from projections.notify_store import NotifyProjection
from projections.people_store import PeopleProjection
from projections.routing_store import RoutingProjection
from projections.rules import NO_SALES_RULES, SalesRules, digest, sales_rules_from_toml
from projections.scores_store import ScoresProjection
from projections.scoring import fit_score, profile_from
from projections.sla_store import SlaProjection
from projections.subscriptions_store import SubscriptionsProjection
from projections.tasks_store import TasksProjection
from projections.velocity_store import VelocityProjection
from projections.versions import BuildConflict, BuildRules, label_of, recorded_rules, serving_build
from workers.actor import Actor
from workers.engine import EngineSettings, ProjectionEngine
from workers.lag import Lag, lag_of
from workers.notify import NotifyActor
from workers.routing import RoutingActor
from workers.scores import QualificationActor
from workers.settings import Settings
from workers.sla import AlertScheduler
from workers.subscriptions import SubscriptionsActor

log = structlog.get_logger("dealstream.worker")


def board_projection(instance: str = "", rules: SalesRules = NO_SALES_RULES) -> BoardProjection:
    return BoardProjection(instance)


def velocity_projection(instance: str = "", rules: SalesRules = NO_SALES_RULES) -> VelocityProjection:
    return VelocityProjection(instance)


def sla_projection(instance: str = "", rules: SalesRules = NO_SALES_RULES) -> SlaProjection:
    return SlaProjection(rules.sla, instance)


def routing_projection(instance: str = "", rules: SalesRules = NO_SALES_RULES) -> RoutingProjection:
    scoring = rules.scoring

    def fit(captured: LeadCaptured, source: str) -> float:
        return fit_score(scoring, profile_from(captured, source))

    return RoutingProjection(rules.routing, fit, instance=instance)


def scores_projection(instance: str = "", rules: SalesRules = NO_SALES_RULES) -> ScoresProjection:
    return ScoresProjection(rules.scoring, instance)


def notify_projection(instance: str = "", rules: SalesRules = NO_SALES_RULES) -> NotifyProjection:
    return NotifyProjection(rules.notify, instance)


def subscriptions_projection(instance: str = "", rules: SalesRules = NO_SALES_RULES) -> SubscriptionsProjection:
    return SubscriptionsProjection(instance)


def compliance_projection(instance: str = "", rules: SalesRules = NO_SALES_RULES) -> ComplianceProjection:
    return ComplianceProjection(rules.sla, instance)


def lead_records_projection(instance: str = "", rules: SalesRules = NO_SALES_RULES) -> LeadRecordsProjection:
    return LeadRecordsProjection(rules.scoring, instance)


def people_projection(instance: str = "", rules: SalesRules = NO_SALES_RULES) -> PeopleProjection:
    return PeopleProjection(instance)


def tasks_projection(instance: str = "", rules: SalesRules = NO_SALES_RULES) -> TasksProjection:
    return TasksProjection(instance)


WORKERS: dict[str, Callable[[str, SalesRules], Projection]] = {
    "board": board_projection,
    "velocity": velocity_projection,
    "sla": sla_projection,
    "routing": routing_projection,
    "scores": scores_projection,
    "notify": notify_projection,
    "subscriptions": subscriptions_projection,
    "compliance": compliance_projection,
    "lead_records": lead_records_projection,
    "people": people_projection,
    "tasks": tasks_projection,
}
"""Worker name -> the projection it feeds, given a build label ("" for the version's own build) and the rules."""

_USES: dict[str, Callable[[SalesRules], object]] = {
    "sla": lambda rules: rules.sla,
    "routing": lambda rules: (rules.routing, rules.scoring),
    "scores": lambda rules: rules.scoring,
    "notify": lambda rules: rules.notify,
    "compliance": lambda rules: rules.sla,
    "lead_records": lambda rules: rules.scoring,
}
"""The workers whose projection is made from the sales rules: what of the rules each one's build is made from."""

RULED = frozenset(_USES)

ACTORS: dict[type[Any], Callable[[ProjectionEngine, Settings, str], Actor]] = {
    SlaProjection: lambda engine, settings, url: AlertScheduler(engine, settings.nats, url),
    RoutingProjection: lambda engine, settings, url: RoutingActor(engine, settings.nats, url),
    NotifyProjection: lambda engine, settings, url: NotifyActor(engine, settings.nats, url, secrets=settings.secrets),
    ScoresProjection: lambda engine, settings, url: QualificationActor(engine, settings.nats, url),
    SubscriptionsProjection: lambda engine, settings, url: SubscriptionsActor(engine, settings.nats, url),
}
"""Projection type -> the actor that runs beside its engine and acts on its tables."""


def projection_of(
    name: str, instance: str | None = None, rules: BuildRules | None = None, settings: Settings | None = None
) -> Projection:
    """``instance`` defaults to the settings' (``DEALSTREAM_ENGINE_INSTANCE``): a labelled build with its own
    tables, e.g. a rebuild to compare with the live one. ``rules`` default to the settings' rules file (for the
    workers that take rules). ``settings`` default to the environment's."""
    try:
        factory = WORKERS[name]
    except KeyError:
        raise ValueError(f"unknown worker {name!r}; known: {sorted(WORKERS)}") from None
    reads_settings = instance is None or (rules is None and name in RULED)
    config = settings or (Settings.from_env() if reads_settings else Settings())
    label = config.instance if instance is None else instance
    if name not in RULED:
        return factory(label, NO_SALES_RULES)
    made_from = rules or rules_of(name, config)
    assert made_from is not None, "a worker with rules has rules, if empty ones"
    return factory(label, sales_rules_from_toml(made_from.text))


def build_rules(name: str, text: str, source: str) -> BuildRules:
    """``text`` as ``name``'s build records it: with the digest of the rules it reads from the text."""
    used = _USES[name](sales_rules_from_toml(text))
    # Notify's rules (recipients, channels) have no version: they steer deliveries from now on, not its rows.
    return BuildRules(text, source, digest(used), binding=name != "notify")


def rules_of(name: str, settings: Settings) -> BuildRules | None:
    """What a worker's build is made from: the settings' rules file (``DEALSTREAM_RULES``), or None for a worker
    without rules."""
    return build_rules(name, *settings.read_rules()) if name in RULED else None


async def like_serving(
    name: str, label: str, database_url: str, settings: Settings | None = None
) -> tuple[Projection, BuildRules | None]:
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
            fresh = rules_of(name, settings or Settings.from_env())
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


async def serve_worker(
    name: str,
    partition: str | Shard = "0/1",
    nats_settings: NatsSettings | None = None,
    database_url: str | None = None,
    settings: EngineSettings | None = None,
    stop: asyncio.Event | None = None,
    instance: str | None = None,
    config: Settings | None = None,
) -> None:
    """Run one worker in the running loop until ``stop`` is set (or forever). ``config`` holds the process's
    settings (read from the environment when not given); the other arguments override its parts."""
    shard = partition if isinstance(partition, Shard) else Shard.parse(partition)
    config = _given(config or Settings.from_env(), nats_settings, database_url, settings, instance)
    url = config.require_database_url()
    stop = stop or asyncio.Event()
    rules = rules_of(name, config)
    projection = projection_of(name, None, rules, config)
    # Only the version's own build follows a rebuild that took over; a labelled build stays in its tables.
    follows = label_of(projection.build) == ""
    while not stop.is_set():
        engine = await _serve_once(projection, config, url, shard, stop, rules, follows)
        if engine.refused is not None:
            raise BuildConflict(engine.refused)
        if engine.moved_to is None:
            return
        # A rebuild of this version took over: go on in its build (its tables, its checkpoints).
        projection = projection_of(name, label_of(engine.moved_to), rules, config)


def _given(
    config: Settings,
    nats_settings: NatsSettings | None = None,
    database_url: str | None = None,
    engine: EngineSettings | None = None,
    instance: str | None = None,
) -> Settings:
    """``config`` with the parts a caller gave instead."""
    return msgspec.structs.replace(
        config,
        nats=nats_settings or config.nats,
        database_url=database_url or config.database_url,
        engine=engine or config.engine,
        instance=config.instance if instance is None else instance,
    )


async def _serve_once(
    projection: Projection,
    config: Settings,
    url: str,
    shard: Shard,
    stop: asyncio.Event,
    rules: BuildRules | None,
    follows: bool,
) -> ProjectionEngine:
    engine = ProjectionEngine(projection, config.nats, url, shard, config.engine, rules, follows)
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

    await asyncio.gather(engine_part(), actor(engine, config, url).run(actor_stop))
    return engine


def run_worker(
    name: str,
    partition: str = "0/1",
    nats_settings: NatsSettings | None = None,
    database_url: str | None = None,
    settings: EngineSettings | None = None,
    config: Settings | None = None,
) -> int:
    """Run one worker process until SIGTERM or SIGINT (the batch in hand is finished, committed and acked).

    ``config`` defaults to the environment's (:class:`Settings`: ``DEALSTREAM_NATS_URL``, ``DEALSTREAM_PREFIX``,
    ``DATABASE_URL``, ``DEALSTREAM_ENGINE_*``, ``DEALSTREAM_RULES`` and ``DEALSTREAM_ENGINE_INSTANCE``, a build
    label); the other arguments override its parts. Returns the process exit code.
    """
    try:
        shard = Shard.parse(partition)
        config = _given(config or Settings.from_env(), nats_settings, database_url, settings)
        projection = projection_of(name, settings=config)
        config.require_database_url()
    except ValueError as exc:
        log.error("worker.invalid", error=str(exc))
        return 2

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        log.info("worker.start", worker=name, build=projection.build, partition=shard.key)
        await serve_worker(name, shard, stop=stop, config=config)

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
    name: str,
    nats_settings: NatsSettings | None = None,
    database_url: str | None = None,
    config: Settings | None = None,
) -> list[Lag]:
    """Lag of every shard of a worker's projection that has a checkpoint (for the CLI, the API and alerts).
    ``config`` (the environment's when not given) names the rules, hence the build; the others override it."""
    config = _given(config or Settings.from_env(), nats_settings, database_url)
    projection = projection_of(name, "", settings=config)
    return await lag_of(projection, config.nats, config.require_database_url())
