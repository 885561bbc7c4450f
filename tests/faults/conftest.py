"""Fixtures of the fault suite: every process a test starts is stopped at its end, whatever happened."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol, TypeVar

import httpx
import nats.errors
import pytest
from nats.js.errors import APIError, NoStreamResponseError, ServiceUnavailableError

from events.config import NatsSettings, connect
from events.streams import ensure_streams
from tests.faults.processes import write_api_config
from tests.waiting import eventually


class Stoppable(Protocol):
    def stop(self) -> object: ...


S = TypeVar("S", bound=Stoppable)


class Reaper:
    """Remembers what a test started; stops it all, last first, when the test ends."""

    def __init__(self) -> None:
        self._started: list[Stoppable] = []

    def __call__(self, thing: S) -> S:
        self._started.append(thing)
        return thing

    def stop_all(self) -> None:
        errors: list[BaseException] = []
        for thing in reversed(self._started):
            try:
                thing.stop()
            except Exception as exc:  # one failed stop must not leave the others running
                errors.append(exc)
        if errors:
            raise errors[0]


@pytest.fixture
def reaper() -> Iterator[Reaper]:
    r = Reaper()
    try:
        yield r
    finally:
        r.stop_all()


@pytest.fixture
def api_config(tmp_path: Path) -> Path:
    return write_api_config(tmp_path / "api.toml")


async def healthy(base_url: str, within: float = 60.0) -> None:
    """Until the API answers its health check with 200 (it is connected to NATS)."""
    async with httpx.AsyncClient(base_url=base_url, timeout=2.0) as client:

        async def ok() -> bool:
            try:
                return (await client.get("/v1/health")).status_code == 200
            except httpx.TransportError:
                return False

        await eventually(ok, within, every=0.1)


async def streams_made(settings: NatsSettings, within: float = 90.0) -> None:
    """The streams made as the administrator makes them (``dealstream streams``) before the API and the workers
    start, retried while a cluster elects its meta leader; the API and the workers only check them."""
    nc, js = await connect(settings, "faults-admin")
    try:

        async def made() -> bool:
            try:
                await ensure_streams(js, settings.naming, settings.streams)
            except (APIError, NoStreamResponseError, ServiceUnavailableError, nats.errors.TimeoutError):
                return False
            return True

        await eventually(made, within, every=0.5)
    finally:
        await nc.close()
