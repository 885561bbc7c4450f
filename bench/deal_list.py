"""The deal list's latency over a large board: ``GET /v1/deals``'s query with filters, search and pages.

The board's tables are filled by the board projection's own writer from rows folded in memory (the list reads
the read model; how fast the worker builds it is the projections section's row), then a mix of list queries
runs against them: no filter, owner, status and stage, expected close range, rotting, name search, name sort,
and the next page of one of them. The figure is the latency of one query (its SQL and the page it assembles).
"""

from __future__ import annotations

import datetime as dt
import random
import time
from decimal import Decimal
from typing import Any

import psycopg

from bench.board import new_schema
from bench.report import Report, Row, percentile
from projections.board import BoardState, DealRow, PipelineRow, Stage
from projections.board_store import BoardProjection
from projections.deal_list import DealFilters, deal_page

T0 = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)
STAGES = ("new", "qualified", "proposal", "negotiation")
OWNERS = tuple(f"rep{i}" for i in range(20))
SYLLABLES = tuple(c + v for c in "bcdfghjklmnprstvwz" for v in "aeiou")
KINDS = ("renewal", "upgrade", "kitchen", "fleet", "cloud", "pilot", "licences", "support")


def _company(rng: random.Random) -> str:
    # Company names of three syllables (729,000 of them): a search for one finds a handful, as in a real book.
    return "".join(rng.choice(SYLLABLES) for _ in range(3)).title()


def board_rows(deals: int, seed: int = 7) -> BoardState:
    """A board of ``deals`` deals in one pipeline: owners, stages, statuses, close dates and names spread out."""
    rng = random.Random(seed)
    stages = tuple(
        Stage(id=s, name=s.title(), probability=p, rotting_days=d)
        for s, p, d in zip(STAGES, (0.1, 0.3, 0.6, 0.8), (7, 10, 14, None), strict=True)
    )
    state = BoardState(pipelines={"sales": PipelineRow(pipeline_id="sales", name="Sales", stages=stages, version=1)})
    for i in range(deals):
        opened = T0 + dt.timedelta(minutes=i)
        status = rng.choices(("open", "won", "lost"), (0.7, 0.2, 0.1))[0]
        state.deals[f"deal-{i}"] = DealRow(
            deal_id=f"deal-{i}",
            pipeline_id="sales",
            stage=rng.choice(STAGES),
            name=f"{_company(rng)} {rng.choice(KINDS)} {i % 1000}",
            amount=Decimal(rng.randrange(100, 100_000)),
            currency="EUR",
            owner=rng.choice(OWNERS),
            status=status,  # type: ignore[arg-type]
            stage_entered_at=opened,
            last_activity_at=opened + dt.timedelta(days=rng.randrange(0, 60)),
            next_task_due_at=None,
            opened_at=opened,
            closed_at=opened + dt.timedelta(days=30) if status != "open" else None,
            lost_reason="price" if status == "lost" else None,
            open_tasks=(),
            version=i + 2,
            expected_close_date=(T0 + dt.timedelta(days=rng.randrange(0, 365))).date(),
        )
    return state


QUERIES: tuple[tuple[str, DealFilters, str | None], ...] = (
    ("newest", DealFilters(), None),
    ("owner", DealFilters(owner="rep3", status="open"), None),
    ("stage", DealFilters(pipeline_id="sales", stage="proposal", status="open"), "-last_activity_at"),
    ("closing", DealFilters(close_from=dt.date(2026, 3, 1), close_to=dt.date(2026, 3, 31)), None),
    ("rotting", DealFilters(rotting=True, owner="rep5"), None),
    ("search", DealFilters(q="kitchen"), None),
    ("search company", DealFilters(q=_company(random.Random(7))), "name"),
    ("search nothing", DealFilters(q="zzyzx"), None),
    ("by name", DealFilters(status="open"), "name"),
)


async def deal_list_figures(report: Report, pg_url: str, deals: int, runs: int = 30) -> Row:
    """p50 and p99 of the list queries over ``deals`` deals; the goal is p99 under 50 ms."""
    dsn = await new_schema(pg_url)
    projection = BoardProjection()
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        for statement in projection.ddl():
            await conn.execute(statement)
        async with conn.transaction(), conn.cursor() as cur:
            await projection.write_changes(cur, BoardState(), board_rows(deals), [])
        await conn.execute(f"ANALYZE {projection.sql.deals}")
        as_of = T0 + dt.timedelta(days=90)
        times: list[float] = []
        found: dict[str, Any] = {}
        for _ in range(runs):
            for name, filters, sort in QUERIES:
                started = time.perf_counter()
                page = await deal_page(conn, filters, sort, limit=50, as_of=as_of, build=projection.build)
                times.append((time.perf_counter() - started) * 1000)
                found[name] = len(page.deals)
                if page.next_cursor is not None:
                    started = time.perf_counter()
                    await deal_page(conn, filters, sort, page.next_cursor, 50, as_of, projection.build)
                    times.append((time.perf_counter() - started) * 1000)
    p99 = percentile(times, 99)
    return report.add(
        Row(
            section="lists",
            name=f"deal list, {deals:,} deals",
            value=len(times) / (sum(times) / 1000),
            unit="queries/s",
            p50_ms=percentile(times, 50),
            p99_ms=p99,
            goal="p99 < 50 ms",
            met=p99 < 50,
            note="filters, search, sorts and next pages, one query at a time; rows per first page: "
            + ", ".join(f"{k} {v}" for k, v in found.items()),
        )
    )
