"""The benchmark's report: every figure beside the raw limit measured in the same run, as JSON and a table."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
from collections.abc import Sequence

import msgspec


class Row(msgspec.Struct, kw_only=True):
    """One figure: its value, its latencies where it has them, the raw limit it is compared with, the goal."""

    section: str
    name: str
    value: float
    unit: str
    p50_ms: float | None = None
    p99_ms: float | None = None
    limit: str | None = None
    limit_value: float | None = None
    ratio: float | None = None
    goal: str | None = None
    met: bool | None = None
    note: str = ""


class Report(msgspec.Struct, kw_only=True):
    machine: dict[str, str]
    settings: dict[str, bool | float | int | str]
    rows: list[Row] = msgspec.field(default_factory=list)

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        print(f"  {render_row(row)}", flush=True)
        return row


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation; 0.0 for no values."""
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=1000, method="inclusive")[min(998, max(0, round(q * 10) - 1))]


def ratio_row(
    section: str,
    name: str,
    value: float,
    limit: str,
    limit_value: float,
    goal_ratio: float | None = None,
    **extra: object,
) -> Row:
    ratio = value / limit_value if limit_value else None
    goal = f">= {goal_ratio:.2f} x {limit}" if goal_ratio is not None else None
    met = None if goal_ratio is None or ratio is None else ratio >= goal_ratio
    return Row(
        section=section,
        name=name,
        value=value,
        unit="ev/s",
        limit=limit,
        limit_value=limit_value,
        ratio=ratio,
        goal=goal,
        met=met,
        **extra,  # type: ignore[arg-type]
    )


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    memory = "unknown"
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            kib = int(next(line.split()[1] for line in f if line.startswith("MemTotal")))
            memory = f"{kib / 1024 / 1024:.0f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    return {
        "cpus": str(os.cpu_count()),
        "cpu": cpu,
        "memory": memory,
        "python": platform.python_version(),
        "nats_server": _version(["nats-server", "--version"]),
        "platform": platform.platform(),
    }


def _version(cmd: list[str]) -> str:
    from devstack.servers import nats_server_binary

    try:
        out = subprocess.run([nats_server_binary(), *cmd[1:]], capture_output=True, text=True, timeout=10, check=False)
        return out.stdout.strip() or out.stderr.strip()
    except Exception:
        return "unknown"


def _num(value: float | None, digits: int = 0) -> str:
    return "" if value is None else f"{value:,.{digits}f}"


def render_row(r: Row) -> str:
    value = _num(r.value, 0 if r.unit == "ev/s" else 2)
    lat = f"p50 {r.p50_ms:.1f} ms, p99 {r.p99_ms:.1f} ms" if r.p50_ms is not None and r.p99_ms is not None else ""
    ratio = f"{r.ratio:.2f} x {r.limit}" if r.ratio is not None else ""
    verdict = "" if r.met is None else ("goal met" if r.met else f"GOAL MISSED ({r.goal})")
    parts = [f"{r.name:<44} {value:>11} {r.unit:<5}", lat, ratio, verdict, r.note]
    return "  ".join(p for p in parts if p)


def render(report: Report) -> str:
    """A Markdown table of every row, grouped by section."""
    lines = [
        "| section | figure | value | p50 / p99 | raw limit (same run) | ratio | goal |",
        "|---|---|---:|---:|---|---:|---|",
    ]
    for r in report.rows:
        value = f"{_num(r.value, 0 if r.unit == 'ev/s' else 2)} {r.unit}"
        lat = f"{r.p50_ms:.1f} / {r.p99_ms:.1f} ms" if r.p50_ms is not None and r.p99_ms is not None else ""
        limit = f"{r.limit}: {_num(r.limit_value)} ev/s" if r.limit and r.limit_value is not None else ""
        ratio = f"{r.ratio:.2f}" if r.ratio is not None else ""
        goal = "" if r.goal is None else f"{r.goal}: {'met' if r.met else 'missed'}"
        lines.append(f"| {r.section} | {r.name} | {value} | {lat} | {limit} | {ratio} | {goal} |")
    m = report.machine
    lines.append("")
    lines.append(f"Machine: {m['cpus']} CPUs ({m['cpu']}), {m['memory']}, Python {m['python']}, {m['nats_server']}.")
    return "\n".join(lines)
