"""The board worker: the board projection behind the projection engine."""

from __future__ import annotations

from events.config import NatsSettings
from projections.board_store import BoardProjection
from projections.engine import Shard
from workers.engine import EngineSettings, ProjectionEngine


def board_engine(
    nats_settings: NatsSettings,
    database_url: str,
    shard: Shard | None = None,
    settings: EngineSettings | None = None,
    instance: str = "",
) -> ProjectionEngine:
    return ProjectionEngine(BoardProjection(instance), nats_settings, database_url, shard, settings)
