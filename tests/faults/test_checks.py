"""The log check of the fault suite finds what it is there to find: a check that cannot fail proves nothing.
(That the read-model comparison finds a changed row is shown at the end of test_worker_killed.py.)"""

from __future__ import annotations

import pytest

from events.envelope import AggregateType, StoredEvent
from events.types import TouchpointLogged
from tests.builders import envelope
from tests.faults.checks import log_problems
from tests.faults.load import Ack, Request
from tests.faults.processes import CALLER

pytestmark = pytest.mark.faults


def logged(sequence: int, key: str, aggregate_id: str = "d1", aggregate_type: AggregateType = "deal") -> StoredEvent:
    e = envelope(
        TouchpointLogged(touchpoint_id=f"tp{sequence}", kind="call", direction="outbound"),
        aggregate_type=aggregate_type,
        aggregate_id=aggregate_id,
        idempotency_key=f"{CALLER}:{key}",
    )
    return StoredEvent(sequence=sequence, subject=f"t.evt.{aggregate_type}.0.{aggregate_id}", envelope=e)


def ack(event: StoredEvent, key: str, attempts: int = 1) -> Ack:
    e = event.envelope
    return Ack(
        Request(key, "POST", f"/v1/deals/{e.aggregate_id}/touchpoints", {}),
        e.aggregate_type,
        e.aggregate_id,
        e.event_id,
        e.type,
        event.sequence,
        event.sequence,
        attempts > 1,
        attempts,
    )


def test_a_log_of_exactly_the_acknowledged_events_passes() -> None:
    a, b = logged(1, "a"), logged(2, "b", "d2")
    assert log_problems([ack(a, "a"), ack(b, "b", attempts=3)], [a, b]) == []


def test_a_doubled_request_is_found_even_under_another_event_id() -> None:
    a = logged(1, "a")
    again = logged(2, "a")  # a retry decided afresh and appended a second time
    [problem] = log_problems([ack(a, "a")], [a, again])
    assert "landed 2 times, at [1, 2]" in problem


def test_the_same_event_stored_twice_is_found() -> None:
    a = logged(1, "a")
    twice = StoredEvent(sequence=2, subject=a.subject, envelope=a.envelope)
    assert any("in the log 2 times" in p for p in log_problems([ack(a, "a")], [a, twice]))


def test_an_acknowledged_event_missing_from_the_log_is_found() -> None:
    a, b = logged(1, "a"), logged(2, "b")
    problems = log_problems([ack(a, "a"), ack(b, "b")], [a])
    assert any("in the log 0 times" in p for p in problems)
    assert any("landed 0 times" in p for p in problems)


def test_an_event_nobody_acknowledged_is_found() -> None:
    a, stray = logged(1, "a"), logged(2, "z")
    [problem] = log_problems([ack(a, "a")], [a, stray])
    assert "never acknowledged" in problem


def test_an_answer_naming_another_event_than_the_one_that_landed_is_found() -> None:
    a = logged(1, "a")
    other = logged(1, "a")
    [problem] = [p for p in log_problems([ack(other, "a")], [a]) if "answered" in p]
    assert a.envelope.event_id in problem
