"""Pure parts of the engine: shards, the consumer's filter and the shard's subject selection."""

from __future__ import annotations

import pytest

from events.subjects import PARTITIONS, Naming, partition_of
from projections.board_store import BoardProjection
from projections.contract import Selector, Shard, checkpoint_name, consumer_filter, consumer_name
from workers.engine import EngineSettings
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
    assert consumer_name(NAMING, board, Shard(1, 2)) == "ds_board_v1_1of2"
    assert consumer_name(NAMING, BoardProjection("rebuild"), Shard()) == "ds_board_v1_rebuild_0of1"
    assert checkpoint_name(board) == "board_v1"
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
