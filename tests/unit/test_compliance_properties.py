"""Properties of the compliance report over generated lead logs: as of a date it equals the report of the log
folded only up to that date, and every measured lead has exactly one outcome."""

from __future__ import annotations

import datetime as dt

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from events.envelope import StoredEvent
from events.types import Event, LeadAssigned, LeadCaptured, LeadDisqualified, TouchpointLogged
from projections.compliance import fold, lead_at
from projections.compliance_report import GROUPS, Group, compliance_report
from projections.velocity_periods import PERIOD_KINDS, PeriodKind, period
from tests.builders import envelope
from tests.unit.test_compliance_fold import RULES

LEADS = [f"lead{i}" for i in range(5)]
HOUR = dt.timedelta(hours=1)
T0 = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
SPAN = 24 * 62


def lead_event(draw: st.DrawFn) -> Event:
    kind = draw(st.sampled_from(["capture", "assign", "touch", "touch", "disqualify"]))
    if kind == "capture":
        return LeadCaptured(email="x@y.io", source=draw(st.sampled_from([None, "referral"])))
    if kind == "assign":
        return LeadAssigned(owner=draw(st.sampled_from(["ana", "bob"])))
    if kind == "touch":
        kind, direction = draw(st.sampled_from([("call", "outbound"), ("note", "internal"), ("email", "inbound")]))
        return msgspec.convert({"touchpoint_id": "t", "kind": kind, "direction": direction}, TouchpointLogged)
    return LeadDisqualified(reason="no")


@st.composite
def logs(draw: st.DrawFn) -> list[StoredEvent]:
    """Lead events on several channels; within one lead, business times never go back (the fold would take an
    earlier-dated event at the previous one's time, so a prefix by date would differ by design)."""
    events: list[StoredEvent] = []
    last: dict[str, dt.datetime] = {}
    seq = 0
    for _ in range(draw(st.integers(0, 50))):
        seq += draw(st.integers(1, 3))
        lead_id = draw(st.sampled_from(LEADS))
        at = max(T0 + draw(st.integers(0, SPAN)) * HOUR // 4, last.get(lead_id, T0))
        last[lead_id] = at
        env = envelope(lead_event(draw), "lead", lead_id, at)
        env = msgspec.structs.replace(env, source=draw(st.sampled_from(["api", "meta", "typeform"])))
        events.append(StoredEvent(sequence=seq, subject=f"t.evt.lead.0.{lead_id}", envelope=env))
    return events


@settings(max_examples=200, deadline=None)
@given(logs(), st.integers(0, SPAN), st.sampled_from(PERIOD_KINDS), st.sampled_from(GROUPS))
def test_as_of_a_date_equals_folding_only_the_events_up_to_it(
    events: list[StoredEvent], hours: int, kind: PeriodKind, group: Group
) -> None:
    as_of = T0 + hours * HOUR // 4
    p = period(kind, (T0 + dt.timedelta(days=5)).date(), "Europe/Warsaw")
    everything = fold(events, RULES).leads
    prefix = fold([e for e in events if e.envelope.occurred_at <= as_of], RULES).leads
    whole = compliance_report(everything.values(), p, group, as_of)
    assert whole == compliance_report(prefix.values(), p, group, as_of)
    for lead_id, lead in everything.items():
        known = lead_at(lead, as_of)
        assert (known is None) == (lead_id not in prefix)
        if known is not None:
            cut = prefix[lead_id]
            assert (known.owners, known.touched_at, known.disqualified_at) == (
                cut.owners,
                cut.touched_at,
                cut.disqualified_at,
            )


@settings(max_examples=200, deadline=None)
@given(logs(), st.integers(0, SPAN), st.sampled_from(GROUPS))
def test_met_late_and_open_add_up_to_the_leads_captured(events: list[StoredEvent], hours: int, group: Group) -> None:
    as_of = T0 + hours * HOUR // 4
    leads = fold(events, RULES).leads.values()
    p = period("quarter", T0.date(), "UTC")
    report = compliance_report(leads, p, group, as_of)
    captured = sum(1 for lead in leads if lead.captured_at <= as_of)
    assert sum(g.leads for g in report.groups) == captured
    for g in report.groups:
        assert g.met + g.late + g.breached + g.within + g.cancelled == g.leads
        assert g.on_time_rate is None or 0 <= g.on_time_rate <= 1
        assert (g.median_wall_minutes is None) == (g.met + g.late == 0)
        if g.median_business_minutes is not None and g.median_wall_minutes is not None:
            assert 0 <= g.median_business_minutes <= g.median_wall_minutes + 1e-9
