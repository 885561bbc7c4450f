"""The processes a fault test kills: the API and a worker as ``dealstream`` runs them, and a three-node
JetStream cluster on free loopback ports.

Each child runs in its own session and is stopped through its own ``Popen``; nothing here looks processes up
by name. Output goes to a log file whose tail a failing test can show.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from devstack.servers import free_port, nats_server_binary, wait_for_port
from services.auth import hash_key
from services.config import SCOPES

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "services.cli"]

KEY = "faults-admin-key"
CALLER = "faults"
"""The one credential the load driver uses; its id prefixes every idempotency key in the log."""


def write_api_config(path: Path) -> Path:
    scopes = ", ".join(f'"{s}"' for s in SCOPES)
    # The load is one credential sending as fast as the faults allow: the per-credential rate limit is not
    # what these tests are about.
    limits = "rate_per_second = 1000000.0\nrate_burst = 1000000\n"
    path.write_text(f'{limits}[[api_keys]]\nid = "{CALLER}"\nsha256 = "{hash_key(KEY)}"\nscopes = [{scopes}]\n')
    return path


def child_env(**values: str) -> dict[str, str]:
    """The test's environment without any Dealstream setting it may carry, plus ``values``: a child must talk
    to the servers of its test, never to whatever a developer's shell points at."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("DEALSTREAM_") and k not in {"DATABASE_URL"}}
    return {**inherited, "DEALSTREAM_LOG_FORMAT": "json", **values}


@dataclass
class Child:
    """One process, started again with the same command line after a kill."""

    args: list[str]
    env: dict[str, str]
    log: Path
    port: int | None = None
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self, timeout: float = 60.0) -> Child:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                self.args, cwd=ROOT, env=self.env, stdout=out, stderr=out, start_new_session=True
            )
        self.starts += 1
        if self.port is not None:
            wait_for_port(self.port, timeout, self.proc)
        return self

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """kill -9: no handler runs, nothing is flushed or acknowledged on the way out."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL if it does not exit in time; returns the exit code of a clean stop."""
        if self.proc is None or self.proc.poll() is not None:
            return None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


def api_process(log: Path, config: Path, nats_urls: str, prefix: str, **env: str) -> Child:
    """``dealstream api`` on a free loopback port."""
    port = free_port()
    return Child(
        [*CLI, "api", "--host", "127.0.0.1", "--port", str(port)],
        child_env(DEALSTREAM_NATS_URL=nats_urls, DEALSTREAM_PREFIX=prefix, DEALSTREAM_CONFIG=str(config), **env),
        log,
        port=port,
    )


def worker_process(log: Path, name: str, nats_urls: str, prefix: str, database_url: str, **env: str) -> Child:
    """``dealstream worker NAME``."""
    return Child(
        [*CLI, "worker", name],
        child_env(DEALSTREAM_NATS_URL=nats_urls, DEALSTREAM_PREFIX=prefix, DATABASE_URL=database_url, **env),
        log,
    )


@dataclass
class NatsCluster:
    """Three nats-server processes with JetStream, routed to each other on free loopback ports.

    Not deploy/nats/cluster (LoopbackCluster): its fixed ports allow one cluster per machine, and other test
    runs on this machine may hold them. What matters to the fault is kept: JetStream on every node, routes
    between all three, and a write acknowledged only once fsynced."""

    root: Path
    clients: dict[int, int] = field(default_factory=lambda: {n: free_port() for n in (1, 2, 3)})
    routes: dict[int, int] = field(default_factory=lambda: {n: free_port() for n in (1, 2, 3)})
    children: dict[int, Child] = field(default_factory=dict)

    @property
    def urls(self) -> str:
        return ",".join(f"nats://127.0.0.1:{p}" for p in self.clients.values())

    def name(self, node: int) -> str:
        return f"faults-{node}"

    def node_of(self, server_name: str | None) -> int:
        return next(n for n in self.clients if self.name(n) == server_name)

    def _config(self, node: int) -> Path:
        others = "\n".join(f"    nats-route://127.0.0.1:{self.routes[n]}" for n in self.routes if n != node)
        path = self.root / f"node-{node}.conf"
        path.write_text(
            f"server_name: {self.name(node)}\n"
            f"listen: 127.0.0.1:{self.clients[node]}\n"
            f'jetstream {{\n  store_dir: "{self.root / f"n{node}"}"\n  sync_interval: always\n}}\n'
            f"cluster {{\n  name: faults\n  listen: 127.0.0.1:{self.routes[node]}\n"
            f"  routes: [\n{others}\n  ]\n  no_advertise: true\n}}\n"
        )
        return path

    def start(self, node: int | None = None) -> NatsCluster:
        for n in [node] if node is not None else list(self.clients):
            if n not in self.children:
                self.children[n] = Child(
                    [nats_server_binary(), "-c", str(self._config(n))], dict(os.environ), self.root / f"n{n}.log"
                )
            self.children[n].port = self.clients[n]
            self.children[n].start(timeout=30)
        return self

    def kill(self, node: int) -> None:
        self.children[node].kill()

    def stop(self) -> None:
        for child in self.children.values():
            child.stop(15)
