"""Who is calling: API keys checked against their stored SHA-256, and the scopes they carry."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from events.types import UserRole
from projections.access import Viewer
from services.config import SCOPES, ApiKey
from services.errors import AuthError

ROLE_SCOPES: dict[UserRole, frozenset[str]] = {
    "rep": frozenset({"leads:capture", "leads:write", "deals:write", "read", "history:read"}),
    "manager": frozenset({"leads:capture", "leads:write", "deals:write", "read", "history:read", "subscriptions:read"}),
    "admin": frozenset(SCOPES),
    # History (the events of a lead, a deal or a pipeline, a deal's state from the log) and nothing else.
    "auditor": frozenset({"history:read"}),
}
"""What each role may do; which leads and deals it reaches is :mod:`projections.access`'s answer."""


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated credential."""

    id: str
    scopes: frozenset[str]
    source: str
    public: bool = False
    user: Viewer | None = None
    """A signed-in user (a browser session); None for an API key, which its scopes alone limit."""

    def require(self, scope: str) -> None:
        if scope not in self.scopes:
            raise AuthError(f"credential {self.id!r} lacks scope {scope!r}", status=403)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> tuple[str, str]:
    """A fresh random key and its hash."""
    key = "dsk_" + secrets.token_urlsafe(32)
    return key, hash_key(key)


class KeyRing:
    """The configured keys, looked up by hash (keys are high-entropy, so a plain SHA-256 is enough)."""

    def __init__(self, keys: list[ApiKey]) -> None:
        self._by_hash = {k.sha256: k for k in keys}

    def authenticate(self, presented: str | None) -> Caller:
        if not presented:
            raise AuthError("missing credential: send 'Authorization: Bearer <key>'")
        # A dict lookup by digest leaks nothing useful through timing: the digest of a guess says nothing
        # about the digest of a real key.
        key = self._by_hash.get(hash_key(presented))
        if key is None:
            raise AuthError("unknown or revoked credential")
        return Caller(id=key.id, scopes=frozenset(key.scopes), source=key.source, public=key.is_public)


class RateLimiter:
    """A token bucket per credential (or client address): up to ``burst`` requests at once, refilled at ``rate``
    per second.

    Keyed by client address, the buckets are as many as the addresses that call: past ``max_buckets`` the one
    used longest ago is dropped (its address starts afresh with a full bucket). The buckets live in the process:
    under ``dealstream api --workers N`` each process allows the rate on its own.
    """

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic, max_buckets: int = 100_000
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._max_buckets = max_buckets
        self._buckets: dict[str, tuple[float, float]] = {}

    def _tokens(self, key: str, now: float) -> float:
        # Popped and put back on every use: the dict's order is then the order of last use.
        tokens, then = self._buckets.pop(key, (float(self.burst), now))
        return min(float(self.burst), tokens + (now - then) * self.rate)

    def _keep(self, key: str, tokens: float, now: float) -> None:
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > self._max_buckets:
            del self._buckets[next(iter(self._buckets))]

    def take(self, credential: str) -> float:
        """Take a token: 0.0 if there was one, else the seconds until there will be (nothing is taken)."""
        now = self._clock()
        tokens = self._tokens(credential, now)
        if tokens >= 1.0:
            self._keep(credential, tokens - 1.0, now)
            return 0.0
        self._keep(credential, tokens, now)
        return (1.0 - tokens) / self.rate

    def wait(self, credential: str) -> float:
        """Like :meth:`take`, but takes nothing: 0.0 if a token is there, else the seconds until one is."""
        if credential not in self._buckets:
            return 0.0
        now = self._clock()
        tokens = self._tokens(credential, now)
        self._keep(credential, tokens, now)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate
