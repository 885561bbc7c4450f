"""The one batch template of the row stores: load the rows a batch touches, copy, fold, write what changed.

A store supplies only what differs (eventsourcing's ``Projection``): which rows a batch touches and how to load
them, the pure fold, and how its changed rows are written. :class:`BatchProjection.apply_batch` runs the
template inside the engine's transaction (the engine, like eventsourcing's ``ProjectionRunner``, owns
checkpoints, acks, dead letters and retries).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, Protocol, Self, TypeVar

from psycopg import AsyncConnection, AsyncCursor

from events.envelope import StoredEvent
from projections.folding import fold_into

if TYPE_CHECKING:
    from _typeshed import SupportsRichComparison


class Copyable(Protocol):
    """A fold state whose ``copy`` is shallow: rows are frozen, so the fold replaces them and never mutates."""

    def copy(self) -> Self: ...


S = TypeVar("S", bound=Copyable)
K = TypeVar("K", bound="SupportsRichComparison")
V = TypeVar("V")


class BatchProjection(ABC, Generic[S]):
    """A projection whose batch is folded in memory over the rows it touches, then written as a diff."""

    async def apply_batch(self, conn: AsyncConnection[Any], events: Sequence[StoredEvent]) -> None:
        """Fold ``events`` (in log order) over their stored rows and write the changed ones; never commits."""
        state = await self.load_touched(conn, events)
        before = state.copy()
        fold_into(state, events, self.fold)
        async with conn.cursor() as cur:
            await self.write_changes(cur, before, state, events)

    @abstractmethod
    async def load_touched(self, conn: AsyncConnection[Any], events: Sequence[StoredEvent]) -> S:
        """The stored rows the fold of ``events`` may read or replace."""

    @abstractmethod
    def fold(self, state: S, event: StoredEvent) -> None:
        """Fold one event into ``state`` in place (the pure fold of the projection)."""

    @abstractmethod
    async def write_changes(self, cur: AsyncCursor[Any], before: S, after: S, events: Sequence[StoredEvent]) -> None:
        """Write what ``after`` holds that ``before`` did not."""


def changed(after: Mapping[K, V], before: Mapping[K, V]) -> list[V]:
    """The rows added or replaced since ``before``, in key order.

    Sorted: a fixed lock order, so two writers of shared rows can never deadlock. Identity, not equality: the
    fold replaces a row only when it changes it, and comparing frozen rows field by field would cost more.
    """
    return [after[k] for k in sorted(after) if after[k] is not before.get(k)]
