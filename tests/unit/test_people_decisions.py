"""Organisations and contacts: the pure decisions, the conversion's pieces and the people fold."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import msgspec
import pytest

from events import people
from events.aggregates import DealState, LeadState, Rejected
from events.conversion import contact_key, organisation_key, profile_of
from events.envelope import Envelope, StoredEvent
from events.types import (
    CONTACT_ROLES,
    ContactCreated,
    ContactErased,
    ContactLinkedToDeal,
    ContactRoleChanged,
    ContactUnlinkedFromDeal,
    Event,
    LeadCaptured,
    LeadConverted,
    LeadDetailsFetched,
    OrganisationCreated,
)
from projections.people import PeopleState, apply
from projections.people_queries import late_stages
from projections.people_rules import PeopleRules, people_rules_from_toml
from services.config import api_settings
from workers.settings import Settings as ProcessSettings

AT = dt.datetime(2026, 11, 2, 9, tzinfo=dt.UTC)
DONE = LeadConverted(organisation_id="o", contact_id="c", deal_id="d")


def _env(aggregate_type: str, aggregate_id: str, data: Event) -> Envelope:
    return msgspec.convert(
        {
            "event_id": "e",
            "aggregate_type": aggregate_type,
            "aggregate_id": aggregate_id,
            "occurred_at": AT,
            "recorded_at": AT,
            "actor": "t",
            "source": "api",
            "correlation_id": "c",
            "data": msgspec.to_builtins(data),
        },
        Envelope,
    )


def _contact(*events: Event) -> people.ContactState:
    return people.fold_contact(_env("contact", "c1", e) for e in events)


def test_a_link_gives_a_role_once_and_a_second_is_a_role_change() -> None:
    state = _contact(ContactCreated(name="Ana"))
    deal = DealState(exists=True)
    assert people.link_to_deal(state, deal, "d1", "champion") == ContactLinkedToDeal(deal_id="d1", role="champion")
    linked = _contact(ContactCreated(name="Ana"), ContactLinkedToDeal(deal_id="d1", role="champion"))
    with pytest.raises(Rejected) as exc:
        people.link_to_deal(linked, deal, "d1", "user")
    assert exc.value.status == 409
    changed = people.change_role(linked, "d1", "decision_maker")
    assert changed == ContactRoleChanged(deal_id="d1", from_role="champion", to_role="decision_maker")
    with pytest.raises(Rejected) as same:
        people.change_role(linked, "d1", "champion")
    assert same.value.field == "role"


def test_missing_contacts_and_deals_are_404() -> None:
    with pytest.raises(Rejected) as no_contact:
        people.link_to_deal(people.ContactState(), DealState(exists=True), "d1", "user")
    assert (no_contact.value.field, no_contact.value.status) == ("contact_id", 404)
    with pytest.raises(Rejected) as no_deal:
        people.link_to_deal(_contact(ContactCreated(name="Ana")), DealState(), "d1", "user")
    assert (no_deal.value.field, no_deal.value.status) == ("deal_id", 404)
    with pytest.raises(Rejected) as not_linked:
        people.unlink_from_deal(_contact(ContactCreated(name="Ana")), "d1")
    assert not_linked.value.status == 404


def test_an_unlinked_contact_has_no_role_there_and_may_be_linked_again() -> None:
    state = _contact(
        ContactCreated(name="Ana"),
        ContactLinkedToDeal(deal_id="d1", role="blocker"),
        ContactUnlinkedFromDeal(deal_id="d1", role="blocker"),
    )
    assert state.roles == {}
    assert people.link_to_deal(state, DealState(exists=True), "d1", "user").role == "user"


def test_a_contact_from_a_lead_is_erased_with_the_lead() -> None:
    with pytest.raises(Rejected) as exc:
        people.erase_contact(_contact(ContactCreated(name="Ana", lead_id="l1")), ContactErased())
    assert "l1" in exc.value.reason
    own = _contact(ContactCreated(name="Ana"))
    assert people.erase_contact(own, ContactErased()) == ContactErased()
    with pytest.raises(Rejected):
        people.erase_contact(_contact(ContactCreated(name="Ana"), ContactErased()), ContactErased())


@pytest.mark.parametrize(
    ("lead", "field"),
    [
        (LeadState(), "lead_id"),
        (LeadState(exists=True), "status"),
        (LeadState(exists=True, status="qualified", erased=True), "lead_id"),
        (LeadState(exists=True, status="disqualified"), "status"),
        (LeadState(exists=True, status="qualified", converted=DONE), "lead_id"),
    ],
)
def test_only_a_qualified_lead_not_erased_nor_converted_converts(lead: LeadState, field: str) -> None:
    with pytest.raises(Rejected) as exc:
        people.may_convert(lead)
    assert exc.value.field == field
    people.may_convert(LeadState(exists=True, status="qualified"))


def test_the_profile_is_the_capture_with_fetched_fields_where_it_had_none() -> None:
    history = [
        _env("lead", "l1", LeadCaptured(first_name="Ana", last_name="Nowak", country="PL")),
        _env("lead", "l1", LeadDetailsFetched(provider="meta", email="ana@acme.example", company="Acme")),
    ]
    profile = profile_of(history)
    assert (profile.name, profile.email, profile.company, profile.country) == (
        "Ana Nowak",
        "ana@acme.example",
        "Acme",
        "PL",
    )


def test_conversion_ids_follow_the_company_and_the_lead_never_the_email() -> None:
    assert organisation_key("ACME", None) == organisation_key("acme", None)
    assert organisation_key("Acme", "acme.example") == organisation_key("Acme Ltd", "acme.example")
    assert contact_key("l1") == contact_key("l1") != contact_key("l2")


def test_late_stages_are_the_last_half_or_the_configured_ones() -> None:
    assert late_stages(["a", "b", "c", "d"]) == {"c", "d"}
    assert late_stages(["a", "b", "c", "d", "e"]) == {"c", "d", "e"}
    assert late_stages(["a"]) == {"a"}
    assert late_stages(["a", "b", "c"], ["b"]) == {"b"}
    assert set(CONTACT_ROLES) == {"decision_maker", "champion", "influencer", "user", "blocker"}


def _stored(sequence: int, envelope: Envelope) -> StoredEvent:
    return StoredEvent(sequence=sequence, subject="s", envelope=envelope)


def test_the_fold_is_idempotent_per_sequence_and_scrubs_an_erased_contact() -> None:
    events = [
        _stored(1, _env("organisation", "o1", OrganisationCreated(name="Acme", domain="acme.example"))),
        _stored(2, _env("contact", "c1", ContactCreated(name="Ana", email="ana@acme.example", organisation_id="o1"))),
        _stored(3, _env("contact", "c1", ContactLinkedToDeal(deal_id="d1", role="champion"))),
        _stored(4, _env("contact", "c1", ContactRoleChanged(deal_id="d1", from_role="champion", to_role="user"))),
        _stored(5, _env("lead", "l1", LeadConverted(organisation_id="o1", contact_id="c1", deal_id="d1"))),
    ]
    state = PeopleState()
    for event in events + events:  # a redelivered batch changes nothing
        apply(state, event)
    assert state.contacts["c1"].email == "ana@acme.example" and state.contacts["c1"].version == 2
    assert state.links[("d1", "c1")].role == "user" and state.links[("d1", "c1")].active
    assert state.converted == {"d1": "o1"}
    apply(state, _stored(6, _env("contact", "c1", ContactErased())))
    erased = state.contacts["c1"]
    assert (erased.name, erased.email, erased.erased) == ("[erased]", None, True)
    # Opened without its key (a rebuild after the erasure): the marker, never a half-filled row.
    apply(state, _stored(7, _env("contact", "c2", ContactCreated(name="[erased]"))))
    assert state.contacts["c2"].erased


def test_the_people_rules_are_the_rules_files_people_section(tmp_path: Path) -> None:
    text = '[sla]\nx = 1\n[people]\nlate_stages = { sales = ["proposal", "negotiation"] }\n'
    assert people_rules_from_toml(text).late_stages == {"sales": ["proposal", "negotiation"]}
    assert people_rules_from_toml("") == people_rules_from_toml("[sla]\n") == PeopleRules()
    with pytest.raises(ValueError, match="people rules"):
        people_rules_from_toml("[people]\nlate = 1\n")
    rules = tmp_path / "sales.toml"
    rules.write_text(text.replace("[sla]\nx = 1\n", ""))
    settings = api_settings(ProcessSettings(rules_path=str(rules)))
    assert settings.people.late_stages["sales"] == ["proposal", "negotiation"]
