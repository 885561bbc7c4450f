"""The SLA fold without a server: which clocks start, when they fall due, what meets, cancels and resolves them."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from events.envelope import AggregateType, Source, StoredEvent
from events.types import (
    AlertEscalated,
    AlertRaised,
    DealOpened,
    DealStageChanged,
    DealWon,
    Event,
    LeadAssigned,
    LeadCaptured,
    LeadDisqualified,
    PipelineDefined,
    StageDefinition,
    TaskCompleted,
    TaskScheduled,
    TouchpointLogged,
)
from projections.business_time import Calendar
from projections.rules import sales_rules_from_toml
from projections.sla import SlaState, Timer, fold, is_touch
from projections.sla_rules import Policy, SlaRules, Team
from tests.builders import envelope

# A Monday, 10:00 in Warsaw (CET).
MON = dt.datetime(2026, 11, 23, 9, 0, tzinfo=dt.UTC)
MIN = dt.timedelta(minutes=1)

RULES = SlaRules(
    policies=[
        Policy(
            name="ads",
            kind="first_touch",
            within_minutes=5,
            sources=["meta"],
            escalate_after_minutes=15,
            business_hours=False,
        ),
        Policy(name="speed", kind="first_touch", within_minutes=60, business_hours=False),
        Policy(name="keep", kind="next_touch", within_minutes=3 * 1440, business_hours=False),
        Policy(name="tasks", kind="task_due", escalate_after_minutes=30, business_hours=False),
        Policy(name="stale", kind="deal_rotting", business_hours=False),
    ],
    teams={"inside": Team(members=["ana"], manager="maria", calendar=Calendar(timezone="Europe/Warsaw"))},
    manager="boss",
)


class Log:
    """A log under construction: sequences 1, 2, 3..."""

    def __init__(self) -> None:
        self.events: list[StoredEvent] = []

    def add(
        self,
        data: Event,
        at: dt.datetime,
        aggregate_id: str = "l1",
        aggregate_type: AggregateType = "lead",
        source: Source = "api",
    ) -> StoredEvent:
        env = envelope(data, aggregate_type=aggregate_type, aggregate_id=aggregate_id, occurred_at=at)
        if source != "api":
            import msgspec

            env = msgspec.structs.replace(env, source=source)
        stored = StoredEvent(
            sequence=len(self.events) + 1, subject=f"t.evt.{aggregate_type}.0.{aggregate_id}", envelope=env
        )
        self.events.append(stored)
        return stored

    def state(self, rules: SlaRules = RULES) -> SlaState:
        return fold(self.events, rules)


def only(state: SlaState, kind: str) -> Timer:
    [timer] = [t for t in state.timers.values() if t.kind == kind]
    return timer


def touch(n: int, kind: str = "call", direction: str = "outbound") -> TouchpointLogged:
    return TouchpointLogged(touchpoint_id=f"tp{n}", kind=kind, direction=direction)  # type: ignore[arg-type]


def raised(timer: Timer) -> AlertRaised:
    return AlertRaised(
        kind=timer.kind,
        policy=timer.policy,
        subject_type=timer.subject_type,
        subject_id=timer.subject_id,
        deadline=timer.deadline,
        rep=timer.rep,
    )


def test_a_captured_lead_starts_its_first_touch_clock_at_its_own_capture_time() -> None:
    log = Log()
    log.add(LeadCaptured(email="a@example.com"), MON, source="meta")
    timer = only(log.state(), "first_touch")
    assert timer.policy == "ads" and timer.started_at == MON and timer.deadline == MON + 5 * MIN
    assert timer.due and timer.escalate_at == MON + 20 * MIN and timer.rep is None


def test_the_first_matching_policy_applies() -> None:
    log = Log()
    log.add(LeadCaptured(email="a@example.com"), MON, source="web_form")
    assert only(log.state(), "first_touch").policy == "speed"


def test_a_touch_in_time_meets_the_clock_and_starts_the_next_one() -> None:
    log = Log()
    log.add(LeadCaptured(), MON, source="meta")
    log.add(touch(1), MON + 4 * MIN)
    state = log.state()
    first = only(state, "first_touch")
    assert first.state == "met" and not first.due
    nxt = only(state, "next_touch")
    assert nxt.deadline == MON + 4 * MIN + dt.timedelta(days=3) and nxt.due


def test_notes_and_inbound_emails_are_not_touches() -> None:
    assert not is_touch(touch(1, "note"))
    assert not is_touch(touch(1, "email", "inbound"))
    assert not is_touch(touch(1, "call", "internal"))
    assert is_touch(touch(1, "call", "inbound")) and is_touch(touch(1, "sms"))
    log = Log()
    log.add(LeadCaptured(), MON, source="meta")
    log.add(touch(1, "note"), MON + MIN)
    assert only(log.state(), "first_touch").state == "pending"


def test_a_late_touch_leaves_the_breach_to_be_raised_and_the_alert_resolves_at_once() -> None:
    log = Log()
    log.add(LeadCaptured(), MON, source="meta")
    log.add(touch(1), MON + 9 * MIN)
    timer = only(log.state(), "first_touch")
    assert timer.state == "pending" and timer.met_at == MON + 9 * MIN and timer.due
    log.add(raised(timer), MON + 5 * MIN, timer.timer_id, "alert")
    timer = only(log.state(), "first_touch")
    assert timer.state == "raised" and timer.resolution == "met_late" and timer.resolved_at == MON + 9 * MIN


def test_an_alert_is_raised_then_answered_or_escalated() -> None:
    log = Log()
    log.add(LeadCaptured(), MON, source="meta")
    timer = only(log.state(), "first_touch")
    log.add(raised(timer), timer.deadline, timer.timer_id, "alert")
    log.add(AlertEscalated(manager="boss"), MON + 20 * MIN, timer.timer_id, "alert")
    timer = only(log.state(), "first_touch")
    assert timer.state == "raised" and timer.resolved_at is None and not timer.due
    assert timer.escalated_to == "boss" and timer.escalated_at == MON + 20 * MIN
    log.add(touch(1), MON + 30 * MIN)
    timer = only(log.state(), "first_touch")
    assert timer.resolution == "touched" and timer.resolved_at == MON + 30 * MIN


def test_an_alert_of_a_timer_this_state_does_not_hold_is_ignored() -> None:
    log = Log()
    log.add(
        AlertRaised(kind="first_touch", policy="x", subject_type="lead", subject_id="l9", deadline=MON),
        MON,
        "someone-elses",
        "alert",
    )
    assert log.state().timers == {}


def test_assignment_moves_pending_clocks_to_the_new_owner() -> None:
    log = Log()
    log.add(LeadCaptured(), MON, source="meta")
    log.add(LeadAssigned(owner="ana"), MON + MIN)
    assert only(log.state(), "first_touch").rep == "ana"


def test_tasks_fall_due_at_their_due_time_and_completion_meets_them() -> None:
    log = Log()
    log.add(LeadCaptured(), MON)
    log.add(TaskScheduled(task_id="t1", title="Call back", due_at=MON + dt.timedelta(hours=2), owner="bo"), MON)
    timer = only(log.state(), "task_due")
    assert timer.deadline == MON + dt.timedelta(hours=2) and timer.rep == "bo" and timer.task_id == "t1"
    log.add(TaskCompleted(task_id="t1"), MON + dt.timedelta(hours=1))
    assert only(log.state(), "task_due").state == "met"


def test_a_deal_rots_after_its_stage_rotting_days_and_a_stage_move_resets_it() -> None:
    log = Log()
    pipeline = PipelineDefined(
        name="Sales",
        stages=[
            StageDefinition(id="new", name="New", probability=0.1, rotting_days=7),
            StageDefinition(id="won", name="Won", probability=1.0),
        ],
    )
    log.add(pipeline, MON, "sales", "pipeline")
    opened = DealOpened(name="Acme", pipeline_id="sales", stage="new", amount=Decimal(1), currency="EUR", owner="ana")
    log.add(opened, MON, "d1", "deal")
    rot = only(log.state(), "deal_rotting")
    assert rot.deadline == MON + dt.timedelta(days=7) and rot.stage == "new" and rot.rep == "ana"
    log.add(DealStageChanged(from_stage="new", to_stage="won"), MON + dt.timedelta(days=2), "d1", "deal")
    # The new stage has no rotting days: no new clock, and the old one was met.
    assert only(log.state(), "deal_rotting").state == "met"
    log.add(DealWon(stage="won", amount=Decimal(1), currency="EUR"), MON + dt.timedelta(days=3), "d1", "deal")
    assert all(t.state in ("met", "cancelled") for t in log.state().timers.values())


def test_closing_a_lead_cancels_its_clocks() -> None:
    log = Log()
    log.add(LeadCaptured(), MON, source="meta")
    log.add(LeadDisqualified(reason="spam"), MON + MIN)
    timer = only(log.state(), "first_touch")
    assert timer.state == "cancelled" and not timer.due


def test_folding_the_log_again_over_its_own_result_changes_nothing() -> None:
    log = Log()
    log.add(LeadCaptured(), MON, source="meta")
    log.add(touch(1), MON + 9 * MIN)
    log.add(TaskScheduled(task_id="t1", title="x", due_at=MON + dt.timedelta(hours=1)), MON + 10 * MIN)
    state = log.state()
    again = fold(log.events, RULES, state.copy())
    assert again.timers == state.timers and again.subjects == state.subjects
    for cut in range(len(log.events)):
        resumed = fold(log.events[cut:], RULES, fold(log.events[: cut + 1], RULES))
        assert resumed.timers == state.timers


def test_business_hours_count_in_the_owners_team_calendar() -> None:
    rules = SlaRules(
        policies=[Policy(name="speed", kind="first_touch", within_minutes=30)],
        calendar=Calendar(timezone="Europe/Warsaw"),
    )
    friday_1645_warsaw = dt.datetime(2026, 11, 27, 15, 45, tzinfo=dt.UTC)
    log = Log()
    log.add(LeadCaptured(), friday_1645_warsaw)
    # 15 minutes on Friday, the other 15 from Monday's 09:00 Warsaw (08:00Z).
    assert only(log.state(rules), "first_touch").deadline == dt.datetime(2026, 11, 30, 8, 15, tzinfo=dt.UTC)


def test_the_example_rules_load_and_bad_rules_say_what_is_wrong() -> None:
    from pathlib import Path

    rules = sales_rules_from_toml((Path(__file__).parents[2] / "deploy" / "sales.toml").read_text()).sla
    assert rules.policy("first_touch", "lead", "meta", None) is not None
    assert rules.manager_of("ana") == "maria" and rules.manager_of("zed") == "sales-lead"
    assert rules.calendar_of("chen").timezone == "Asia/Shanghai"
    with pytest.raises(ValueError, match="within_minutes"):
        sales_rules_from_toml('[[sla.policies]]\nname = "x"\nkind = "first_touch"\n')
    with pytest.raises(ValueError, match="kind"):
        sales_rules_from_toml('[[sla.policies]]\nname = "x"\nkind = "soon"\n')
