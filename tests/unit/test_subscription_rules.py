"""Which events a webhook subscription receives, and which targets it may have."""

from __future__ import annotations

import ipaddress
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from events.types import DealOpened, DealStageChanged, LeadCaptured
from projections.subscriptions import EVENT_PATTERN, DeliveryPolicy, filter_matches, target_allowed, type_matches
from tests.builders import envelope

STAGE = envelope(DealStageChanged(from_stage="new", to_stage="won"), "deal", "deal-1")
OPENED = envelope(DealOpened(pipeline_id="p1", stage="new", amount=1, currency="EUR", owner="ana"), "deal", "deal-2")


@pytest.mark.parametrize(
    ("patterns", "event_type", "expected"),
    [
        (["deal.stage_changed.v1"], "deal.stage_changed.v1", True),
        (["deal.stage_changed.v1"], "deal.opened.v1", False),
        (["deal.*"], "deal.won.v1", True),
        (["deal.*"], "lead.captured.v1", False),
        (["*"], "alert.raised.v1", True),
        (["lead.*", "deal.won.v1"], "deal.won.v1", True),
        (["deal.stage_changed.v1"], "deal.stage_changed.v10", False),
    ],
)
def test_event_types_match_by_name_or_pattern(patterns: list[str], event_type: str, expected: bool) -> None:
    assert type_matches(patterns, event_type) is expected


def test_a_filter_compares_the_envelope_then_the_events_own_fields() -> None:
    assert filter_matches({}, STAGE)
    assert filter_matches({"aggregate_id": "deal-1", "to_stage": "won"}, STAGE)
    assert not filter_matches({"aggregate_id": "deal-2"}, STAGE)
    assert filter_matches({"pipeline_id": "p1", "owner": "ana"}, OPENED)
    # An event without the field is not let through.
    assert not filter_matches({"pipeline_id": "p1"}, STAGE)
    assert not filter_matches({"owner": "ana"}, envelope(LeadCaptured(email="a@example.com"), "lead", "l1"))


NAMES = st.from_regex(r"[a-z_]{1,8}", fullmatch=True)


@given(NAMES, NAMES, st.integers(min_value=1, max_value=9))
def test_a_type_matches_itself_and_its_aggregates_wildcard_and_is_a_valid_pattern(
    aggregate: str, change: str, version: int
) -> None:
    event_type = f"{aggregate}.{change}.v{version}"
    assert re.match(EVENT_PATTERN, event_type) and re.match(EVENT_PATTERN, f"{aggregate}.*")
    assert type_matches([event_type], event_type) and type_matches([f"{aggregate}.*"], event_type)
    assert not type_matches([f"{aggregate}x.*"], event_type)


@pytest.mark.parametrize("pattern", ["Deal.*", "deal stage", "deal.", ".deal", "deal.[a-z]", "deal.?", ""])
def test_what_is_not_an_event_type_or_wildcard_is_no_pattern(pattern: str) -> None:
    assert re.match(EVENT_PATTERN, pattern) is None


@pytest.mark.parametrize(
    ("address", "allowed", "expected"),
    [
        ("93.184.215.14", [], True),
        ("2606:4700::1111", [], True),
        ("127.0.0.1", [], False),
        ("10.1.2.3", [], False),
        ("169.254.169.254", [], False),
        ("100.64.0.1", [], False),
        ("0.0.0.0", [], False),
        ("::1", [], False),
        ("fe80::1", [], False),
        ("::ffff:127.0.0.1", [], False),
        ("::ffff:8.8.8.8", [], True),
        ("64:ff9b::7f00:1", [], False),  # NAT64 form of 127.0.0.1
        ("127.0.0.1", ["127.0.0.0/8"], True),
        ("::ffff:127.0.0.1", ["127.0.0.0/8"], True),
        ("10.1.2.3", ["10.1.0.0/16"], True),
        ("10.2.2.3", ["10.1.0.0/16"], False),
    ],
)
def test_only_public_or_allow_listed_targets(address: str, allowed: list[str], expected: bool) -> None:
    assert target_allowed(ipaddress.ip_address(address), allowed) is expected


def test_the_retry_wait_doubles_up_to_its_cap() -> None:
    policy = DeliveryPolicy(backoff_initial_seconds=2, backoff_max_seconds=10)
    assert [policy.backoff(n).total_seconds() for n in (1, 2, 3, 4)] == [2, 4, 8, 10]
