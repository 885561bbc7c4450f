"""Notices read like a message to a person: who, what to do by when in their time, why them, and a link."""

from __future__ import annotations

import datetime as dt

from events.types import AlertEscalated, AlertRaised, LeadCaptured, LeadQualified
from projections.notices import Subject, address, notice_of, person
from projections.notify import NotifyRules, Recipient, message
from projections.rules import sales_rules_from_toml
from projections.scoring import FitRule, LeadProfile, ScoringRules, explain, score
from tests.builders import envelope

NOW = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)
RULES = NotifyRules(
    recipients={"ana": Recipient(email="ana@example.com", timezone="Europe/Warsaw"), "sales-lead": Recipient()},
    public_url="https://crm.example.com/",
    fallback="sales-lead",
)
MARTA = Subject(owner="ana", name="Marta Kowalska", company="Kowalski i Synowie")


def first_touch() -> AlertRaised:
    deadline = dt.datetime(2026, 11, 23, 13, 5, tzinfo=dt.UTC)
    return AlertRaised(kind="first_touch", policy="speed", subject_type="lead", subject_id="l1", deadline=deadline)


def test_an_alert_names_the_lead_says_what_to_do_in_the_recipients_time_and_links_to_it() -> None:
    notice = notice_of(envelope(first_touch(), aggregate_type="alert", aggregate_id="a1"))
    assert notice is not None
    to = address(notice, MARTA, dt.timedelta(0), RULES.unassigned_wait, RULES.fallback)
    assert to is not None and (to.recipient, to.why) == ("ana", "owner")
    text = message(RULES, notice, MARTA, to, NOW).text
    assert text.splitlines() == [
        "Call Marta Kowalska (Kowalski i Synowie): first touch due 14:05 Warsaw time.",
        "https://crm.example.com/leads/l1",
    ]


def test_a_notice_nobody_owns_waits_then_goes_to_the_fallback_saying_so() -> None:
    notice = notice_of(envelope(first_touch(), aggregate_type="alert", aggregate_id="a1"))
    assert notice is not None
    nobody = Subject(name="Marta Kowalska")
    assert address(notice, nobody, dt.timedelta(seconds=299), RULES.unassigned_wait, RULES.fallback) is None
    to = address(notice, nobody, dt.timedelta(seconds=300), RULES.unassigned_wait, RULES.fallback)
    assert to is not None and (to.recipient, to.why) == ("sales-lead", "unassigned")
    text = message(RULES, notice, nobody, to, NOW).text
    assert "has no owner yet (unassigned)" in text and "13:05 UTC" in text


def test_the_fallback_is_the_rules_manager_unless_notify_names_one() -> None:
    assert sales_rules_from_toml('manager = "boss"\n').notify.fallback == "boss"
    assert sales_rules_from_toml('manager = "boss"\n[notify]\nfallback = "desk"\n').notify.fallback == "desk"


def test_a_qualified_lead_quotes_a_rules_pattern_as_written() -> None:
    rules = ScoringRules(
        version=1,
        threshold=10,
        half_life_days=14,
        fit=[FitRule(name="ceo", field="job_title", pattern=r"\bceo\b", points=20)],
    )
    reason = explain(score(rules, LeadProfile(source="api", job_title="CEO"), [], NOW))
    assert r"job_title matches '\bceo\b'" in reason
    qualified = envelope(LeadQualified(score=20, reason=reason), aggregate_type="lead", aggregate_id="l1")
    notice = notice_of(qualified)
    assert notice is not None
    to = address(notice, MARTA, dt.timedelta(0), RULES.unassigned_wait, RULES.fallback)
    assert to is not None
    text = message(RULES, notice, MARTA, to, NOW).text
    assert text.startswith("Call Marta Kowalska (Kowalski i Synowie): the lead qualified with score 20.")
    assert r"'\bceo\b'" in text and "\\\\b" not in text


def test_an_escalation_goes_to_the_manager_of_whoever_owns_the_lead_when_it_is_sent() -> None:
    # Raised and escalated while the lead had no owner: the event named the manager of nobody.
    escalated = envelope(AlertEscalated(manager="sales-lead"), aggregate_type="alert", aggregate_id="a1")
    notice = notice_of(escalated, first_touch())
    assert notice is not None
    rules = sales_rules_from_toml(
        'manager = "sales-lead"\n[teams.inside]\nmembers = ["ana"]\nmanager = "maria"\n'
        '[notify.recipients.maria]\nwebhook = "https://hooks.example.com/maria"\n'
    ).notify
    to = address(notice, MARTA, dt.timedelta(0), rules.unassigned_wait, rules.fallback, rules.managers)
    assert to is not None and (to.recipient, to.why) == ("maria", "named")
    text = message(rules, notice, MARTA, to, NOW).text
    assert text.startswith("Escalated to you: ana has not acted on Marta Kowalska (Kowalski i Synowie): first touch")
    nobody = address(notice, Subject(), dt.timedelta(0), rules.unassigned_wait, rules.fallback, rules.managers)
    assert nobody is not None and (nobody.recipient, nobody.why) == ("sales-lead", "unassigned")


def test_a_tasks_alert_goes_to_the_tasks_owner_and_names_the_deal() -> None:
    due = AlertRaised(
        kind="task_due", policy="tasks", subject_type="deal", subject_id="d1", deadline=NOW, rep="bo", task_id="t1"
    )
    notice = notice_of(envelope(due, aggregate_type="alert", aggregate_id="a1"))
    assert notice is not None
    deal = Subject(owner="ana", name="Pilot", company="Acme", task_owner="bo")
    to = address(notice, deal, dt.timedelta(0), RULES.unassigned_wait, RULES.fallback)
    assert to is not None and (to.recipient, to.why) == ("bo", "owner")
    without = address(notice, Subject(owner="ana"), dt.timedelta(0), RULES.unassigned_wait, RULES.fallback)
    assert without is not None and without.recipient == "ana"
    text = message(RULES, notice, deal, to, NOW).text
    assert text.splitlines() == [
        "Do the overdue task on deal Pilot (Acme): task t1 was due 12:00 UTC.",
        "https://crm.example.com/deals/d1",
    ]


def test_a_lead_is_named_by_its_full_name_else_first_and_last_else_its_e_mail() -> None:
    assert person(LeadCaptured(full_name="Marta Kowalska", first_name="M")) == ("Marta Kowalska", None)
    assert person(LeadCaptured(first_name="Marta", last_name="Kowalska", company="K")) == ("Marta Kowalska", "K")
    assert person(LeadCaptured(email="marta@example.com")) == ("marta@example.com", None)
