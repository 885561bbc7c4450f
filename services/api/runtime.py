"""What the API's handlers share: the NATS connection (kept alive in the background), the ledger, the keys."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import structlog
from litestar.connection import ASGIConnection
from nats.aio.client import Client as NATS
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from events.config import connect
from events.ledger import Ledger
from events.logs import redact_values
from events.personal import Vault
from events.store import EventStore, StoreUnavailable
from events.streams import StreamsNotReady, require_streams
from services.auth import Caller, KeyRing, RateLimiter
from services.config import Settings
from services.errors import AuthError, RateLimited

log = structlog.get_logger("dealstream.api")

FIRST_CONNECT_WAIT = 5.0
"""Seconds the API's start waits for NATS: streams found drifted by then stop it before it serves anything."""


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


class ReadModelUnavailable(Exception):
    """PostgreSQL is not configured or not reachable; reads of the read models answer 503."""


class Runtime:
    """Owns the NATS connection. Until it is up, every write or read of the log answers 503."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.keys = KeyRing(settings.config.api_keys)
        hooks = settings.config.webhooks
        redact_values(
            s
            for s in (
                hooks.meta and hooks.meta.app_secret,
                hooks.meta and hooks.meta.verify_token,
                hooks.typeform and hooks.typeform.secret,
                hooks.webflow and hooks.webflow.secret,
            )
            if s
        )
        config = settings.config
        self.limiter = RateLimiter(config.rate_per_second, config.rate_burst)
        self.client_limiter = RateLimiter(config.client_rate_per_second, config.client_rate_burst)
        self.auth_failures = RateLimiter(config.auth_failure_rate_per_second, config.auth_failure_burst)
        # Failed sign-ins per username, beside those per address: guesses spread over many addresses still stop.
        self.sign_in_failures = RateLimiter(config.auth_failure_rate_per_second, config.auth_failure_burst)
        self.users_tables_ready = False
        self._proxies = [ipaddress.ip_network(p, strict=False) for p in config.trusted_proxies]
        self._nc: NATS | None = None
        self._ledger: Ledger | None = None
        self._connector: asyncio.Task[None] | None = None
        self._started = False
        self._pool: AsyncConnectionPool[AsyncConnection[Any]] | None = None
        if settings.database_url:
            self._pool = AsyncConnectionPool(
                settings.database_url,
                min_size=1,
                max_size=8,
                open=False,
                kwargs={"autocommit": True},
                name="dealstream-api-reads",
            )

    @property
    def ledger(self) -> Ledger:
        if self._ledger is None or self._nc is None or not self._nc.is_connected:
            raise StoreUnavailable("not connected to NATS yet")
        return self._ledger

    @property
    def store(self) -> EventStore:
        return self.ledger.store

    async def start(self) -> None:
        """Connect; raise :class:`StreamsNotReady` (so the API does not start) when the streams have drifted.

        A NATS that is not up within :data:`FIRST_CONNECT_WAIT` is waited for in the background (503 meanwhile)."""
        if self._pool is not None:
            await self._pool.open(wait=False)
        connector = self._connector = asyncio.create_task(self._connect_forever())
        await asyncio.wait({connector}, timeout=FIRST_CONNECT_WAIT)
        self._started = True
        if connector.done() and (refused := connector.exception()) is not None:
            self._connector = None
            log.error("api.refused", error=str(refused))
            await self.stop()
            raise refused

    def database_url(self) -> str:
        if not self.settings.database_url:
            raise ReadModelUnavailable("no DATABASE_URL configured: the read models are not served here")
        return self.settings.database_url

    @contextlib.asynccontextmanager
    async def read_connection(self) -> AsyncIterator[AsyncConnection[Any]]:
        """A pooled connection to the read models; 503 if PostgreSQL cannot be reached within 2 seconds."""
        if self._pool is None:
            raise ReadModelUnavailable("no DATABASE_URL configured: the read models are not served here")
        try:
            async with self._pool.connection(timeout=2.0) as conn:
                yield conn
        except (PoolTimeout, psycopg.OperationalError) as exc:
            raise ReadModelUnavailable(f"PostgreSQL unreachable: {type(exc).__name__}") from exc
        except psycopg.errors.UndefinedTable as exc:
            raise ReadModelUnavailable("this read model is not built yet: start its worker") from exc

    async def _connect_forever(self) -> None:
        delay = 0.2
        while True:
            try:
                nc, js = await connect(self.settings.nats, "dealstream-api")
                try:
                    # Checked, never changed: only the administrator changes the log (`dealstream streams`).
                    await require_streams(js, self.settings.nats.naming, self.settings.nats.streams)
                except BaseException:
                    with contextlib.suppress(Exception):
                        await nc.close()
                    raise
            except StreamsNotReady as exc:
                if not self._started:
                    raise
                # NATS came up after the API started: serve nothing (503) until the administrator fixes the streams.
                log.error("streams.not_ready", error=str(exc))
                await asyncio.sleep(5.0)
                continue
            except Exception as exc:
                log.warning("nats.unavailable", error=str(exc) or type(exc).__name__, retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            self._nc = nc
            naming = self.settings.nats.naming
            vault = Vault(js, naming)
            self._ledger = Ledger(EventStore(nc, js, naming, self.settings.nats.publish_timeout), vault)
            log.info("nats.connected", servers=self.settings.nats.shown_servers)
            return

    async def stop(self) -> None:
        if self._connector is not None:
            self._connector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connector
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.drain()
        if self._pool is not None:
            await self._pool.close()

    def client_address(self, request: ASGIConnection[Any, Any, Any, Any]) -> str:
        """The caller's address: the socket's peer, or, when the peer is a trusted proxy, the last address in
        ``X-Forwarded-For`` that is not one (the ones before it were written by whoever sent the request)."""
        peer = request.client.host if request.client else ""
        if not self._proxies or not self._trusted(peer):
            return peer
        forwarded = [a.strip() for h in request.headers.getall("x-forwarded-for", []) for a in h.split(",")]
        for address in reversed(forwarded):
            if not self._trusted(address):
                return address if _is_ip(address) else peer
        return peer

    def over_https(self, request: ASGIConnection[Any, Any, Any, Any]) -> bool:
        """Whether the client reached us over https: directly, or as a trusted proxy's X-Forwarded-Proto says."""
        if request.scope.get("scheme") == "https":
            return True
        peer = request.client.host if request.client else ""
        return self._trusted(peer) and request.headers.get("x-forwarded-proto", "").lower() == "https"

    def _trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self._proxies)

    def authenticate(
        self, request: ASGIConnection[Any, Any, Any, Any], allow_query_key: bool = False, address: str | None = None
    ) -> Caller:
        """A key from ``Authorization: Bearer``, ``X-Api-Key``, or (capture-only keys) the ``key`` query field.

        Failed attempts are counted per client address: once over, 429 before any key is even looked at."""
        address = self.client_address(request) if address is None else address
        wait = self.auth_failures.wait(address)
        if wait > 0:
            limiter = self.auth_failures
            raise RateLimited("this address", limiter.rate, limiter.burst, wait, what="failed authentications")
        header = request.headers.get("authorization", "")
        presented = header[7:].strip() if header.lower().startswith("bearer ") else request.headers.get("x-api-key")
        from_query = False
        if not presented and allow_query_key:
            presented, from_query = request.query_params.get("key"), True
        try:
            caller = self.keys.authenticate(presented)
            if from_query and caller.scopes != frozenset({"leads:capture"}):
                raise AuthError("only capture-only keys may be sent in the query string; use the Authorization header")
        except AuthError:
            self.auth_failures.take(address)
            raise
        structlog.contextvars.bind_contextvars(credential=caller.id)
        return caller

    def throttle(self, credential: str, address: str | None = None) -> None:
        """Count a request of ``credential`` (an API key's id, or ``webhook:<source>``); 429 when over its rate.

        With ``address`` (a public key's caller), the address's own bucket is counted first: a flood from one
        address is refused there and never spends the key's bucket, which the other visitors share."""
        if address is not None:
            wait = self.client_limiter.take(f"{credential}@{address}")
            if wait > 0:
                limiter = self.client_limiter
                raise RateLimited(f"{credential} from this address", limiter.rate, limiter.burst, wait)
        wait = self.limiter.take(credential)
        if wait > 0:
            raise RateLimited(credential, self.limiter.rate, self.limiter.burst, wait)

    @staticmethod
    def now() -> dt.datetime:
        return dt.datetime.now(dt.UTC)
