"""The lead records fold: profile, status and activity; duplicates flagged by keyed contact hashes and released when
a lead closes; corrections followed (and re-scored); erasure scrubs every clear value; folding is idempotent."""

from __future__ import annotations

import datetime as dt

from events.envelope import StoredEvent
from events.types import (
    Event,
    LeadAssigned,
    LeadCaptured,
    LeadCorrected,
    LeadDisqualified,
    LeadErased,
    LeadMerged,
    TaskCompleted,
    TaskScheduled,
    TouchpointLogged,
)
from projections.lead_records import LeadTable, contact_keys, fold
from projections.scoring import rules_from_toml
from tests.builders import T0, envelope

RULES = rules_from_toml("""
[scoring]
version = 1
threshold = 100
half_life_days = 14
[[scoring.fit]]
name = "leader"
field = "job_title"
pattern = "head"
points = 20
""")
KEY = b"build-key"
MARTA = LeadCaptured(
    email="Marta@Kowalski.pl", phone="+48 600 100 200", first_name="Marta", last_name="Kowalska", job_title="Head"
)


def log(*items: tuple[str, Event, dt.datetime]) -> list[StoredEvent]:
    return [
        StoredEvent(sequence=seq, subject=f"t.evt.lead.0.{lead}", envelope=envelope(data, "lead", lead, at))
        for seq, (lead, data, at) in enumerate(items, start=1)
    ]


def folded(events: list[StoredEvent]) -> LeadTable:
    return fold(events, RULES, LeadTable(key=KEY))


def test_a_record_holds_the_profile_owner_score_and_activity() -> None:
    day = dt.timedelta(days=1)
    table = folded(
        log(
            ("m", MARTA, T0),
            ("m", LeadAssigned(owner="ana"), T0),
            ("m", TouchpointLogged(touchpoint_id="c", kind="call", direction="outbound"), T0 + day),
            ("m", TaskScheduled(task_id="t1", title="x", due_at=T0 + 2 * day), T0 + day),
            ("m", TaskScheduled(task_id="t2", title="y", due_at=T0 + 2 * day), T0 + day),
            ("m", TaskCompleted(task_id="t1"), T0 + day),
        )
    )
    r = table.leads["m"]
    assert (r.name, r.scored.owner, r.status, r.scored.score, r.channel) == ("Marta Kowalska", "ana", "open", 20, "api")
    assert (r.captured_at, r.last_activity_at, r.open_tasks) == (T0, T0 + day, ("t2",))
    assert r.search_text == "marta kowalska marta@kowalski.pl +48 600 100 200 48600100200"


def test_a_lead_sharing_a_live_leads_email_or_phone_is_its_duplicate_until_that_lead_closes() -> None:
    events = log(
        ("a", MARTA, T0),
        ("b", LeadCaptured(email=" marta@KOWALSKI.pl"), T0),
        ("c", LeadCaptured(phone="48-600-100-200"), T0),
        ("d", LeadCaptured(email="someone@else.pl", phone="(sealed)"), T0),
        ("a", LeadDisqualified(), T0),
        ("e", LeadCaptured(email="marta@kowalski.pl"), T0),
    )
    table = folded(events)
    assert [table.leads[x].duplicate_of for x in "abcde"] == [None, "a", "a", None, None]
    # The disqualified lead let its hashes go; the next one to bring them holds them.
    assert table.contacts[contact_keys("marta@kowalski.pl", None, KEY)[0]] == "e"
    assert table.leads["a"].contact_keys == ()
    # Keyed: another build's key makes other hashes.
    assert contact_keys("marta@kowalski.pl", None, b"other") != contact_keys("marta@kowalski.pl", None, KEY)


def test_a_correction_changes_the_profile_and_the_score_and_re_keys_the_lead() -> None:
    fix = LeadCorrected(fields=("job_title", "email", "first_name"), email="marta@nowak.pl", first_name="Marta Maria")
    table = folded(log(("a", MARTA, T0), ("a", fix, T0), ("b", LeadCaptured(email="marta@nowak.pl"), T0)))
    a = table.leads["a"]
    assert (a.scored.profile.job_title, a.scored.profile.email, a.name) == (
        None,
        "marta@nowak.pl",
        "Marta Maria Kowalska",
    )
    assert a.scored.score == 0 and a.corrected_fields == ("email", "first_name", "job_title")
    assert table.leads["b"].duplicate_of == "a"


def test_a_merged_lead_reads_merged_and_an_erased_one_keeps_no_clear_value() -> None:
    table = folded(
        log(
            ("a", MARTA, T0),
            ("b", MARTA, T0),
            ("b", LeadMerged(into="a"), T0),
            ("a", LeadErased(), T0),
        )
    )
    assert (table.leads["b"].status, table.leads["b"].merged_into) == ("merged", "a")
    a = table.leads["a"]
    assert a.status == "erased" and a.name is None and a.search_text == "" and a.contact_keys == ()
    assert a.scored.profile.email is None and table.contacts == {}


def test_folding_the_same_events_again_changes_nothing() -> None:
    events = log(("a", MARTA, T0), ("b", MARTA, T0), ("a", LeadAssigned(owner="bo"), T0))
    once = folded(events)
    assert fold(events, RULES, once.copy()) == once
