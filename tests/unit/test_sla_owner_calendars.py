"""Deadlines in the owner's calendar, counted again when the owner changes, and history past the horizon lapsing."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import msgspec

from events.envelope import AggregateType, StoredEvent
from events.types import DealOpened, DealReassigned, Event, LeadAssigned, LeadCaptured, TouchpointLogged
from projections.business_time import Calendar
from projections.sla import SlaState, Timer, fold
from projections.sla_rules import Policy, SlaRules, Team
from tests.builders import envelope

# Monday 23 November 2026, 10:00 UTC: 18:00 in Shanghai (closed), 11:00 in Warsaw (open).
MON = dt.datetime(2026, 11, 23, 10, 0, tzinfo=dt.UTC)

RULES = SlaRules(
    policies=[
        Policy(name="speed", kind="first_touch", within_minutes=60, escalate_after_minutes=30),
        Policy(name="keep", kind="next_touch", within_minutes=120),
    ],
    teams={
        "inside": Team(members=["ana"], manager="maria", calendar=Calendar(timezone="Europe/Warsaw")),
        "enterprise": Team(members=["chen"], manager="li", calendar=Calendar(timezone="Asia/Shanghai")),
    },
    calendar=Calendar(timezone="Europe/Warsaw"),
)


def _event(
    seq: int, data: Event, at: dt.datetime, recorded: dt.datetime | None = None, kind: AggregateType = "lead"
) -> StoredEvent:
    env = envelope(data, aggregate_type=kind, aggregate_id="x1", occurred_at=at)
    if recorded is not None:
        env = msgspec.structs.replace(env, recorded_at=recorded)
    return StoredEvent(sequence=seq, subject=f"t.evt.{kind}.0.x1", envelope=env)


def _only(state: SlaState) -> Timer:
    [timer] = state.timers.values()
    return timer


def test_a_lead_routed_to_a_shanghai_rep_gets_its_deadline_in_shanghai_hours() -> None:
    captured = _event(1, LeadCaptured(email="a@b.cn"), MON)
    unassigned = _only(fold([captured], RULES))
    assert unassigned.deadline == MON + dt.timedelta(hours=1)  # Warsaw is open: the default calendar
    routed = _only(fold([captured, _event(2, LeadAssigned(owner="chen"), MON + dt.timedelta(seconds=1))], RULES))
    # Shanghai opens at 09:00 on Tuesday (01:00 UTC): the hour runs from then.
    assert routed.rep == "chen" and routed.deadline == dt.datetime(2026, 11, 24, 2, 0, tzinfo=dt.UTC)
    assert routed.escalate_at == dt.datetime(2026, 11, 24, 2, 30, tzinfo=dt.UTC)


def test_a_reassigned_deal_counts_its_next_touch_again_in_the_new_owners_hours() -> None:
    opened = DealOpened(pipeline_id="p", stage="s", name="D", amount=Decimal(1), currency="EUR", owner="ana")
    log = [_event(1, opened, MON, kind="deal")]
    assert _only(fold(log, RULES)).deadline == MON + dt.timedelta(hours=2)
    log.append(_event(2, DealReassigned(owner="chen", previous_owner="ana"), MON, kind="deal"))
    moved = _only(fold(log, RULES))
    assert moved.rep == "chen" and moved.deadline == dt.datetime(2026, 11, 24, 3, 0, tzinfo=dt.UTC)


def test_a_met_clock_keeps_its_deadline_when_the_owner_changes_later() -> None:
    log = [
        _event(1, LeadCaptured(email="a@b.cn"), MON),
        _event(2, TouchpointLogged(touchpoint_id="t1", kind="call", direction="outbound"), MON),
        _event(3, LeadAssigned(owner="chen"), MON),
    ]
    first = next(t for t in fold(log, RULES).timers.values() if t.kind == "first_touch")
    assert first.state == "met" and first.deadline == MON + dt.timedelta(hours=1)


HORIZON = msgspec.structs.replace(RULES, history_horizon_minutes=1440)
LATER = MON + dt.timedelta(days=180)


def test_history_past_the_horizon_lapses_instead_of_falling_due() -> None:
    old = _only(fold([_event(1, LeadCaptured(email="a@b.pl"), MON, recorded=LATER)], HORIZON))
    assert old.state == "lapsed" and not old.due and old.escalate_at is not None
    recent = _only(fold([_event(1, LeadCaptured(email="a@b.pl"), LATER - dt.timedelta(hours=3), LATER)], HORIZON))
    assert recent.state == "pending" and recent.due  # raised as usual once its deadline passes
    no_horizon = _only(fold([_event(1, LeadCaptured(email="a@b.pl"), MON, recorded=LATER)], RULES))
    assert no_horizon.state == "pending"


def test_a_lapsed_clock_answered_in_time_was_met_and_answered_late_stays_breached() -> None:
    touch = TouchpointLogged(touchpoint_id="t1", kind="call", direction="outbound")
    captured = _event(1, LeadCaptured(email="a@b.pl"), MON, recorded=LATER)
    in_time = fold([captured, _event(2, touch, MON + dt.timedelta(minutes=20), LATER)], HORIZON)
    assert next(t for t in in_time.timers.values() if t.kind == "first_touch").state == "met"
    late = fold([captured, _event(2, touch, MON + dt.timedelta(days=2), LATER)], HORIZON)
    breached = next(t for t in late.timers.values() if t.kind == "first_touch")
    assert breached.state == "lapsed" and breached.met_at == MON + dt.timedelta(days=2)
