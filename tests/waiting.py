"""Waiting for a condition without timed assertions: poll until true, fail only after a generous bound."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


async def eventually(predicate: Callable[[], Awaitable[bool]], within: float = 30.0, every: float = 0.05) -> None:
    """Return once ``predicate()`` is true; raise TimeoutError if it never becomes true within ``within`` seconds."""
    async with asyncio.timeout(within):
        while not await predicate():
            await asyncio.sleep(every)
