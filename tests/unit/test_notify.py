"""Who is told what, when: recipients, messages, quiet hours, the retry schedule and the signature."""

from __future__ import annotations

import datetime as dt
import hmac

import pytest

from events.envelope import Envelope
from events.types import AlertEscalated, AlertRaised, LeadQualified, TouchpointLogged
from projections.notices import Subject, address, notice_of
from projections.notify import Delivery, NotifyRules, QuietHours, Recipient, Smtp, deliveries, message, signature
from projections.rules import sales_rules_from_toml
from tests.builders import envelope

T = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)
RULES = NotifyRules(
    recipients={
        "ana": Recipient(webhook="https://hooks.example.com/ana", email="ana@example.com"),
        "maria": Recipient(email="maria@example.com"),
    },
    smtp=Smtp(),
)


def raised(rep: str | None = "ana") -> AlertRaised:
    return AlertRaised(
        kind="task_due", policy="tasks", subject_type="deal", subject_id="d1", deadline=T, rep=rep, task_id="t1"
    )


def sent(
    env: Envelope, owner: str | None = None, rules: NotifyRules = RULES, raised_alert: AlertRaised | None = None
) -> list[Delivery]:
    """What the notify worker sends for ``env`` once the subject's owner is ``owner`` and the wait is over."""
    notice = notice_of(env, raised_alert)
    assert notice is not None
    subject = Subject(owner=owner)
    to = address(notice, subject, rules.unassigned_wait, rules.unassigned_wait, rules.fallback)
    if to is None or to.recipient is None:
        return []
    return deliveries(rules, message(rules, notice, subject, to, T))


def test_an_alert_goes_to_the_subjects_owner_on_every_channel_they_have() -> None:
    env = envelope(raised("zed"), aggregate_type="alert", aggregate_id="a1")
    out = sent(env, owner="ana")
    assert sorted((d.channel, d.target) for d in out) == [
        ("email", "ana@example.com"),
        ("webhook", "https://hooks.example.com/ana"),
    ]
    assert "task t1 was due" in out[0].message.text and out[0].message.subject_id == "d1"
    assert [d.delivery_id for d in out] == [d.delivery_id for d in sent(env, owner="ana")]  # stable ids


def test_escalations_go_to_the_manager_and_qualified_leads_to_their_owner() -> None:
    escalated = envelope(AlertEscalated(manager="maria", rep="ana"), aggregate_type="alert", aggregate_id="a1")
    assert notice_of(escalated) is None  # its alert not folded: nothing to say about it
    assert [(d.recipient, d.channel) for d in sent(escalated, "ana", raised_alert=raised())] == [("maria", "email")]
    qualified = envelope(LeadQualified(score=80), aggregate_type="lead", aggregate_id="l1")
    assert {d.recipient for d in sent(qualified, owner="ana")} == {"ana"}
    assert sent(qualified, owner=None) == []  # no fallback in these rules


def test_unknown_recipients_and_other_events_ask_for_nothing() -> None:
    assert sent(envelope(raised(), aggregate_type="alert", aggregate_id="a1"), owner="zed") == []
    touch = TouchpointLogged(touchpoint_id="x", kind="call", direction="outbound")
    assert notice_of(envelope(touch, aggregate_type="lead", aggregate_id="l1")) is None
    no_smtp = NotifyRules(recipients={"ana": Recipient(email="ana@example.com")})
    assert sent(envelope(raised(), aggregate_type="alert", aggregate_id="a1"), "ana", no_smtp) == []


def test_quiet_hours_hold_messages_until_they_end_in_the_recipients_time_zone() -> None:
    night = QuietHours(start=dt.time(20, 0), end=dt.time(7, 0), timezone="Europe/Warsaw")
    # 21:30 in Warsaw (CET, UTC+1): held until 07:00 local the next morning.
    assert night.release(dt.datetime(2026, 11, 23, 20, 30, tzinfo=dt.UTC)) == dt.datetime(
        2026, 11, 24, 6, 0, tzinfo=dt.UTC
    )
    # 05:00 local: held until 07:00 the same morning.
    assert night.release(dt.datetime(2026, 11, 24, 4, 0, tzinfo=dt.UTC)) == dt.datetime(
        2026, 11, 24, 6, 0, tzinfo=dt.UTC
    )
    assert night.release(dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.UTC)) is None
    lunch = QuietHours(start=dt.time(12, 0), end=dt.time(13, 0))
    assert lunch.release(dt.datetime(2026, 11, 24, 12, 30, tzinfo=dt.UTC)) == dt.datetime(
        2026, 11, 24, 13, 0, tzinfo=dt.UTC
    )
    with pytest.raises(ValueError, match="time zone"):
        QuietHours(start=dt.time(1), end=dt.time(2), timezone="Mars/Base")


def test_retries_wait_twice_as_long_each_time_up_to_the_cap() -> None:
    rules = NotifyRules(backoff_initial_seconds=1, backoff_max_seconds=10)
    assert [rules.backoff(n).total_seconds() for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]


def test_the_signature_is_an_hmac_of_timestamp_and_body() -> None:
    assert signature("s3cret", 1700000000, b'{"a":1}') == (
        "t=1700000000,v1=" + hmac.new(b"s3cret", b'1700000000.{"a":1}', "sha256").hexdigest()
    )


def test_rules_load_from_toml_and_say_what_is_wrong() -> None:
    rules = sales_rules_from_toml(
        '[notify]\nmax_attempts = 3\n[notify.recipients.ana]\nwebhook = "https://x.example.com/h"\n'
        'quiet_hours = { start = 20:00:00, end = 07:00:00, timezone = "Europe/Warsaw" }\n'
    ).notify
    assert rules.max_attempts == 3 and rules.recipients["ana"].quiet_hours is not None
    with pytest.raises(ValueError, match="webhook"):
        sales_rules_from_toml('[notify.recipients.ana]\nwebhook = "ftp://x"\n')
