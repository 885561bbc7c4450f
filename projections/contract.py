"""What a projection offers the engine, and the names the engine derives from it. No server imports.

A projection is a name, a version, a build (the version's tables: see :mod:`projections.versions`), its
SQL schema and ``apply_batch``: fold a batch of stored events into
its tables through the connection it is given, inside the engine's transaction (never commit). The engine
owns checkpoints, acks, dead letters and retries.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from events.envelope import AggregateType, StoredEvent
from events.subjects import PARTITIONS, Naming

if TYPE_CHECKING:
    from psycopg import AsyncConnection


class Projection(Protocol):
    """A read model fed from the log.

    ``partitioned``: aggregate types this projection reads, split across shards by partition.
    ``broadcast``: aggregate types every shard reads in full (for a fold that needs them to fold the others).
    ``reads_personal`` (optional): event types the engine hands over with their sealed fields opened by the
    lead keys' vault; a projection holding such clear text must scrub it when the lead's erasure comes.
    """

    name: str
    version: int
    build: str
    """The build's name (see :func:`projections.versions.build_name`): its table prefix and checkpoint key."""
    partitioned: tuple[AggregateType, ...]
    broadcast: tuple[AggregateType, ...]

    def ddl(self) -> Sequence[str]:
        """Idempotent statements creating its tables and indexes."""
        ...

    async def apply_batch(self, conn: AsyncConnection[Any], events: Sequence[StoredEvent]) -> None:
        """Apply events (in log order) within the caller's transaction; raise on an event it cannot apply."""
        ...


class Shard(msgspec.Struct, frozen=True):
    """Process ``index`` of ``count``: it takes partitions p with p % count == index."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if not (1 <= self.count <= PARTITIONS and 0 <= self.index < self.count):
            raise ValueError(f"shard {self.index}/{self.count}: need 0 <= k < N <= {PARTITIONS}")

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"k/N"``, as the CLI's ``--partition`` takes it."""
        try:
            k, n = text.split("/")
            return cls(int(k), int(n))
        except ValueError as exc:
            raise ValueError(f"partition {text!r} is not k/N with 0 <= k < N <= {PARTITIONS}") from exc

    @property
    def key(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def partitions(self) -> list[int]:
        return [p for p in range(PARTITIONS) if p % self.count == self.index]


CHECKPOINT_DDL = """
CREATE TABLE IF NOT EXISTS projection_checkpoints (
    projection text NOT NULL,
    partition_key text NOT NULL,
    last_sequence bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, partition_key)
)
"""


def checkpoint_name(projection: Projection) -> str:
    """The checkpoint's projection key: its build, so a new version or a rebuild starts from sequence 0."""
    return projection.build


def consumer_name(naming: Naming, projection: Projection, shard: Shard) -> str:
    """The durable consumer of one shard of one build of a projection."""
    return f"{naming.prefix}_{projection.build}_{shard.index}of{shard.count}"


def consumer_filter(naming: Naming, projection: Projection) -> str:
    """The one subject filter of the projection's consumer.

    One filter, never ``filter_subjects``: measured on nats-server 2.15.1, a consumer with several filters
    delivers about 2.5-3k msgs/s against 16-24k for one wildcard filter (see bench/board.py). So a
    projection of one aggregate type filters on it; otherwise, and for the partitions of a shard, the
    consumer takes the whole log and :class:`Selector` skips the rest by subject, without decoding it.
    """
    types = set(projection.partitioned) | set(projection.broadcast)
    if len(types) == 1:
        return naming.events_of_type(next(iter(types)))
    return naming.all_events


class Selector:
    """Whether this shard applies an event, from its subject ``<prefix>.evt.<type>.<partition>.<id>``."""

    def __init__(self, projection: Projection, shard: Shard) -> None:
        self._broadcast = frozenset(projection.broadcast)
        self._partitioned = frozenset(projection.partitioned)
        self._partitions = None if shard.count == 1 else frozenset(str(p) for p in shard.partitions)

    def __call__(self, subject: str) -> bool:
        parts = subject.split(".")
        if len(parts) != 5:
            return False
        kind = parts[2]
        if kind in self._broadcast:
            return True
        return kind in self._partitioned and (self._partitions is None or parts[3] in self._partitions)
