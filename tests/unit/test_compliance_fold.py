"""The first-touch compliance fold and report on hand-made timelines: deadlines in the owner's calendar, met,
late, breached, within and cancelled, business and wall time to first touch, the cut at a past date."""

from __future__ import annotations

import datetime as dt

import msgspec
import pytest

from events.envelope import Source, StoredEvent
from events.types import Event, LeadAssigned, LeadCaptured, LeadDisqualified, TouchpointLogged
from projections.business_time import Calendar
from projections.compliance import ComplianceState, fold, lead_at, outcome
from projections.compliance_report import compliance_report
from projections.sla_rules import Policy, SlaRules, Team
from projections.velocity_periods import period
from tests.builders import envelope

MIN = dt.timedelta(minutes=1)
# Monday 23 Nov 2026, 10:00 in Warsaw (CET, UTC+1); the default calendar is UTC, 09:00-17:00.
MON = dt.datetime(2026, 11, 23, 9, 0, tzinfo=dt.UTC)
WARSAW = Calendar(timezone="Europe/Warsaw")

RULES = SlaRules(
    policies=[
        Policy(name="ads", kind="first_touch", within_minutes=5, sources=["meta"], business_hours=False),
        Policy(name="speed", kind="first_touch", within_minutes=60, sources=["web_form", "api"]),
    ],
    teams={"inside": Team(members=["ana"], manager="maria", calendar=WARSAW)},
)


class Log:
    """A log under construction: sequences 1, 2, 3..."""

    def __init__(self) -> None:
        self.events: list[StoredEvent] = []

    def add(self, data: Event, at: dt.datetime, lead_id: str = "l1", source: Source = "api") -> Log:
        env = msgspec.structs.replace(envelope(data, "lead", lead_id, at), source=source)
        seq = len(self.events) + 1
        self.events.append(StoredEvent(sequence=seq, subject=f"t.evt.lead.0.{lead_id}", envelope=env))
        return self

    def state(self) -> ComplianceState:
        return fold(self.events, RULES)


def call(direction: str = "outbound", kind: str = "call") -> TouchpointLogged:
    return msgspec.convert({"touchpoint_id": "tp", "kind": kind, "direction": direction}, TouchpointLogged)


def captured(source: str | None = None) -> LeadCaptured:
    return LeadCaptured(email="x@example.com", source=source)


def test_a_touch_by_the_deadline_is_met_and_its_times_are_counted_in_wall_and_business_time() -> None:
    state = Log().add(captured(), MON).add(call(), MON + 30 * MIN).state()
    lead = state.leads["l1"]
    assert lead.policy == "speed" and lead.deadline == MON + 60 * MIN
    assert lead.touched_at == MON + 30 * MIN and lead.business_seconds == 30 * 60
    assert outcome(lead, MON + 90 * MIN) == "met"


def test_an_assignment_recomputes_the_deadline_in_the_owners_team_calendar() -> None:
    # Captured Monday 16:30 UTC: the default (UTC) calendar gives Tuesday 09:30 UTC; ana works in Warsaw, where
    # it is 17:30, after closing, so her hour runs Tuesday 09:00-10:00 Warsaw, i.e. until 09:00 UTC.
    at = MON + dt.timedelta(hours=7, minutes=30)
    log = Log().add(captured(), at)
    assert log.state().leads["l1"].deadline == dt.datetime(2026, 11, 24, 9, 30, tzinfo=dt.UTC)
    lead = log.add(LeadAssigned(owner="ana"), at + MIN).state().leads["l1"]
    [span] = lead.owners
    assert (span.owner, span.team, span.deadline) == ("ana", "inside", dt.datetime(2026, 11, 24, 9, 0, tzinfo=dt.UTC))
    assert lead.due == span.deadline
    # Touched Tuesday 09:15 UTC: within the unassigned deadline, late for ana's.
    lead = log.add(call(), dt.datetime(2026, 11, 24, 9, 15, tzinfo=dt.UTC)).state().leads["l1"]
    assert outcome(lead, lead.last_at) == "late"
    # Business time in ana's calendar: Tuesday 09:00-10:15 Warsaw.
    assert lead.business_seconds == 75 * 60
    assert lead.touched_at is not None and (lead.touched_at - lead.captured_at) == dt.timedelta(hours=16, minutes=45)


def test_a_lead_untouched_is_within_until_its_deadline_then_breached() -> None:
    lead = Log().add(captured(), MON, source="meta").state().leads["l1"]
    assert lead.policy == "ads" and lead.deadline == MON + 5 * MIN
    assert outcome(lead, MON + 5 * MIN) == "within"
    assert outcome(lead, MON + 6 * MIN) == "breached"


@pytest.mark.parametrize(("after", "expected"), [(4, "cancelled"), (5, "cancelled"), (6, "breached")])
def test_a_lead_disqualified_untouched_is_cancelled_by_its_deadline_and_breached_after(
    after: int, expected: str
) -> None:
    log = Log().add(captured(), MON, source="meta").add(LeadDisqualified(reason="spam"), MON + after * MIN)
    # A touch after the disqualification is no fact: the outcome was fixed.
    lead = log.add(call(), MON + 7 * MIN, source="meta").state().leads["l1"]
    assert lead.touched_at is None
    assert outcome(lead, MON + dt.timedelta(days=1)) == expected


def test_only_a_conversation_or_an_outbound_touch_counts_and_only_the_first() -> None:
    log = Log().add(captured(), MON, source="meta")
    log.add(call("internal", "note"), MON + MIN, source="meta").add(call("inbound", "email"), MON + 2 * MIN)
    assert log.state().leads["l1"].touched_at is None
    log.add(call("inbound", "call"), MON + 7 * MIN).add(call(), MON + 8 * MIN).add(LeadAssigned(owner="bob"), MON)
    lead = log.state().leads["l1"]
    assert lead.touched_at == MON + 7 * MIN and lead.owners == () and outcome(lead, MON + 9 * MIN) == "late"


def test_leads_no_policy_applies_to_are_not_measured_and_replays_change_nothing() -> None:
    log = Log().add(captured(), MON, "l2", source="typeform").add(captured(), MON).add(call(), MON + MIN)
    state = log.state()
    assert set(state.leads) == {"l1"}
    before = dict(state.leads)
    assert fold(log.events, RULES, state).leads == before


def test_events_dated_out_of_order_are_taken_at_the_previous_ones_time() -> None:
    lead = Log().add(captured(), MON).add(call(), MON - 10 * MIN).state().leads["l1"]
    assert lead.touched_at == MON and lead.business_seconds == 0


def test_as_of_a_past_date_only_the_facts_dated_by_then_count() -> None:
    log = Log().add(captured(), MON).add(LeadAssigned(owner="ana"), MON + MIN).add(call(), MON + 120 * MIN)
    lead = log.state().leads["l1"]
    assert lead_at(lead, MON - MIN) is None
    then = lead_at(lead, MON + 30 * MIN)
    assert then is not None and then.owners == lead.owners and then.touched_at is None
    assert outcome(then, MON + 30 * MIN) == "within"
    early = lead_at(lead, MON)
    assert early is not None and early.owners == () and early.due == lead.deadline


def test_the_report_groups_the_periods_leads_by_rep_team_source_and_channel() -> None:
    log = Log()
    log.add(captured("referral"), MON, "a").add(LeadAssigned(owner="ana"), MON, "a").add(call(), MON + 10 * MIN, "a")
    log.add(captured(), MON, "b").add(LeadAssigned(owner="bob"), MON, "b").add(call(), MON + 90 * MIN, "b")
    log.add(captured(), MON, "c", source="meta")
    log.add(captured(), MON + dt.timedelta(days=40), "d")  # next month: not in November's report
    leads = log.state().leads.values()
    november = period("month", MON.date(), "Europe/Warsaw")
    as_of = MON + dt.timedelta(days=50)

    [overall] = compliance_report(leads, november, "overall", as_of).groups
    assert (overall.leads, overall.met, overall.late, overall.breached, overall.within, overall.cancelled) == (
        3,
        1,
        1,
        1,
        0,
        0,
    )
    assert overall.on_time_rate == pytest.approx(1 / 3)
    assert overall.median_wall_minutes == 50 and overall.p90_wall_minutes == pytest.approx(82)
    assert overall.median_business_minutes == 50

    def keys(group: str) -> dict[str | None, tuple[int, int]]:
        report = compliance_report(leads, november, group, as_of)  # type: ignore[arg-type]
        return {g.key: (g.leads, g.met) for g in report.groups}

    assert keys("rep") == {"ana": (1, 1), "bob": (1, 0), None: (1, 0)}
    assert keys("team") == {"inside": (1, 1), None: (2, 0)}
    assert keys("source") == {"api": (1, 0), "meta": (1, 0), "referral": (1, 1)}
    assert keys("channel") == {"api": (2, 1), "meta": (1, 0)}
    # As of 20 minutes after capture: ana's lead met, bob's and the ads lead still open (the ads one past due).
    [then] = compliance_report(leads, november, "overall", MON + 20 * MIN).groups
    assert (then.met, then.breached, then.within, then.median_wall_minutes) == (1, 1, 1, 10)
    with pytest.raises(ValueError, match="group"):
        compliance_report(leads, november, "pipeline", as_of)  # type: ignore[arg-type]
