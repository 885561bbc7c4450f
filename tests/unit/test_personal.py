"""What the log may hold in clear about a person: the allow-list, and free text sealed with that person's key."""

from __future__ import annotations

import datetime as dt
import json
import os

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from events.codec import decode, encode
from events.envelope import RawPayload
from events.personal import CLEAR_FIELDS, ERASED, PERSONAL_FIELDS, TEXT_FIELDS, seal, seal_text, unseal, unseal_text
from events.types import (
    DealOpened,
    LeadCaptured,
    LeadDisqualified,
    LeadQualified,
    TaskCompleted,
    TaskScheduled,
    TouchpointLogged,
)
from tests.builders import envelope
from workers.intake import Rejection, validate

KEY = os.urandom(32)
MARK = "Zq7Wyrd"
FULL = LeadCaptured(
    email=f"{MARK}@{MARK}.example",
    phone="+48 731 925 846",
    first_name=MARK,
    last_name=MARK,
    full_name=MARK,
    company=MARK,
    job_title=MARK,
    country="PL",
    message=MARK,
    source_ref=MARK,
    form_id=MARK,
    campaign={"utm_campaign": MARK, MARK: "x"},
    answers={"budget": MARK, MARK: "y"},
)


def test_a_capture_keeps_only_the_allow_list_in_clear_and_opens_whole_with_its_key() -> None:
    assert CLEAR_FIELDS == ("country", "source", "utm_campaign")
    assert set(PERSONAL_FIELDS) | set(CLEAR_FIELDS) | {"sealed", "email_domain", "has_phone", "key_ref"} == set(
        LeadCaptured.__struct_fields__
    )
    raw = RawPayload(content_type="application/json", body=json.dumps({"email": FULL.email}))
    captured = msgspec.structs.replace(envelope(FULL, "lead", "lead-1"), raw=raw)
    sealed = seal(captured, KEY)
    text = encode(sealed)
    assert MARK.encode() not in text and b"731 925 846" not in text
    data = sealed.data
    assert isinstance(data, LeadCaptured)
    assert (data.country, data.has_phone, data.email_domain, data.campaign, data.answers) == ("PL", True, None, {}, {})
    opened = unseal(decode(text), KEY)
    assert opened.data == msgspec.structs.replace(FULL, has_phone=True) and opened.raw == raw


def test_the_marketing_source_and_campaign_stay_in_clear_and_cannot_hold_an_address() -> None:
    named = LeadCaptured(email=FULL.email, source="referral", utm_campaign="partner-week")
    data = seal(envelope(named, "lead", "lead-1"), KEY).data
    assert isinstance(data, LeadCaptured) and (data.source, data.utm_campaign, data.email) == (
        "referral",
        "partner-week",
        None,
    )
    erased = unseal(seal(envelope(named, "lead", "lead-1"), KEY), None).data
    assert isinstance(erased, LeadCaptured) and (erased.source, erased.utm_campaign) == ("referral", "partner-week")
    for personal in ("anna@example.com", "Anna Nowak", "call me", "+48600100200", "48600100200"):
        with pytest.raises(msgspec.ValidationError):
            msgspec.convert({"source": personal}, LeadCaptured)


def test_an_erased_capture_reads_erased_and_keeps_what_was_in_clear() -> None:
    sealed = seal(envelope(FULL, "lead", "lead-1"), KEY)
    erased = unseal(sealed, None).data
    assert isinstance(erased, LeadCaptured)
    assert {getattr(erased, f) for f in PERSONAL_FIELDS if f not in ("campaign", "answers")} == {ERASED}
    assert (erased.campaign, erased.answers, erased.country, erased.has_phone) == ({}, {}, "PL", True)
    # A key made after the erasure (a late redelivery) opens nothing.
    assert unseal(sealed, os.urandom(32)).data == erased


def test_captures_written_before_the_allow_list_still_decode_and_read_as_then() -> None:
    """Events only widen: a capture sealed the old way (contact fields only, the domain in clear) and a deal
    opened with its name in clear decode, and read as they were written."""
    old = envelope(LeadCaptured(company="Acme", sealed="c2VhbGVk", email_domain="acme.example", has_phone=False))
    assert decode(encode(old)) == old
    opened = envelope(DealOpened(name="Acme renewal", pipeline_id="p", stage="s", amount=1, currency="EUR"), "deal")
    assert decode(encode(opened)).data == opened.data
    assert unseal_text(opened, None) == opened  # nothing sealed, nothing erased


TEXT_EVENTS = [
    TouchpointLogged(touchpoint_id="t1", kind="note", direction="internal", outcome="o", subject="s", notes="n"),
    TaskScheduled(task_id="t1", title="t", due_at=dt.datetime(2026, 11, 24, tzinfo=dt.UTC)),
    TaskCompleted(task_id="t1", outcome="o"),
    DealOpened(name="n", pipeline_id="p", stage="s", amount=1, currency="EUR", lead_id="lead-1"),
    LeadQualified(reason="r", score=1.0),
    LeadDisqualified(reason="r"),
]


def _with(event: object, text: str) -> object:
    fields = TEXT_FIELDS[type(event)]
    return msgspec.structs.replace(event, **{f: f"{text}:{f}" for f in fields})  # type: ignore[type-var]


@given(st.sampled_from(TEXT_EVENTS), st.text(min_size=8, max_size=200).filter(lambda t: "\x00" not in t))
def test_free_text_about_a_person_is_sealed_with_their_key(event: object, text: str) -> None:
    marked = _with(event, text)
    aggregate = "deal" if isinstance(marked, DealOpened | TaskScheduled) else "lead"
    plain = envelope(marked, aggregate, "agg-1")  # type: ignore[arg-type]
    sealed = seal_text(plain, KEY, "lead-1")
    stored = encode(sealed)
    # Only the marked text: a bare word such as "pipeline" also names a field of the envelope.
    assert json.dumps(f"{text}:")[1:-1].encode() not in stored
    assert all(getattr(sealed.data, f) is None for f in TEXT_FIELDS[type(marked)])
    assert unseal_text(decode(stored), KEY) == plain
    erased = unseal_text(decode(stored), None).data
    assert {getattr(erased, f) for f in TEXT_FIELDS[type(marked)]} == {ERASED}


def test_a_sealed_box_moved_to_another_deal_opens_nothing() -> None:
    sealed = seal_text(envelope(_with(TEXT_EVENTS[0], "call notes"), "deal", "deal-1"), KEY, "lead-1")  # type: ignore[arg-type]
    moved = msgspec.structs.replace(sealed, aggregate_id="deal-2")
    assert unseal_text(moved, KEY).data.notes == ERASED  # type: ignore[union-attr]
    # Only the fields that held text read erased: a touch logged without a subject has none.
    no_subject = msgspec.structs.replace(TEXT_EVENTS[0], subject=None)
    opened = unseal_text(seal_text(envelope(no_subject, "lead", "lead-1"), KEY, "lead-1"), None).data
    assert (opened.subject, opened.notes) == (None, ERASED)  # type: ignore[union-attr]


def test_an_integration_cannot_pass_clear_fields_off_as_sealed() -> None:
    now = dt.datetime.now(dt.UTC)
    for field, value in (("sealed", "x"), ("key_ref", "batch_other"), ("email_domain", "a.example")):
        body = {
            "integration": "crm",
            "source_ref": "r1",
            "occurred_at": now.isoformat(),
            "lead": {"email": "ana@example.com", field: value},
        }
        try:
            validate(json.dumps(body).encode(), now)
        except Rejection as exc:
            assert f"$.lead.{field}" in exc.reason
        else:
            raise AssertionError(f"{field} was accepted")
