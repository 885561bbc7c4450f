"""``dealstream dev``: the whole system on one machine, data kept under one folder between runs."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import structlog

from events.config import NatsSettings, connect
from events.envelope import Envelope
from events.ids import uuid7
from events.signing import new_signing_key, public_key_of
from events.store import ConcurrencyError, EventStore
from events.streams import ensure_streams
from events.types import PipelineDefined, StageDefinition
from services.localstack import LocalStackError, NatsServer, PostgresServer, wait_for_port

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
        envelope = Envelope(
            event_id=uuid7(),
            aggregate_type="pipeline",
            aggregate_id="default",
            occurred_at=now,
            recorded_at=now,
            actor="dealstream-dev",
            source="system",
            correlation_id=uuid7(),
            data=DEFAULT_PIPELINE,
        )
        with contextlib.suppress(ConcurrencyError):
            await store.append([envelope], expected_version=0)
    finally:
        await nc.close()


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


def run_dev(data_dir: str, api_port: int, nats_port: int, monitor_port: int = 8333) -> int:
    root = Path(data_dir).resolve()
    logs = root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    nats = NatsServer(
        root / "nats",
        port=nats_port,
        config=DEPLOY / "nats" / "dev.conf" if (DEPLOY / "nats" / "dev.conf").exists() else None,
        log_file=logs / "nats-server.log",
    )
    postgres: PostgresServer | None = None
    children: list[tuple[str, subprocess.Popen[bytes]]] = []
    unclean: list[str] = []
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        nats.start()
        database_url = os.environ.get("DATABASE_URL")
        if not database_url:
            postgres = PostgresServer(root / "pg" / "data", port=DEV_PG_PORT).start()
            database_url = postgres.url
        env = {
            **os.environ,
            "DEALSTREAM_NATS_URL": nats.url,
            "DATABASE_URL": database_url,
            "DEALSTREAM_CONFIG": os.environ.get("DEALSTREAM_CONFIG", str(DEPLOY / "dev.toml")),
            "DEALSTREAM_RULES": os.environ.get("DEALSTREAM_RULES", str(DEPLOY / "sales.toml")),
            "DEALSTREAM_PORT": str(api_port),
        }
        env.setdefault("DEALSTREAM_LOG_FORMAT", "console")
        asyncio.run(prepare_log(NatsSettings.from_env(env)))
        exe = [sys.executable, "-m", "services.cli"]
        anchor_key = anchor_signing_key(root)
        anchoring = [
            *("audit", "anchor", "--key", str(anchor_key), "--keep", str(root / "anchors.jsonl")),
            *("--every", str(ANCHOR_EVERY_SECONDS)),
        ]
        processes = [
            ("api", ["api"]),
            *((f"worker-{w}", ["worker", w]) for w in _worker_names()),
            ("anchors", anchoring),
        ]
        for name, args in processes:
            out = open(logs / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
            children.append((name, subprocess.Popen([*exe, *args], env=env, stdout=out, stderr=out)))
        wait_for_port(api_port, 30, children[0][1])
        _wait_http(f"http://127.0.0.1:{api_port}/v1/health", 30)
        print(
            f"\nDealstream is running (Ctrl-C stops it; data in {root}):\n"
            f"  API           http://127.0.0.1:{api_port}/v1   (key: dev-admin-key)\n"
            f"  OpenAPI       http://127.0.0.1:{api_port}/v1/openapi\n"
            f"  NATS          {nats.url}   (monitoring http://127.0.0.1:{monitor_port})\n"
            f"  PostgreSQL    {database_url}\n"
            f"  workers       {', '.join(_worker_names()) or 'none'}\n"
            f"  anchors       every {ANCHOR_EVERY_SECONDS // 60} minutes, signed by {anchor_key}\n"
            f"                (dealstream audit verify --public-key {public_key_of(anchor_key.read_bytes())})\n"
            f"  logs          {logs}/\n",
            flush=True,
        )
        while not stopping:
            for name, proc in children:
                if proc.poll() is not None:
                    log.error("dev.child_exited", child=name, code=proc.returncode, log=str(logs / f"{name}.log"))
                    stopping = True
            time.sleep(0.3)
    except (LocalStackError, RuntimeError, OSError) as exc:
        print(f"dealstream dev could not start: {exc}\n(see the logs in {logs}/)", file=sys.stderr, flush=True)
        return 1
    finally:
        for _, proc in reversed(children):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name, proc in children:
            try:
                code = proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = -signal.SIGKILL
            if code not in (0, -signal.SIGTERM):
                unclean.append(name)
                log.error("dev.unclean_stop", child=name, code=code, log=str(logs / f"{name}.log"))
        if postgres is not None:
            postgres.stop()
        nats.stop()
        print(
            "Dealstream stopped." if not unclean else f"Dealstream stopped; not cleanly: {', '.join(unclean)}",
            flush=True,
        )
    return 1 if unclean else 0
