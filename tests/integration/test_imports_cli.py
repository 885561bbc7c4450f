"""``dealstream import`` as a user runs it: a dry run writes nothing and reports bad rows, a real run appends the
export once, a second run nothing."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from nats.js import JetStreamContext

from events.config import NatsSettings
from events.subjects import Naming
from tests.imports_oracle import EXPORTS

pytestmark = pytest.mark.integration

SELL = EXPORTS / "zendesk-sell"


def _import(args: list[str], nats_url: str, naming: Naming) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEALSTREAM_NATS_URL": nats_url, "DEALSTREAM_PREFIX": naming.prefix}
    cmd = [sys.executable, "-m", "services.cli", "import", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)


async def _messages(js: JetStreamContext, naming: Naming) -> int:
    return (await js.stream_info(naming.events_stream)).state.messages


async def test_a_dry_run_reports_bad_rows_and_appends_nothing(
    tmp_path: Path, nats_url: str, naming: Naming, nats_settings: NatsSettings, nats_conn: tuple[Any, JetStreamContext]
) -> None:
    _, js = nats_conn
    deals = tmp_path / "deals.csv"
    lines = (SELL / "deals.csv").read_text(encoding="utf-8").splitlines()
    # Row 3 gets a stage change time that is not a time.
    lines[2] = lines[2].replace("2025-06-17T12:33:15Z,2025-06-17T12:33:15Z", "2025-06-17T12:33:15Z,soon", 1)
    deals.write_text("\n".join(lines) + "\n", encoding="utf-8")
    report = tmp_path / "rejected.csv"
    done = _import(["zendesk-sell", "--deals", str(deals), "--dry-run", "--report", str(report)], nats_url, naming)
    assert done.returncode == 1, done.stderr
    assert "would import 24 deals" in done.stdout
    [problem] = list(csv.DictReader(io.StringIO(report.read_text(encoding="utf-8"))))
    assert (problem["row"], problem["column"], problem["record_id"]) == ("3", "Last Stage Change At", "41230126")
    assert await _messages(js, naming) == 0


async def test_an_import_appends_once_and_a_second_run_nothing(
    nats_url: str, naming: Naming, nats_settings: NatsSettings, nats_conn: tuple[Any, JetStreamContext]
) -> None:
    _, js = nats_conn
    files = [
        "--deals",
        str(SELL / "deals.csv"),
        "--leads",
        str(SELL / "leads.csv"),
        "--people",
        str(SELL / "contacts.csv"),
    ]
    first = _import(["zendesk-sell", *files, "--zone", "Europe/Warsaw"], nats_url, naming)
    assert first.returncode == 0, first.stderr
    assert "imported 25 deals, 10 leads, 1 pipelines" in first.stdout
    written = await _messages(js, naming)
    assert written > 25 + 10
    second = _import(["zendesk-sell", *files], nats_url, naming)
    assert second.returncode == 0, second.stderr
    assert f"appended 0 events, {written} already there" in second.stdout
    assert await _messages(js, naming) == written
