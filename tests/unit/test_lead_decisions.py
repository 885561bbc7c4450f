"""Corrections and merges decided on the leads' histories: only live leads, never a lead into itself."""

from __future__ import annotations

import pytest

from events.aggregates import LeadState, Rejected, correct_lead, fold_lead, lead_profile, merge_leads
from events.types import Event, LeadCaptured, LeadCorrected, LeadErased, LeadMerged
from tests.builders import envelope

FIX = LeadCorrected(fields=("company",), company="Acme")


def lead(*events: Event) -> LeadState:
    return fold_lead(envelope(e, "lead", "l1") for e in (LeadCaptured(email="a@b.co"), *events))


def refused(call: object) -> tuple[str, int]:
    with pytest.raises(Rejected) as caught:
        assert callable(call)
        call()
    return caught.value.field, caught.value.status


def test_a_live_lead_is_corrected_and_an_unknown_erased_or_merged_one_is_not() -> None:
    assert correct_lead(lead(), FIX) is FIX
    assert refused(lambda: correct_lead(LeadState(), FIX)) == ("lead_id", 404)
    assert refused(lambda: correct_lead(lead(LeadErased()), FIX)) == ("lead_id", 409)
    assert refused(lambda: correct_lead(lead(LeadMerged(into="l2")), FIX)) == ("lead_id", 409)


def test_a_merge_joins_two_distinct_live_leads() -> None:
    assert merge_leads(lead(), lead(), "l1", "l2") == LeadMerged(into="l2")
    assert refused(lambda: merge_leads(lead(), lead(), "l1", "l1")) == ("into", 422)
    assert refused(lambda: merge_leads(lead(), LeadState(), "l1", "l2")) == ("into", 404)
    assert refused(lambda: merge_leads(lead(), lead(LeadErased()), "l1", "l2")) == ("into", 409)
    assert refused(lambda: merge_leads(lead(LeadMerged(into="l3")), lead(), "l1", "l2")) == ("lead_id", 409)


def test_a_correction_lists_only_the_fields_that_change_and_one_changing_nothing_is_refused() -> None:
    current = {"company": "Acme", "job_title": "CEO", "email": "a@b.co"}
    fix = LeadCorrected(fields=("company", "job_title"), company="Acme", job_title="CTO")
    assert correct_lead(lead(), fix, current) == LeadCorrected(fields=("job_title",), job_title="CTO")
    assert refused(lambda: correct_lead(lead(), FIX, current)) == ("body", 422)
    assert lead_profile([envelope(LeadCaptured(company="X", country="PL"), "lead", "l1")])["company"] == "X"
