"""The board projection fed by the engine from a real nats-server into a real PostgreSQL."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
import psycopg
import pytest
from nats.js import JetStreamContext

from events.config import NatsSettings
from events.envelope import StoredEvent
from events.store import EventStore
from events.subjects import Naming
from events.types import DealAmountChanged
from projections.board import build_board
from projections.board_queries import board
from projections.board_store import BoardProjection, read_state
from tests.builders import T0
from tests.projection_fixtures import (
    DAY,
    FAST,
    SALES,
    Script,
    amount,
    append_concurrently,
    append_script,
    board_engine,
    expected_rows,
    opened,
    running,
    sales_script,
    wait_caught_up,
    workload,
)
from workers.engine import ProjectionEngine

pytestmark = pytest.mark.integration


async def dead_letters(js: JetStreamContext, naming: Naming) -> list[tuple[dict[str, str], bytes]]:
    info = await js.stream_info(naming.dead_letter_stream)
    out = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1) if info.state.messages else []:
        msg = await js.get_msg(naming.dead_letter_stream, seq=seq, direct=True)
        assert msg.data is not None
        out.append((dict(msg.headers or {}), msg.data))
    return out


async def test_a_scripted_pipeline_gives_the_exact_board_rows(
    store: EventStore,
    nats_conn: tuple[Any, JetStreamContext],
    nats_settings: NatsSettings,
    naming: Naming,
    pg_dsn: str,
) -> None:
    _, js = nats_conn
    await append_script(store, sales_script())
    async with running(board_engine(nats_settings, pg_dsn, settings=FAST)):
        await wait_caught_up(js, pg_dsn, naming, BoardProjection())
    async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
        state = await read_state(conn)
        assert state.deals == expected_rows()
        assert state.pipelines["sales"].name == "Sales" and len(state.pipelines["sales"].stages) == 4
        for kwargs in (
            {},
            {"status": "won"},
            {"status": "lost"},
            {"owner": "bo"},
            {"pipeline_id": "sales"},
            {"pipeline_id": "nope"},
            {"limit": 1},
        ):
            assert await board(conn, as_of=T0 + 12 * DAY, **kwargs) == build_board(state, T0 + 12 * DAY, **kwargs)
        [sales] = await board(conn, as_of=T0 + 12 * DAY)
        assert [(c.stage, c.count, [d.deal_id for d in c.deals]) for c in sales.columns] == [
            ("new", 1, ["globex"]),
            ("qualified", 1, ["acme"]),
            ("proposal", 0, []),
            ("negotiation", 0, []),
            ("pilot", 1, ["hooli"]),
        ]
        cur = await conn.execute("SELECT projection, partition_key, last_sequence FROM projection_checkpoints")
        assert await cur.fetchall() == [("board_v2", "0/1", len(sales_script()))]


async def test_the_sql_board_pages_like_the_reference_on_a_bigger_log(
    store: EventStore,
    nats_conn: tuple[Any, JetStreamContext],
    nats_settings: NatsSettings,
    naming: Naming,
    pg_dsn: str,
) -> None:
    _, js = nats_conn
    await append_concurrently(store, workload(400))
    async with running(board_engine(nats_settings, pg_dsn, settings=FAST)):
        await wait_caught_up(js, pg_dsn, naming, BoardProjection())
    as_of = T0 + 90 * DAY
    async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
        state = await read_state(conn)
        assert len(state.deals) == 400
        cases: list[dict[str, Any]] = [{"limit": 7}, {"limit": 7, "owner": "ana"}, {"limit": 1000, "status": "won"}]
        for kwargs in cases:
            expected = build_board(state, as_of, **kwargs)
            assert await board(conn, as_of=as_of, **kwargs) == expected
            # Walk every column to its end through the cursors; SQL and reference agree on each page.
            for pipeline in expected:
                for column in pipeline.columns:
                    cursor, seen = column.next_cursor, len(column.deals)
                    while cursor is not None:
                        page = await board(conn, as_of=as_of, cursor=cursor, limit=kwargs["limit"])
                        assert page == build_board(state, as_of, cursor=cursor, limit=kwargs["limit"])
                        seen += len(page[0].columns[0].deals)
                        cursor = page[0].columns[0].next_cursor
                    assert seen == column.count


async def test_poison_goes_to_the_dead_letter_stream_and_the_rest_is_applied(
    store: EventStore,
    nats_conn: tuple[Any, JetStreamContext],
    nats_settings: NatsSettings,
    naming: Naming,
    pg_dsn: str,
) -> None:
    _, js = nats_conn
    await append_script(store, sales_script()[:4])
    garbage_subject = naming.aggregate_subject("deal", "junk")
    ack = await js.publish(garbage_subject, b"\x00not json{", stream=naming.events_stream)
    await append_script(store, [("deal", "later", opened("Later"), T0)])
    async with running(board_engine(nats_settings, pg_dsn, settings=FAST)) as engine:
        await wait_caught_up(js, pg_dsn, naming, BoardProjection())
    assert engine.dead_lettered == 1
    [(headers, data)] = await dead_letters(js, naming)
    assert data == b"\x00not json{"
    assert headers["Dealstream-Reason"].startswith("decode:")
    assert headers["Dealstream-Projection"] == "board_v2"
    assert headers["Dealstream-Sequence"] == str(ack.seq)
    assert headers["Dealstream-Subject"] == garbage_subject
    async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
        state = await read_state(conn)
    assert set(state.deals) == {"acme", "later"}
    assert state.deals["acme"].stage == "qualified"


class Picky(BoardProjection):
    """The board, except that it raises on amount changes to 13: an event the fold cannot apply."""

    async def apply_batch(self, conn: psycopg.AsyncConnection[Any], events: Sequence[StoredEvent]) -> None:
        for event in events:
            data = event.envelope.data
            if isinstance(data, DealAmountChanged) and data.to_amount == 13:
                raise ValueError("unlucky amount")
        await super().apply_batch(conn, events)


async def test_an_event_the_fold_raises_on_is_dead_lettered_and_the_batch_still_applies(
    store: EventStore,
    nats_conn: tuple[Any, JetStreamContext],
    nats_settings: NatsSettings,
    naming: Naming,
    pg_dsn: str,
) -> None:
    _, js = nats_conn
    script = sales_script()
    bad: Script = [("deal", "acme", amount("1000", "13"), T0 + 5 * DAY)]
    appended = await append_script(store, [*script[:3], *bad, *script[3:]])
    async with running(ProjectionEngine(Picky(), nats_settings, pg_dsn, settings=FAST)) as engine:
        await wait_caught_up(js, pg_dsn, naming, Picky())
    assert engine.dead_lettered == 1
    [(headers, data)] = await dead_letters(js, naming)
    assert headers["Dealstream-Reason"] == "apply: ValueError: unlucky amount"
    assert headers["Dealstream-Sequence"] == str(appended[3].sequence)
    assert data == (await js.get_msg(naming.events_stream, seq=appended[3].sequence, direct=True)).data
    async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
        state = await read_state(conn)
    # Everything else applied, acme's later events included; only the poison event left no trace.
    assert state.deals == {k: msgspec.structs.replace(r, version=r.version + 1) for k, r in expected_rows().items()}


async def test_pipelines_without_deals_and_deals_without_pipelines_both_show(
    store: EventStore,
    nats_conn: tuple[Any, JetStreamContext],
    nats_settings: NatsSettings,
    naming: Naming,
    pg_dsn: str,
) -> None:
    _, js = nats_conn
    await append_script(store, [("pipeline", "empty", SALES, T0), ("deal", "x", opened(pipeline_id="orphan"), T0)])
    async with running(board_engine(nats_settings, pg_dsn, settings=FAST)):
        await wait_caught_up(js, pg_dsn, naming, BoardProjection())
    async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
        boards = await board(conn, as_of=T0)
    assert [(b.pipeline_id, b.name, [c.count for c in b.columns]) for b in boards] == [
        ("empty", "Sales", [0, 0, 0, 0]),
        ("orphan", None, [1]),
    ]
