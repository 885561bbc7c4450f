"""The ``eventsourcing`` peer at a tiny size: every event of the workload stored, and its board view right."""

from __future__ import annotations

import importlib.util
import uuid
from typing import Any

import psycopg
import pytest
from psycopg import sql

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        importlib.util.find_spec("eventsourcing") is None,
        reason="the eventsourcing library is not installed (pip install -e '.[bench]')",
    ),
]


@pytest.mark.parametrize(("leads", "touches", "moves"), [(20, 2, 2), (21, 1, 4), (5, 0, 0)])
def test_the_peer_stores_the_whole_workload_and_its_board_matches(
    pg_url: str, leads: int, touches: int, moves: int
) -> None:
    from bench.peer import STAGES, run_peer

    dsn = pg_url
    schema = f"peer_test_{uuid.uuid4().hex[:8]}"
    try:
        report = run_peer(dsn, leads, touches, moves, workers=3, schema=schema, keep_schema=True)
        with psycopg.connect(dsn) as conn:

            def rows(query: str, table: str) -> list[tuple[Any, ...]]:
                return conn.execute(sql.SQL(query).format(sql.Identifier(schema, table))).fetchall()

            [(stored,)] = rows("SELECT count(*) FROM {}", "pipeline_events")
            deals = rows("SELECT stage, count(*) FROM {} GROUP BY stage", "board_deals")
            per_stage = rows("SELECT stage, deals FROM {} WHERE deals <> 0", "board_stages")
            [(tracked,)] = rows("SELECT notification_id FROM {} WHERE application_name = 'Pipeline'", "board_tracking")
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))

    opened = (leads + 1) // 2
    assert report.events == leads * (1 + touches) + opened * (1 + moves)
    assert stored == report.events
    assert tracked == report.events
    assert dict(deals) == {STAGES[moves]: opened}
    assert dict(per_stage) == {STAGES[moves]: opened}
    assert report.append_wall_s > 0 and report.projection_wall_s > 0
    assert report.append_events_per_s == pytest.approx(report.events / report.append_wall_s)
