"""The ``dealstream`` command as a newcomer runs it: streams, keys, and the dev stack stopped and restarted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from devstack.servers import LocalStackError, free_port, wait_for_port

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "services.cli"]


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=60)


def test_streams_creates_the_log_with_delete_and_purge_denied(nats_url: str) -> None:
    env = {"DEALSTREAM_NATS_URL": nats_url, "DEALSTREAM_PREFIX": "clistreams"}
    created = _run(["streams"], env)
    assert created.returncode == 0, created.stderr
    configs = [json.loads(chunk) for chunk in created.stdout.replace("}\n{", "}\x00{").split("\x00")]
    events = next(c for c in configs if c["name"] == "CLISTREAMS_EVENTS")
    assert events["deny_delete"] is True and events["deny_purge"] is True
    assert events["storage"] == "file" and events["subjects"] == ["clistreams.evt.>"]
    again = _run(["streams", "--check"], env)
    assert again.returncode == 0 and "CLISTREAMS_DLQ" in again.stdout


def test_keys_new_prints_a_key_and_its_hash_only() -> None:
    from services.auth import hash_key

    made = _run(["keys", "new", "--id", "site", "--scopes", "leads:capture", "--source", "web_form"], {})
    assert made.returncode == 0, made.stderr
    key = next(line[2:] for line in made.stdout.splitlines() if line.startswith("# dsk_"))
    assert hash_key(key) in made.stdout
    bad = _run(["keys", "new", "--id", "site", "--scopes", "everything"], {})
    assert bad.returncode == 2 and "unknown scopes" in bad.stderr


def _get(url: str, key: str = "dev-admin-key") -> Any:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def _post(url: str, body: dict[str, Any], key: str) -> Any:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json", "Idempotency-Key": "dev-lead-1"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _sign_in(api: str, username: str, password: str) -> Any:
    body = json.dumps({"username": username, "password": password}).encode()
    request = urllib.request.Request(f"{api}/session", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _start_dev(data_dir: Path, api_port: int, nats_port: int, pg_url: str) -> subprocess.Popen[str]:
    env = {**os.environ, "DATABASE_URL": pg_url, "DEALSTREAM_LOG_FORMAT": "json"}
    return subprocess.Popen(
        [
            *CLI,
            "dev",
            "--data-dir",
            str(data_dir),
            "--port",
            str(api_port),
            "--nats-port",
            str(nats_port),
            "--nats-monitor-port",
            str(free_port()),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_ready(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("Dealstream is running"):
            return "".join(seen)
    raise AssertionError("dev stack exited before it was ready:\n" + "".join(seen))


def _stop_cleanly(proc: subprocess.Popen[str]) -> None:
    """Ctrl-C; the dev stack exits 0 only when every child stopped on its own (none had to be killed)."""
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=90)
    assert proc.returncode == 0, rest


def _wait_anchored(data_dir: Path, nats_port: int) -> None:
    """Until the dev stack's anchors process has signed the log's heads (it takes one as it starts); a client
    without the dev stack's credentials is turned away at once, saying which variables to set."""
    from events.signing import public_key_of

    public = public_key_of((data_dir / "anchor-signing.pem").read_bytes())
    url = f"nats://127.0.0.1:{nats_port}"
    refused = _run(["audit", "verify", "--public-key", public], {"DEALSTREAM_NATS_URL": url})
    assert refused.returncode == 2, refused.stderr
    assert "NATS refused the login of 'an anonymous client'" in refused.stderr
    assert "DEALSTREAM_NATS_USER" in refused.stderr
    password = (data_dir / "secrets" / "nats-worker.password").read_text().strip()
    env = {"DEALSTREAM_NATS_URL": url, "DEALSTREAM_NATS_USER": "worker", "DEALSTREAM_NATS_PASSWORD": password}
    tries = []
    for _ in range(30):
        tries.append(_run(["audit", "verify", "--public-key", public], env))
        if tries[-1].returncode == 0:
            assert "checked against the anchor" in tries[-1].stdout
            return
        time.sleep(1)
    raise AssertionError(f"no anchor signed by the dev stack's key: {tries[-1].stdout}{tries[-1].stderr}")


def test_dev_stack_runs_stops_on_ctrl_c_and_finds_its_data_again(tmp_path: Path, pg_url: str) -> None:
    api_port, nats_port = free_port(), free_port()
    api = f"http://127.0.0.1:{api_port}/v1"
    proc = _start_dev(tmp_path / "data", api_port, nats_port, pg_url)
    try:
        _wait_ready(proc)
        lead = _post(f"{api}/leads", {"email": "marta@example.pl"}, "dev-form-key")
        assert lead["type"] == "lead.captured.v1"
        pipeline = _get(f"{api}/pipelines/default/events")
        assert pipeline["events"][0]["data"]["stages"][0]["id"] == "qualified"
        assert _sign_in(api, "ana", "dev-ana-password")["role"] == "rep"  # the demo users of the README
        _wait_anchored(tmp_path / "data", nats_port)
    finally:
        _stop_cleanly(proc)
    proc = _start_dev(tmp_path / "data", api_port, nats_port, pg_url)
    try:
        _wait_ready(proc)
        history = _get(f"{api}/leads/{lead['aggregate_id']}/events")["events"]
        # The capture, and (if the routing worker got to it before Ctrl-C) the owner the rules gave it.
        assert history[0]["event_id"] == lead["event_id"]
        assert [e["type"] for e in history[1:]] in ([], ["lead.assigned.v1"])
        assert len(_get(f"{api}/pipelines/default/events")["events"]) == 1
        assert len(_get(f"{api}/users/ana/events")["events"]) == 2  # made once: created, password set
    finally:
        _stop_cleanly(proc)
    with pytest.raises(LocalStackError):  # the API is gone: nothing listens any more
        wait_for_port(api_port, 0.5)


def test_a_printing_command_whose_reader_left_exits_quietly(pg_dsn: str) -> None:
    # `dealstream projections | head -1` with head gone before the first line: the pipe has no reader left.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            [*CLI, "projections"],
            env={**os.environ, "DATABASE_URL": pg_dsn},
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write_end)
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr, done.stderr
    assert done.returncode == 128 + signal.SIGPIPE
