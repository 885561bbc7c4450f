"""The loop every fold shares. Pure."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

from events.envelope import StoredEvent

S = TypeVar("S")


def fold_into(state: S, events: Iterable[StoredEvent], apply: Callable[[S, StoredEvent], object]) -> S:
    """Fold ``events``, in log order, into ``state`` in place with ``apply``, and return it."""
    for event in events:
        apply(state, event)
    return state
