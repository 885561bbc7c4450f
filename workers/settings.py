"""Everything a Dealstream process takes from its environment, read once where the process starts, then passed down.

Nothing below the entry points (``dealstream ...``, ``python -m workers``, the API's app factory) reads the
environment or the rules file: they are handed a :class:`Settings` (or the parts of it they use).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import msgspec
import structlog

from events.config import NatsSettings
from events.logs import configure_logging
from workers.engine import EngineSettings

log = structlog.get_logger("dealstream.settings")

EventLoop = Literal["uvloop", "asyncio"]


class Secrets:
    """The environment's values that the rules name by variable (the webhook secret, an SMTP password)."""

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = dict(values)

    @classmethod
    def from_env(cls) -> Secrets:
        """The process's environment."""
        return cls(os.environ)

    def get(self, name: str | None) -> str:
        """The variable's value, empty when it is unset (or no name is given)."""
        return self._values.get(name or "", "")

    def __repr__(self) -> str:
        # Settings are logged and shown in tracebacks: the values never are.
        return f"Secrets({len(self._values)} variables)"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secrets) and other._values == self._values

    __hash__ = None  # type: ignore[assignment]


class MissingSetting(ValueError):
    """A setting the command needs is not set."""


class GraphSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Meta's Graph API, for the fields of Meta Lead Ads leads: where it is, which version, each page's access
    token (a credential: held like the secrets, never shown), and how hard to try. Variables:
    ``DEALSTREAM_META_GRAPH_URL``, ``DEALSTREAM_META_GRAPH_VERSION``, ``DEALSTREAM_META_PAGE_TOKENS`` (a JSON object
    of page id -> page access token), ``DEALSTREAM_META_FETCH_ATTEMPTS``, ``DEALSTREAM_META_FETCH_BACKOFF``,
    ``DEALSTREAM_META_ADMIN`` (the notify recipient told when a lead's fields cannot be had)."""

    base_url: str = "https://graph.facebook.com"
    version: str = "v21.0"
    page_tokens: Secrets = msgspec.field(default_factory=lambda: Secrets({}))
    attempts: int = 5
    backoff: float = 1.0
    max_backoff: float = 60.0
    timeout: float = 10.0
    admin: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> GraphSettings:
        tokens = env.get("DEALSTREAM_META_PAGE_TOKENS", "").strip() or "{}"
        try:
            pages = msgspec.json.decode(tokens.encode(), type=dict[str, str])
        except msgspec.DecodeError:
            # The value is a credential: the message names the variable, never its text.
            raise ValueError("DEALSTREAM_META_PAGE_TOKENS must be a JSON object of page id -> access token") from None
        attempts = int(env.get("DEALSTREAM_META_FETCH_ATTEMPTS", "5"))
        backoff = float(env.get("DEALSTREAM_META_FETCH_BACKOFF", "1.0"))
        if attempts < 1 or not backoff > 0:
            raise ValueError("DEALSTREAM_META_FETCH_ATTEMPTS must be at least 1 and DEALSTREAM_META_FETCH_BACKOFF > 0")
        return cls(
            base_url=env.get("DEALSTREAM_META_GRAPH_URL", "https://graph.facebook.com"),
            version=env.get("DEALSTREAM_META_GRAPH_VERSION", "v21.0"),
            page_tokens=Secrets(pages),
            attempts=attempts,
            backoff=backoff,
            admin=env.get("DEALSTREAM_META_ADMIN") or None,
        )


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """The process's settings. Variables: ``DEALSTREAM_NATS_*``, ``DEALSTREAM_PREFIX`` and the others of
    :class:`NatsSettings`; ``DEALSTREAM_ENGINE_*`` (:class:`EngineSettings`); ``DATABASE_URL``;
    ``DEALSTREAM_RULES`` (the rules file, e.g. deploy/sales.toml); ``DEALSTREAM_ENGINE_INSTANCE`` (a build
    label); ``DEALSTREAM_CONFIG``, ``DEALSTREAM_HOST``, ``DEALSTREAM_PORT`` (the API's);
    ``DEALSTREAM_EVENT_LOOP``; ``DEALSTREAM_LOG_FORMAT`` and ``DEALSTREAM_LOG_LEVEL``."""

    nats: NatsSettings = msgspec.field(default_factory=NatsSettings)
    engine: EngineSettings = msgspec.field(default_factory=EngineSettings)
    database_url: str | None = None
    rules_path: str | None = None
    instance: str = ""
    api_config_path: str | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    event_loop: EventLoop = "uvloop"
    log_format: str | None = None
    log_level: str | None = None
    secrets: Secrets = msgspec.field(default_factory=lambda: Secrets({}))
    meta_graph: GraphSettings = msgspec.field(default_factory=GraphSettings)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """The settings in ``env`` (the process's environment by default); ValueError names a bad variable."""
        env = dict(os.environ) if env is None else dict(env)
        loop = env.get("DEALSTREAM_EVENT_LOOP", "uvloop").strip().lower()
        if loop not in ("uvloop", "asyncio"):
            raise ValueError(f"DEALSTREAM_EVENT_LOOP must be uvloop or asyncio, got {loop!r}")
        return cls(
            nats=NatsSettings.from_env(env),
            engine=EngineSettings.from_env(env),
            database_url=env.get("DATABASE_URL"),
            rules_path=env.get("DEALSTREAM_RULES") or None,
            instance=env.get("DEALSTREAM_ENGINE_INSTANCE", ""),
            api_config_path=env.get("DEALSTREAM_CONFIG"),
            host=env.get("DEALSTREAM_HOST", "127.0.0.1"),
            port=int(env.get("DEALSTREAM_PORT", "8080")),
            event_loop=loop,  # type: ignore[arg-type]
            log_format=env.get("DEALSTREAM_LOG_FORMAT") or None,
            log_level=env.get("DEALSTREAM_LOG_LEVEL"),
            secrets=Secrets(env),
            meta_graph=GraphSettings.from_env(env),
        )

    def configure_logging(self, level: str | None = None) -> None:
        """Logging as the settings say; ``level`` is the command's own default, which ``DEALSTREAM_LOG_LEVEL``
        overrides."""
        json = None if self.log_format is None else self.log_format == "json"
        configure_logging(json=json, level=self.log_level or level)

    def require_database_url(self) -> str:
        """``DATABASE_URL``, which every command touching the read models needs."""
        if not self.database_url:
            raise MissingSetting("set DATABASE_URL (a PostgreSQL conninfo or URL)")
        return self.database_url

    def read_rules(self) -> tuple[str, str]:
        """The rules file's text and resolved path; empty rules (with a warning) when none is named."""
        if not self.rules_path:
            log.warning("rules.none", hint="set DEALSTREAM_RULES to a TOML rules file, e.g. deploy/sales.toml")
            return "", ""
        path = Path(self.rules_path)
        return path.read_text(encoding="utf-8"), str(path.resolve())
