"""NATS settings read from the environment, and the one way this project connects to NATS."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import nats
import structlog
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from events.streams import StreamSettings
from events.subjects import Naming

log = structlog.get_logger("dealstream.nats")


class NatsLoginRefused(RuntimeError):
    """The server refused this process's NATS user or password."""


@dataclass(frozen=True, slots=True)
class NatsSettings:
    """``DEALSTREAM_NATS_URL`` (comma-separated for a cluster), ``DEALSTREAM_PREFIX``, ``DEALSTREAM_REPLICAS``, and
    the credentials: ``DEALSTREAM_NATS_CREDS`` (a creds file) or ``DEALSTREAM_NATS_USER`` and ``_PASSWORD``."""

    servers: tuple[str, ...] = ("nats://127.0.0.1:4333",)
    naming: Naming = field(default_factory=Naming)
    streams: StreamSettings = field(default_factory=StreamSettings)
    publish_timeout: float = 2.0
    user_credentials: str | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def shown_servers(self) -> list[str]:
        """The servers without any password a URL carries: what may be logged."""
        return [re.sub(r"//[^/@]*@", "//", url) for url in self.servers]

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> NatsSettings:
        """The NATS part of ``env`` (read by ``workers.settings.Settings`` where the process starts)."""
        return cls(
            servers=tuple(s.strip() for s in env.get("DEALSTREAM_NATS_URL", "nats://127.0.0.1:4333").split(",")),
            naming=Naming(env.get("DEALSTREAM_PREFIX", "dealstream")),
            streams=StreamSettings(
                replicas=int(env.get("DEALSTREAM_REPLICAS", "1")),
                duplicate_window_seconds=float(env.get("DEALSTREAM_DUPLICATE_WINDOW", "120")),
            ),
            publish_timeout=float(env.get("DEALSTREAM_PUBLISH_TIMEOUT", "2.0")),
            user_credentials=env.get("DEALSTREAM_NATS_CREDS") or None,
            user=env.get("DEALSTREAM_NATS_USER") or None,
            password=env.get("DEALSTREAM_NATS_PASSWORD") or None,
        )


async def connect(settings: NatsSettings, name: str) -> tuple[NATS, JetStreamContext]:
    """Connect and keep reconnecting forever; the caller decides what to do while disconnected."""

    client: NATS | None = None

    async def disconnected() -> None:
        # nats-py reports a deliberate close as a disconnect too; only a lost connection is worth a warning.
        if client is None or not (client.is_closed or client.is_draining):
            log.warning("nats.disconnected", client=name)

    async def reconnected() -> None:
        log.info("nats.reconnected", client=name)

    refused = asyncio.Event()

    async def error(exc: Exception) -> None:
        log.warning("nats.error", client=name, error=str(exc) or type(exc).__name__)
        # nats-py retries a refused login forever; wrong or missing credentials never fix themselves.
        if client is None and "authorization violation" in str(exc).lower():
            refused.set()

    connecting = asyncio.ensure_future(
        nats.connect(
            servers=list(settings.servers),
            name=name,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            connect_timeout=2,
            user_credentials=settings.user_credentials,
            user=settings.user,
            password=settings.password,
            disconnected_cb=disconnected,
            reconnected_cb=reconnected,
            error_cb=error,
        )
    )
    refusal = asyncio.ensure_future(refused.wait())
    await asyncio.wait([connecting, refusal], return_when=asyncio.FIRST_COMPLETED)
    refusal.cancel()
    if not connecting.done():
        connecting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await connecting
        who = settings.user or "an anonymous client"
        raise NatsLoginRefused(
            f"NATS refused the login of {who!r} at {', '.join(settings.shown_servers)}: set"
            " DEALSTREAM_NATS_USER and DEALSTREAM_NATS_PASSWORD (or DEALSTREAM_NATS_CREDS)"
        )
    nc = connecting.result()
    client = nc
    return nc, nc.jetstream(timeout=settings.publish_timeout)
