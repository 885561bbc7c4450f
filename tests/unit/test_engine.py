"""Pure parts of the engine: shards, the consumer's filter and config, subject selection, stalls, poison, the bar."""

from __future__ import annotations

import io

import psycopg
import pytest
from nats.js.api import AckPolicy
from rich.console import Console

from events.subjects import PARTITIONS, Naming, partition_of
from projections.board_store import BoardProjection
from projections.contract import Selector, Shard, checkpoint_name, consumer_filter, consumer_name
from workers.consumer import ShardConsumer
from workers.dead_letters import is_poison
from workers.engine import EngineSettings
from workers.lag import Lag, StallWatch
from workers.rebuild import Progress, progress_bar
from workers.registry import WORKERS, run_worker

NAMING = Naming("ds")


def test_shards_parse_and_split_the_partitions_exactly() -> None:
    assert Shard.parse("1/3") == Shard(1, 3) and Shard(1, 3).key == "1/3"
    for n in (1, 2, 3, 7, PARTITIONS):
        parts = [p for k in range(n) for p in Shard(k, n).partitions]
        assert sorted(parts) == list(range(PARTITIONS))
    for bad in ("", "1", "2/2", "-1/2", "0/0", "0/65", "a/b"):
        with pytest.raises(ValueError):
            Shard.parse(bad)


def test_one_filter_per_consumer_and_the_shard_selects_by_subject() -> None:
    board = BoardProjection()
    assert consumer_filter(NAMING, board) == "ds.evt.>"
    assert consumer_name(NAMING, board, Shard(1, 2)) == "ds_board_v2_1of2"
    assert consumer_name(NAMING, BoardProjection("rebuild"), Shard()) == "ds_board_v2_rebuild_0of1"
    assert checkpoint_name(board) == "board_v2"
    whole, half = Selector(board, Shard()), Selector(board, Shard(partition_of("d1") % 2, 2))
    assert whole(NAMING.aggregate_subject("deal", "d1")) and half(NAMING.aggregate_subject("deal", "d1"))
    assert whole(NAMING.aggregate_subject("pipeline", "p"))
    # Every shard hears of every lead (broadcast): an erasure scrubs the names of the deals opened from it.
    assert whole(NAMING.aggregate_subject("lead", "l1")) and half(NAMING.aggregate_subject("lead", "l1"))
    assert not whole(NAMING.aggregate_subject("alert", "a1"))
    assert not whole("ds.evt.deal.x")
    other = Selector(board, Shard(1 - partition_of("d1") % 2, 2))
    assert not other(NAMING.aggregate_subject("deal", "d1"))


def test_settings_and_build_labels_refuse_what_a_durable_or_a_table_cannot_take() -> None:
    assert EngineSettings.from_env({"DEALSTREAM_ENGINE_BATCH": "10"}) == EngineSettings(batch_size=10)
    for bad in ("has.dot", "Upper", "x" * 33, "sp ace"):
        with pytest.raises(ValueError):
            BoardProjection(bad)
    with pytest.raises(ValueError):
        EngineSettings(batch_size=0)


def test_the_registry_knows_the_board_and_refuses_the_unknown() -> None:
    assert "board" in WORKERS and WORKERS["board"]("").name == "board"
    assert run_worker("nope", "0/1", database_url="postgresql://x") == 2
    assert run_worker("board", "3/2", database_url="postgresql://x") == 2


def _lag(checkpoint: int, first_unapplied: int | None) -> Lag:
    return Lag(
        projection="board_v2",
        partition_key="0/1",
        stream_last_sequence=100,
        checkpoint=checkpoint,
        first_unapplied_sequence=first_unapplied,
        oldest_unapplied_age_seconds=None,
    )


def test_a_shard_is_stalled_only_when_events_wait_and_two_reports_show_the_same_checkpoint() -> None:
    watch = StallWatch()
    assert not watch.stalled(_lag(10, 11))  # the first report has nothing to compare with
    assert not watch.stalled(_lag(20, 21))  # it moved
    assert watch.stalled(_lag(20, 21))  # events wait and it did not move for a whole interval
    assert not watch.stalled(_lag(100, None)) and not watch.stalled(_lag(100, None))  # caught up: nothing waits
    watch.stalled(_lag(30, 31))
    watch.reset()  # a re-synced consumer starts afresh
    assert not watch.stalled(_lag(30, 31))


def test_poison_blames_the_data_never_the_infrastructure() -> None:
    assert is_poison(ValueError("bad amount")) and is_poison(psycopg.errors.NumericValueOutOfRange())
    assert is_poison(psycopg.errors.UniqueViolation())
    for outage in (psycopg.OperationalError(), psycopg.errors.UndefinedTable(), OSError(), TimeoutError()):
        assert not is_poison(outage)


def test_the_consumer_stands_at_the_checkpoint_with_room_for_one_batch_ahead() -> None:
    consumer = ShardConsumer("DS_EVENTS", "ds_board_v2_0of1", "ds.evt.>", batch_size=500, ack_wait=60.0)
    config = consumer.config(checkpoint=41)
    assert config.opt_start_seq == 42 and config.max_ack_pending == 1000 and config.filter_subject == "ds.evt.>"
    assert config.ack_policy == AckPolicy.ALL and config.durable_name == "ds_board_v2_0of1"


def test_the_rebuild_bar_shows_the_build_the_events_done_and_their_rate() -> None:
    out = io.StringIO()
    with progress_bar(Console(file=out, width=120, force_terminal=False)) as shown:
        shown(Progress(build="board_v2_r1", done=0, total=200, serving=False))
        shown(Progress(build="board_v2_r1", done=200, total=200, serving=True))
    assert "board_v2_r1" in out.getvalue() and "200/200 events" in out.getvalue() and "ev/s" in out.getvalue()
