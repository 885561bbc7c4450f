"""``dealstream dev``: the whole system on one machine, data kept under one folder between runs."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import structlog

from devstack.servers import LocalStackError, NatsServer, PostgresServer, port_or_free, wait_for_port
from devstack.supervisor import ProcessChild, ServerChild, Supervisor
from events.config import NatsSettings, connect
from events.ids import uuid7
from events.ledger import Context, new_envelope
from events.signing import new_signing_key, public_key_of
from events.store import ConcurrencyError, EventStore
from events.streams import ensure_streams
from events.types import PipelineDefined, StageDefinition, UserRole
from services.users_cli import ensure_user
from workers.settings import Settings

log = structlog.get_logger("dealstream.dev")

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
DEV_PG_PORT = 54329
ANCHOR_EVERY_SECONDS = 300

DEFAULT_PIPELINE = PipelineDefined(
    name="New business",
    stages=[
        StageDefinition(id="qualified", name="Qualified", probability=0.1, rotting_days=14),
        StageDefinition(id="discovery", name="Discovery", probability=0.2, rotting_days=14),
        StageDefinition(id="proposal", name="Proposal", probability=0.5, rotting_days=10),
        StageDefinition(id="negotiation", name="Negotiation", probability=0.8, rotting_days=7),
    ],
)


async def prepare_log(settings: NatsSettings) -> None:
    """Create the streams and a ``default`` pipeline, unless they exist already."""
    nc, js = await connect(settings, "dealstream-dev")
    try:
        await ensure_streams(js, settings.naming, settings.streams)
        store = EventStore(nc, js, settings.naming)
        now = dt.datetime.now(dt.UTC)
        ctx = Context(actor="dealstream-dev", source="system", correlation_id=uuid7(), now=now)
        envelope = new_envelope(ctx, "pipeline", "default", DEFAULT_PIPELINE)
        with contextlib.suppress(ConcurrencyError):
            await store.append([envelope], expected_version=0)
    finally:
        await nc.close()


DEMO_USERS: tuple[tuple[str, UserRole, str], ...] = (
    ("admin", "admin", "dev-admin-password"),
    ("ana", "rep", "dev-ana-password"),
)
"""The dev stack's users (their passwords are public, like its keys): an admin, and ana, a rep of inside-sales."""


async def demo_users(settings: NatsSettings, database_url: str) -> None:
    """Create the demo users unless they exist (a password changed since is kept)."""
    for username, role, password in DEMO_USERS:
        await ensure_user(settings, database_url, username, role, password)


def anchor_signing_key(root: Path) -> Path:
    """The dev stack's key for signing anchors, made on the first start and kept beside the data."""
    path = root / "anchor-signing.pem"
    if not path.exists():
        path.write_bytes(new_signing_key())
        path.chmod(0o600)
    return path


def _worker_names() -> list[str]:
    from workers.registry import WORKERS

    return sorted([*WORKERS, "intake"])


def _wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310
            if response.status == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer 200 within {timeout:.0f}s")


NATS_USERS = ("admin", "api", "worker", "integration")
"""The dev nats-server's users (deploy/nats/dev.conf): the same roles and permissions as the cluster's."""


def nats_passwords(folder: Path) -> dict[str, str]:
    """Each dev NATS user's password: random, made on first use, kept in ``folder`` (mode 0700, files 0600)."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    passwords = {}
    for user in NATS_USERS:
        path = folder / f"nats-{user}.password"
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(24) + "\n")
        passwords[user] = path.read_text().strip()
    return passwords


def nats_server_env(passwords: dict[str, str]) -> dict[str, str]:
    """The environment dev.conf reads its users' passwords from (quoted: nats-server reads a variable's value as
    configuration text)."""
    return {**os.environ, **{f"DEALSTREAM_NATS_{u.upper()}_PASSWORD": f"'{p}'" for u, p in passwords.items()}}


def _as(env: dict[str, str], user: str, passwords: dict[str, str]) -> dict[str, str]:
    """``env`` for a process connecting as ``user`` (never through the URL, which gets logged)."""
    return {**env, "DEALSTREAM_NATS_USER": user, "DEALSTREAM_NATS_PASSWORD": passwords[user]}


def _port(name: str, wanted: int) -> int:
    port = port_or_free(wanted)
    if port != wanted:
        log.warning("dev.port_taken", service=name, wanted=wanted, using=port)
    return port


def run_dev(
    data_dir: str,
    api_port: int,
    nats_port: int,
    monitor_port: int = 8333,
    pg_port: int = DEV_PG_PORT,
    settings: Settings | None = None,
) -> int:
    """Run the whole stack until Ctrl-C; ``settings`` (the environment's when not given) may name a PostgreSQL."""
    settings = settings or Settings.from_env()
    root = Path(data_dir).resolve()
    logs = root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    if settings.nats.naming.prefix != "dealstream":
        # The dev users' permissions name the subjects of the default prefix (deploy/nats/cluster/permissions.inc).
        print("dealstream dev runs with the prefix 'dealstream': unset DEALSTREAM_PREFIX", file=sys.stderr)
        return 2
    passwords = nats_passwords(root / "secrets")
    api_port, nats_port, monitor_port = _port("api", api_port), _port("nats", nats_port), _port("monitor", monitor_port)
    nats = NatsServer(
        root / "nats",
        port=nats_port,
        config=DEPLOY / "nats" / "dev.conf",
        log_file=logs / "nats-server.log",
        monitor_port=monitor_port,
        env=nats_server_env(passwords),
    )
    postgres: PostgresServer | None = None
    supervisor = Supervisor()
    children: list[ProcessChild] = []
    unclean: list[str] = []
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        nats.start()
        supervisor.watch(ServerChild("nats-server", nats.start, lambda: nats.proc, nats.log_file), time.monotonic())
        database_url = settings.database_url
        if not database_url:
            pg = postgres = PostgresServer(root / "pg" / "data", port=_port("postgres", pg_port)).start()
            supervisor.watch(
                ServerChild("postgres", pg.start, lambda: pg.proc, pg.data_dir / "server.log"), time.monotonic()
            )
            database_url = pg.url
        env = {
            **{k: v for k, v in os.environ.items() if k != "DEALSTREAM_NATS_CREDS"},
            "DEALSTREAM_NATS_URL": nats.url,
            "DATABASE_URL": database_url,
            "DEALSTREAM_CONFIG": os.environ.get("DEALSTREAM_CONFIG", str(DEPLOY / "dev.toml")),
            "DEALSTREAM_RULES": os.environ.get("DEALSTREAM_RULES", str(DEPLOY / "sales.toml")),
            "DEALSTREAM_PORT": str(api_port),
        }
        env.setdefault("DEALSTREAM_LOG_FORMAT", "console")
        # The dev stack is this log's administrator: it makes the streams, as `dealstream streams` would.
        asyncio.run(prepare_log(NatsSettings.from_env(_as(env, "admin", passwords))))
        asyncio.run(demo_users(NatsSettings.from_env(_as(env, "api", passwords)), database_url))
        exe = [sys.executable, "-m", "services.cli"]
        anchor_key = anchor_signing_key(root)
        anchoring = [
            *("audit", "anchor", "--key", str(anchor_key), "--keep", str(root / "anchors.jsonl")),
            *("--every", str(ANCHOR_EVERY_SECONDS)),
        ]
        children.append(ProcessChild("api", [*exe, "api"], _as(env, "api", passwords), logs / "api.log"))
        for w in _worker_names():
            child = ProcessChild(
                f"worker-{w}", [*exe, "worker", w], _as(env, "worker", passwords), logs / f"worker-{w}.log"
            )
            children.append(child)
        children.append(
            ProcessChild("anchors", [*exe, *anchoring], _as(env, "worker", passwords), logs / "anchors.log")
        )
        for child in children:
            child.start()
            supervisor.watch(child, time.monotonic())
        wait_for_port(api_port, 30, children[0].proc)
        _wait_http(f"http://127.0.0.1:{api_port}/v1/health", 30)
        print(
            f"\nDealstream is running (Ctrl-C stops it; data in {root}):\n"
            f"  API           http://127.0.0.1:{api_port}/v1   (key: dev-admin-key)\n"
            f"  users         {', '.join(f'{u} ({r}, password {p})' for u, r, p in DEMO_USERS)}\n"
            f"  OpenAPI       http://127.0.0.1:{api_port}/v1/openapi\n"
            f"  NATS          {nats.url}   (monitoring http://127.0.0.1:{monitor_port})\n"
            f"  NATS users    {', '.join(NATS_USERS)}: passwords in {root / 'secrets'}/nats-<user>.password\n"
            f"  PostgreSQL    {database_url}\n"
            f"  workers       {', '.join(_worker_names()) or 'none'}\n"
            f"  anchors       every {ANCHOR_EVERY_SECONDS // 60} minutes, signed by {anchor_key}\n"
            f"                (dealstream audit verify --public-key {public_key_of(anchor_key.read_bytes())})\n"
            f"  logs          {logs}/\n",
            flush=True,
        )
        while not stopping:
            supervisor.check(time.monotonic())
            time.sleep(0.3)
    except (LocalStackError, RuntimeError, OSError) as exc:
        print(f"dealstream dev could not start: {exc}\n(see the logs in {logs}/)", file=sys.stderr, flush=True)
        return 1
    finally:
        for child in reversed(children):
            if child.proc is not None and child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
        for child in children:
            if child.proc is None:
                continue
            try:
                code = child.proc.wait(15)
            except subprocess.TimeoutExpired:
                child.proc.kill()
                code = -signal.SIGKILL
            if code not in (0, -signal.SIGTERM):
                unclean.append(child.name)
                log.error("dev.unclean_stop", child=child.name, code=code, log=str(child.log_file))
        if postgres is not None:
            postgres.stop()
        nats.stop()
        print(
            "Dealstream stopped." if not unclean else f"Dealstream stopped; not cleanly: {', '.join(unclean)}",
            flush=True,
        )
    return 1 if unclean else 0
