"""API configuration: listen address, credentials and webhook secrets, from a TOML file and the environment.

``DEALSTREAM_CONFIG`` names the TOML file (see ``deploy/dev.toml``). API keys are stored as SHA-256
hashes only; ``dealstream keys new`` prints a fresh key and the line to paste.
"""

from __future__ import annotations

import ipaddress
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

import msgspec

from events.config import NatsSettings
from projections.access import AccessRules
from projections.people_rules import NO_PEOPLE_RULES, PeopleRules
from projections.rules import NO_SALES_RULES, SalesRules, sales_rules_from_toml
from projections.sla_rules import Team
from workers.settings import Settings as ProcessSettings

Scope = str
SCOPES: tuple[Scope, ...] = (
    "leads:capture",
    "leads:write",
    "deals:write",
    "pipelines:write",
    "history:read",
    "read",
    "subscriptions:read",
    "subscriptions:write",
    "users:write",
)


class ApiKey(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A credential: an id for logs and idempotency scopes, the key's SHA-256, and what it may do."""

    id: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
    sha256: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")]
    scopes: list[Scope]
    source: str = "api"
    # A key that travels in a web page is everyone's: it is also limited per client address. Unset, a
    # capture-only key is public (the only kind that may be sent as ?key=); false exempts a server's import key.
    public: bool | None = None

    def __post_init__(self) -> None:
        unknown = set(self.scopes) - set(SCOPES)
        if unknown:
            raise ValueError(f"unknown scopes {sorted(unknown)}; known: {list(SCOPES)}")

    @property
    def is_public(self) -> bool:
        return self.public if self.public is not None else set(self.scopes) == {"leads:capture"}


class MetaWebhook(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    app_secret: str
    verify_token: str


class SharedSecret(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    secret: str


class Webhooks(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    meta: MetaWebhook | None = None
    typeform: SharedSecret | None = None
    webflow: SharedSecret | None = None


class ApiConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    api_keys: list[ApiKey] = []
    webhooks: Webhooks = Webhooks()
    max_body_bytes: int = 1_048_576
    max_clock_skew_seconds: int = 300
    max_batch_leads: int = 500
    rate_per_second: Annotated[float, msgspec.Meta(gt=0)] = 50.0
    rate_burst: Annotated[int, msgspec.Meta(ge=1)] = 200
    # Beneath a public key's own bucket, one per client address, so one visitor's flood cannot spend it.
    client_rate_per_second: Annotated[float, msgspec.Meta(gt=0)] = 0.2
    client_rate_burst: Annotated[int, msgspec.Meta(ge=1)] = 10
    # Failed authentications per client address; once over, 429 before any key is checked.
    auth_failure_rate_per_second: Annotated[float, msgspec.Meta(gt=0)] = 0.1
    auth_failure_burst: Annotated[int, msgspec.Meta(ge=1)] = 20
    # Addresses or networks of the reverse proxies whose X-Forwarded-For names the client; none by default.
    trusted_proxies: list[str] = []
    # A connection whose request line and headers have not all arrived within this is closed.
    header_timeout_seconds: Annotated[float, msgspec.Meta(gt=0)] = 5.0
    # Webhook subscriptions may not target private, loopback or link-local addresses (SSRF) unless listed here.
    subscription_allowed_networks: list[str] = []
    # Browser sessions (POST /v1/session): how long one lasts, and whether its cookie is Secure. Unset: Secure
    # when the request came over https (or a trusted proxy says X-Forwarded-Proto: https).
    session_hours: Annotated[float, msgspec.Meta(gt=0, le=24 * 30)] = 12.0
    session_cookie_secure: bool | None = None

    def __post_init__(self) -> None:
        for name, networks in (
            ("trusted_proxies", self.trusted_proxies),
            ("subscription_allowed_networks", self.subscription_allowed_networks),
        ):
            for network in networks:
                try:
                    ipaddress.ip_network(network, strict=False)
                except ValueError:
                    raise ValueError(f"{name}: {network!r} is not an IP address or network") from None


class Settings(msgspec.Struct, frozen=True):
    """Everything the API process needs."""

    nats: NatsSettings
    config: ApiConfig
    host: str = "127.0.0.1"
    port: int = 8080
    database_url: str | None = None
    # From the rules file: the teams (a rep's team lists them, a manager manages it) and [access].
    teams: dict[str, Team] = {}
    access: AccessRules = AccessRules()
    people: PeopleRules = NO_PEOPLE_RULES
    """The rules file's ``[people]`` section (late stages), read at start."""
    rules: SalesRules = NO_SALES_RULES
    """The whole rules file, decoded once at start (team calendars for a rep's day, ...)."""


def load_config(path: str | Path | None) -> ApiConfig:
    """The API's TOML file (``DEALSTREAM_CONFIG``), or the defaults without one."""
    if path is None:
        return ApiConfig()
    with open(path, "rb") as f:
        raw = tomllib.load(f)
    try:
        return msgspec.convert(raw, ApiConfig)
    except msgspec.ValidationError as exc:
        raise SystemExit(f"{path}: {exc}") from exc


def settings_from_env(env: Mapping[str, str] | None = None) -> Settings:
    """The API's settings from the process's settings (see :class:`workers.settings.Settings`)."""
    return api_settings(ProcessSettings.from_env(env))


def api_settings(process: ProcessSettings) -> Settings:
    """The API's part of the process's settings, with its TOML file read."""
    rules = sales_rules_from_toml(process.read_rules()[0]) if process.rules_path else NO_SALES_RULES
    return Settings(
        nats=process.nats,
        config=load_config(process.api_config_path),
        host=process.host,
        port=process.port,
        database_url=process.database_url,
        teams=rules.routing.teams,
        access=rules.access,
        people=rules.people,
        rules=rules,
    )
