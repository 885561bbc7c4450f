"""The scores fold without a server: scores as of each event, one crossing per lead, the log's word on
qualification, and the comparison of two rule versions."""

from __future__ import annotations

import datetime as dt

import msgspec

from events.envelope import StoredEvent
from events.types import (
    Event,
    LeadAssigned,
    LeadCaptured,
    LeadDisqualified,
    LeadErased,
    LeadQualified,
    TouchpointLogged,
)
from projections.scores import LeadScore, diff, fold
from projections.scoring import ERASED, rules_from_toml
from tests.builders import envelope

T = dt.datetime(2026, 11, 23, 9, 0, tzinfo=dt.UTC)
RULES = rules_from_toml("""
version = 1
threshold = 30
half_life_days = 14
[[fit]]
name = "leader"
field = "job_title"
pattern = "head"
points = 20
[[engagement]]
name = "conversation"
kind = ["call"]
points = 15
""")


def log(*items: tuple[str, Event, dt.datetime]) -> list[StoredEvent]:
    return [
        StoredEvent(
            sequence=i + 1,
            subject=f"t.evt.lead.0.{lead}",
            envelope=envelope(data, aggregate_type="lead", aggregate_id=lead, occurred_at=at),
        )
        for i, (lead, data, at) in enumerate(items)
    ]


def call(n: int) -> TouchpointLogged:
    return TouchpointLogged(touchpoint_id=f"c{n}", kind="call", direction="outbound")


def test_a_lead_crosses_the_threshold_once_at_the_event_that_takes_it_there() -> None:
    events = log(
        ("a", LeadCaptured(job_title="Head of IT"), T),
        ("a", call(1), T + dt.timedelta(hours=1)),
        ("a", call(2), T + dt.timedelta(hours=2)),
        ("a", LeadAssigned(owner="ana"), T + dt.timedelta(hours=3)),
    )
    lead = fold(events, RULES)["a"]
    assert lead.crossed_sequence == 2 and lead.crossed_at == T + dt.timedelta(hours=1)
    assert lead.pending_qualification and lead.owner == "ana"
    assert [c.rule for c in lead.contributions] == ["leader", "conversation"]


def test_the_log_decides_who_is_qualified() -> None:
    qualified_by_hand = log(
        ("a", LeadCaptured(job_title="Head of IT"), T),
        ("a", LeadQualified(reason="met them"), T),
        ("a", call(1), T + dt.timedelta(hours=1)),
    )
    lead = fold(qualified_by_hand, RULES)["a"]
    assert lead.status == "qualified" and lead.crossed_sequence is None and not lead.pending_qualification
    crossed_then_qualified = log(
        ("a", LeadCaptured(job_title="Head of IT"), T),
        ("a", call(1), T + dt.timedelta(hours=1)),
        ("a", LeadQualified(score=35), T + dt.timedelta(hours=1)),
    )
    assert not fold(crossed_then_qualified, RULES)["a"].pending_qualification
    disqualified = log(("a", LeadCaptured(job_title="Head"), T), ("a", LeadDisqualified(reason="spam"), T))
    assert fold(disqualified, RULES)["a"].status == "disqualified"


def test_folding_again_over_the_result_changes_nothing() -> None:
    events = log(("a", LeadCaptured(job_title="Head"), T), ("a", call(1), T + dt.timedelta(hours=1)))
    once = fold(events, RULES)
    assert fold(events, RULES, dict(once)) == once


def test_the_diff_of_two_builds_names_who_newly_qualifies() -> None:
    events = log(("a", LeadCaptured(job_title="Engineer"), T), ("a", call(1), T + dt.timedelta(hours=1)))
    old = fold(events, RULES)
    v2 = rules_from_toml(
        'version = 2\nthreshold = 30\nhalf_life_days = 14\n[[fit]]\nname = "any"\nfield = "job_title"\n'
        'pattern = "."\npoints = 20\n[[engagement]]\nname = "conversation"\nkind = ["call"]\npoints = 15\n'
    )
    new: dict[str, LeadScore] = fold(events, v2)
    d = diff(old, new)
    assert (d.leads, d.changed, d.newly_qualifying, d.no_longer_qualifying) == (1, 1, 1, 0)
    assert d.largest[0].old_score == 15 and d.largest[0].new_score == 35


def test_an_erasure_scrubs_the_row_to_what_a_rebuild_after_it_would_hold() -> None:
    """Live, the worker folded the lead's fields opened; a rebuild after the erasure reads them ``[erased]``.
    Once the erasure is folded both rows are scored on the same (the clear allow-list), and neither holds a value
    the lead gave."""
    given = LeadCaptured(
        email="jan@kowalski.example",
        phone="+48 600 100 200",
        job_title="Head of Sales",
        company="Kowalski",
        country="PL",
        answers={"budget": "25k"},
    )
    erased = LeadCaptured(email=ERASED, phone=ERASED, job_title=ERASED, company=ERASED, country="PL", has_phone=True)
    touch = TouchpointLogged(touchpoint_id="c1", kind="call", direction="outbound", outcome="talked to Jan")
    gone = msgspec.structs.replace(touch, outcome=ERASED)
    later = T + dt.timedelta(hours=1)
    live = fold(log(("l", given, T), ("l", touch, T), ("l", LeadErased(), later)), RULES)
    rebuilt = fold(log(("l", erased, T), ("l", gone, T), ("l", LeadErased(), later)), RULES)
    # Only the crossing the live build saw (a proposal to qualify, no personal data) is its own.
    assert msgspec.structs.replace(live["l"], crossed_at=None, crossed_sequence=None) == rebuilt["l"]
    assert live["l"].erased
    assert not any(v in repr(live) for v in ("kowalski", "Kowalski", "Head of Sales", "25k", "talked to Jan"))
    assert live["l"].profile.country == "PL" and live["l"].engagement > 0  # the call still counts, not its words
