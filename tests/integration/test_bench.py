"""``dealstream bench`` end to end at a tiny size: every section measures something, against real servers.

Figures are not asserted (speed lives in the benchmark's own output); what is asserted is that each row
measured what it says: events went through, alerts were raised, every projection caught up.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from bench.report import Report

pytestmark = pytest.mark.integration


def test_a_tiny_bench_run_reports_every_section(pg_url: str, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    args = ["--leads", "60", "--batch", "20", "--e2e-seconds", "1", "--e2e-rate", "100", "--sla-leads", "5"]
    args += [
        "--rebuild-events",
        "3000",
        "--list-leads",
        "300",
        "--list-rounds",
        "30",
        "--skip-peer",
        "--list-deals",
        "300",
        "--json",
        str(out),
    ]
    env = {**os.environ, "DATABASE_URL": pg_url}
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "bench", *args], env=env, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = msgspec.json.decode(out.read_bytes(), type=Report)
    rows = {(r.section, r.name): r for r in report.rows}
    assert {r.section for r in report.rows} >= {
        "raw",
        "capture",
        "projections",
        "end-to-end",
        "sla",
        "rebuild",
        "lists",
    }
    [deal_list] = [r for r in report.rows if r.section == "lists" and r.name.startswith("deal list")]
    assert deal_list.name == "deal list, 300 deals" and deal_list.p99_ms is not None
    assert all(r.value > 0 for r in report.rows), [r for r in report.rows if r.value <= 0]
    assert all(not r.note.startswith("non-2xx") and "non-2xx" not in r.note for r in report.rows)
    projected = {name.split()[0] for section, name in rows if section == "projections"}
    assert projected == {"board", "velocity", "scores", "sla", "routing", "notify"}
    [sla] = [r for r in report.rows if r.section == "sla"]
    assert sla.value == 5 and sla.p99_ms is not None and sla.p99_ms >= 0
    [e2e] = [r for r in report.rows if r.section == "end-to-end"]
    assert e2e.p50_ms is not None and "100 events" in e2e.note
    assert "| rebuild | rebuild board |" in done.stdout
    [lists] = [r for r in report.rows if r.section == "lists" and not r.name.startswith("deal list")]
    assert lists.p99_ms is not None and "30 pages" in lists.note and lists.name.endswith("300 leads")
