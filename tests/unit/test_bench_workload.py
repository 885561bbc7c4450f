"""The benchmark's synthetic log: phases that can be published concurrently without reordering anything."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

from hypothesis import given, settings
from hypothesis import strategies as st

from bench.workload import synthetic_log
from events.types import DealOpened, LeadCaptured

T0 = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


@settings(max_examples=15, deadline=None)
@given(events=st.integers(min_value=2, max_value=3_000), chunk=st.integers(min_value=1, max_value=400))
def test_each_phase_holds_an_aggregate_once_and_every_aggregate_starts_with_its_opening(
    events: int, chunk: int
) -> None:
    seen: dict[tuple[str, str], list[object]] = defaultdict(list)
    total = 0
    for phase in synthetic_log(events, T0, chunk=chunk):
        keys = [(e.aggregate_type, e.aggregate_id) for e in phase]
        assert len(keys) == len(set(keys))
        for e in phase:
            seen[(e.aggregate_type, e.aggregate_id)].append(e.data)
        total += len(phase)
    assert total >= events
    for (kind, _), datas in seen.items():
        if kind == "lead":
            assert isinstance(datas[0], LeadCaptured) and not any(isinstance(d, LeadCaptured) for d in datas[1:])
        if kind == "deal":
            assert isinstance(datas[0], DealOpened) and len(datas) >= 3
