"""``dealstream dev`` keeps running and shares the machine: its children are restarted when they die, every port
flag is honoured and a taken port is replaced by a free one, two stacks run side by side, and the test suite
passes beside a running stack."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from devstack.servers import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "services.cli"]


@dataclass
class DevStack:
    """A ``dealstream dev`` process, its banner read and the rest of its output collected as it comes."""

    proc: subprocess.Popen[str]
    data_dir: Path
    urls: dict[str, str] = field(default_factory=dict)
    output: list[str] = field(default_factory=list)

    @property
    def api(self) -> str:
        return self.urls["API"]

    def child_pid(self, command: str) -> int:
        """The pid of the stack's own child whose command line contains ``command``."""
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        for pid in children:
            if command in Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode():
                return int(pid)
        raise AssertionError(f"no child {command!r} among {children}")

    def logged(self, event: str, child: str) -> bool:
        return any(event in line and f'"child": "{child}"' in line for line in list(self.output))

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(90)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def start_dev(data_dir: Path, *flags: str, env: dict[str, str] | None = None) -> DevStack:
    run_env = {k: v for k, v in os.environ.items() if not k.startswith("DEALSTREAM_")}
    run_env.update({"DEALSTREAM_LOG_FORMAT": "json", **(env or {})})
    proc = subprocess.Popen(
        [*CLI, "dev", "--data-dir", str(data_dir), *flags],
        cwd=ROOT,
        env=run_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    stack = DevStack(proc, data_dir)
    assert proc.stdout is not None
    for line in proc.stdout:
        stack.output.append(line)
        if match := re.match(r"\s+(API|NATS|PostgreSQL)\s+(\w+://\S+)", line):
            stack.urls[match.group(1)] = match.group(2)
        if (monitor := re.search(r"monitoring (http://\S+?)\)", line)) is not None:
            stack.urls["monitoring"] = monitor.group(1)
        if line.strip().startswith("logs"):
            break
    else:
        raise AssertionError("the dev stack exited before it was ready:\n" + "".join(stack.output))
    out = proc.stdout

    def collect() -> None:
        for line in out:
            stack.output.append(line)

    threading.Thread(target=collect, daemon=True).start()
    return stack


def get(url: str, key: str | None = "dev-admin-key") -> Any:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as response:
        return json.loads(response.read())


def post_lead(api: str, email: str) -> Any:
    request = urllib.request.Request(
        f"{api}/leads",
        data=json.dumps({"email": email}).encode(),
        method="POST",
        headers={"Authorization": "Bearer dev-form-key", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def until(check: Any, within: float = 60.0) -> None:
    """Poll ``check`` (true, or no exception) until it holds; raise its last failure after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        try:
            if check():
                return
            failure: BaseException = AssertionError("not yet")
        except (OSError, AssertionError, KeyError) as exc:
            failure = exc
        if time.monotonic() > deadline:
            raise failure
        time.sleep(0.2)


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A folder the private PostgreSQL's user may enter when the stack runs as root (pytest's tmp_path is closed)."""
    path = Path(tempfile.mkdtemp(prefix="dealstream-dev-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_a_killed_worker_and_nats_server_come_back(tmp_path: Path, pg_url: str) -> None:
    stack = start_dev(tmp_path / "data", env={"DATABASE_URL": pg_url})
    try:
        assert get(f"{stack.api}/health", key=None)["status"] == "ok"
        os.kill(stack.child_pid("worker board"), signal.SIGKILL)
        os.kill(stack.child_pid("nats-server"), signal.SIGKILL)
        until(lambda: stack.logged("dev.child_restarted", "worker-board"))
        until(lambda: stack.logged("dev.child_restarted", "nats-server"))
        assert stack.logged("dev.child_exited", "nats-server") and stack.proc.poll() is None
        # The API reconnected to the restarted nats-server, and the restarted board worker folds what lands.
        until(lambda: get(f"{stack.api}/health", key=None)["status"] == "ok")
        lead = post_lead(stack.api, "after.restart@example.com")
        assert lead["type"] == "lead.captured.v1"
        until(lambda: any(p["worker"] == "board" and p["serving"] for p in get(f"{stack.api}/projections")))
    finally:
        code = stack.stop()
    assert code == 0, "".join(stack.output)
    # Passwords made for the dev users reach neither its output nor any log.
    passwords = [p.read_text().strip() for p in (stack.data_dir / "secrets").glob("nats-*.password")]
    assert len(passwords) == 4 and all(len(p) >= 32 for p in passwords)
    logs = "".join(stack.output) + "".join(p.read_text(errors="replace") for p in (stack.data_dir / "logs").glob("*"))
    assert not [p for p in passwords if p in logs]
    assert {oct(p.stat().st_mode & 0o777) for p in (stack.data_dir / "secrets").iterdir()} == {oct(0o600)}


def test_every_port_flag_is_honoured(tmp_path: Path, pg_url: str) -> None:
    api, nats, monitor = free_port(), free_port(), free_port()
    flags = ["--port", str(api), "--nats-port", str(nats), "--nats-monitor-port", str(monitor)]
    stack = start_dev(tmp_path / "data", *flags, env={"DATABASE_URL": pg_url})
    try:
        assert stack.urls["API"] == f"http://127.0.0.1:{api}/v1"
        assert stack.urls["NATS"] == f"nats://127.0.0.1:{nats}"
        assert get(f"http://127.0.0.1:{monitor}/varz", key=None)["port"] == nats
    finally:
        assert stack.stop() == 0, "".join(stack.output)


def test_two_stacks_run_side_by_side_on_the_default_ports(shared_tmp: Path) -> None:
    """Each with its own private PostgreSQL: the second finds every default port taken and uses free ones; a killed
    PostgreSQL is restarted."""
    first = start_dev(shared_tmp / "one")
    try:
        second = start_dev(shared_tmp / "two")
        try:
            for name in ("API", "NATS", "PostgreSQL", "monitoring"):
                assert first.urls[name] != second.urls[name], name
            for stack in (first, second):
                assert get(f"{stack.api}/health", key=None)["status"] == "ok"
                assert get(f"{stack.urls['monitoring']}/varz", key=None)["server_name"] == "dealstream-dev"
            # The private PostgreSQL is supervised too: killed, it comes back and the board is read again.
            os.kill(first.child_pid("postgres -D"), signal.SIGKILL)
            until(lambda: first.logged("dev.child_restarted", "postgres"))
            until(lambda: isinstance(get(f"{first.api}/board"), list))
        finally:
            assert second.stop() == 0, "".join(second.output)
    finally:
        assert first.stop() == 0, "".join(first.output)


# A slice of the suite that starts every kind of server the suite starts (nats-server, PostgreSQL, the API, the
# workers, a dev stack of its own, the dev nats config), run in a child pytest.
BESIDE = [
    "tests/integration/test_cli.py",
    "tests/integration/test_api_capture.py",
    "tests/integration/test_board_projection.py",
    "tests/integration/test_nats_permissions.py",
    "tests/integration/test_deploy.py::test_dev_config_starts_the_way_the_dev_stack_starts_it",
]


def test_the_suite_passes_beside_a_running_dev_stack(shared_tmp: Path) -> None:
    stack = start_dev(shared_tmp / "dev")  # default ports, its own PostgreSQL: ./scripts/dev as a developer runs it
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DEALSTREAM_")}
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *BESIDE],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-3000:]
        assert get(f"{stack.api}/health", key=None)["status"] == "ok"
    finally:
        assert stack.stop() == 0, "".join(stack.output)
