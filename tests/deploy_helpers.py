"""The production-shaped NATS cluster of ``deploy/nats/cluster``, started from its own files on loopback.

The node configs fix their ports (client 4241-4243, routes 6241-6243, monitoring 8241-8243), so only one
such cluster can run on a machine at a time; the store directories are passed with ``-sd``.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devstack.servers import LocalStackError, nats_server_binary, wait_for_port

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
CLUSTER_CONFIGS = DEPLOY / "nats" / "cluster"
NODES = (1, 2, 3)
USERS = ("sys", "admin", "api", "worker", "integration")


def client_port(node: int) -> int:
    return 4240 + node


def route_port(node: int) -> int:
    return 6240 + node


def monitor_port(node: int) -> int:
    return 8240 + node


def server_name(node: int) -> str:
    return f"dealstream-{node}"


def password_env(passwords: Mapping[str, str]) -> dict[str, str]:
    """The variables common.conf reads its users' passwords from."""
    return {f"DEALSTREAM_NATS_{user.upper()}_PASSWORD": password for user, password in passwords.items()}


def _port_taken(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


@dataclass
class LoopbackCluster:
    """Three nats-server processes from node-1.conf .. node-3.conf, data and logs under ``root``."""

    root: Path
    passwords: dict[str, str] = field(default_factory=lambda: {u: secrets.token_hex(16) for u in USERS})
    procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    def urls(self, user: str) -> tuple[str, ...]:
        """Every node, with the user's credentials in each URL (nats-py uses a URL's credentials for it alone)."""
        return tuple(f"nats://{user}:{self.passwords[user]}@127.0.0.1:{client_port(n)}" for n in NODES)

    def log(self, node: int) -> Path:
        return self.root / f"n{node}.log"

    def start(self, nodes: tuple[int, ...] = NODES, timeout: float = 30.0) -> LoopbackCluster:
        busy = [p for n in nodes for p in (client_port(n), route_port(n), monitor_port(n)) if _port_taken(p)]
        if busy:
            raise LocalStackError(f"ports {busy} are taken: is another loopback cluster running?")
        env = {**os.environ, **password_env(self.passwords)}
        for node in nodes:
            store = self.root / f"n{node}"
            store.mkdir(parents=True, exist_ok=True)
            out = open(self.log(node), "ab")  # noqa: SIM115 - the child owns it
            self.procs[node] = subprocess.Popen(
                [nats_server_binary(), "-c", str(CLUSTER_CONFIGS / f"node-{node}.conf"), "-sd", str(store)],
                env=env,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
        for node in nodes:
            wait_for_port(client_port(node), timeout, self.procs[node])
        return self

    def kill(self, node: int) -> None:
        """SIGKILL: a crash, no lame-duck hand-over."""
        proc = self.procs[node]
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def monitor(self, node: int, path: str) -> Any:
        """GET a monitoring endpoint (``/jsz``, ``/healthz`` ...) of one node, decoded from JSON."""
        url = f"http://127.0.0.1:{monitor_port(node)}{path}"
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.load(response)
