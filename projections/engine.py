"""What a projection offers the engine, and the names the engine derives from it. No server imports.

A projection is a name, a version, its SQL schema and ``apply_batch``: fold a batch of stored events into
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
    """

    name: str
    version: int
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
    """The checkpoint's projection key: a new version starts from sequence 0."""
    return f"{projection.name}.v{projection.version}"


def consumer_name(naming: Naming, projection: Projection, shard: Shard, instance: str = "") -> str:
    """The durable consumer of one shard of one projection (of one ``instance``, e.g. a rebuild)."""
    suffix = f"_{instance}" if instance else ""
    return f"{naming.prefix}_{projection.name}_v{projection.version}_{shard.index}of{shard.count}{suffix}"


def filter_subjects(naming: Naming, projection: Projection, shard: Shard) -> list[str]:
    """The consumer's filters; they never overlap (JetStream refuses overlapping filter subjects)."""
    subjects = [naming.events_of_type(t) for t in projection.broadcast]
    for t in projection.partitioned:
        if t in projection.broadcast:
            continue
        if shard.count == 1:
            subjects.append(naming.events_of_type(t))
        else:
            subjects += [f"{naming.prefix}.evt.{t}.{p}.*" for p in shard.partitions]
    return subjects
