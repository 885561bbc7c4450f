"""The event language without servers: codec round trips, ids, subjects, validation on decode."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from events.codec import DecodeError, decode, encode
from events.envelope import Envelope
from events.ids import derived_id, is_valid_aggregate_id, uuid7
from events.subjects import PARTITIONS, Naming, partition_of
from events.types import EVENT_TYPES, DealWon, LeadCaptured, PipelineDefined, StageDefinition, type_name
from tests.builders import T0, deal_opened, envelope

KNOWN_META_LEAD = "7507556f-f6a0-5e8b-a562-8187b02a911d"
"""What derived_id("meta", "5545971704561545") gave when it was written with uuid.uuid5 (2026-11-22)."""

aware = st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2100, 1, 1), timezones=st.just(dt.UTC))
names = st.text(min_size=1, max_size=200).filter(lambda s: s.strip() == s and s != "")
amounts = st.decimals(min_value=0, max_value=Decimal("1e12"), places=2, allow_nan=False, allow_infinity=False)


@given(occurred=aware, name=names, amount=amounts, stage=st.from_regex(r"[a-z][a-z0-9_-]{0,20}", fullmatch=True))
@settings(max_examples=200, deadline=None)
def test_every_envelope_round_trips_through_the_codec(
    occurred: dt.datetime, name: str, amount: Decimal, stage: str
) -> None:
    opened = msgspec.structs.replace(deal_opened(stage), name=name, amount=amount)
    e = envelope(opened, occurred_at=occurred)
    assert decode(encode(e)) == e


def test_tags_are_versioned_and_unique() -> None:
    tags = [t.__struct_config__.tag for t in EVENT_TYPES]
    assert len(set(tags)) == len(tags)
    assert all(isinstance(t, str) and t.rsplit(".", 1)[1].startswith("v") for t in tags)
    assert type_name(LeadCaptured()) == "lead.captured.v1"


def test_decode_refuses_what_is_not_a_valid_event() -> None:
    good = msgspec.json.decode(encode(envelope(deal_opened())))
    for broken, needle in [
        ({**good, "data": {**good["data"], "type": "deal.exploded.v1"}}, "type"),
        ({**good, "data": {**good["data"], "currency": "euro"}}, "currency"),
        ({**good, "occurred_at": "2025-11-22T12:39:50"}, "occurred_at"),
        ({**good, "aggregate_id": "has.dot"}, "aggregate_id"),
        ({**good, "data": {**good["data"], "amount": "-1"}}, "amount"),
    ]:
        with pytest.raises(DecodeError) as caught:
            decode(msgspec.json.encode(broken))
        assert needle in caught.value.reason
    with pytest.raises(DecodeError):
        decode(b"\xff\xfe not json")


def test_amounts_survive_exactly_as_strings() -> None:
    won = DealWon(stage="s", amount=Decimal("12500.10"), currency="EUR")
    assert b'"amount":"12500.10"' in encode(envelope(won))


def test_uuid7_is_version_7_and_time_ordered() -> None:
    ids = [uuid7() for _ in range(200)]
    assert all(uuid.UUID(i).version == 7 and str(uuid.UUID(i)) == i for i in ids)
    assert all(uuid.UUID(i).variant == uuid.RFC_4122 for i in ids)
    first_ms = [int(uuid.UUID(i).hex[:12], 16) for i in ids]
    assert first_ms == sorted(first_ms)


@given(st.lists(st.text(), min_size=1, max_size=6))
def test_derived_ids_are_the_uuid5_of_the_length_prefixed_parts(parts: list[str]) -> None:
    """Ids already in logs were made with uuid.uuid5: the fast path must give the same text, forever."""
    name = "".join(f"{len(p)}:{p};" for p in parts)
    assert derived_id(*parts) == str(uuid.uuid5(uuid.UUID("5d1b6f0e-7c1a-4e8a-9a53-0d5b2f3c9e41"), name))


def test_a_known_derived_id_never_changes() -> None:
    assert derived_id("meta", "5545971704561545") == KNOWN_META_LEAD


def test_derived_ids_are_stable_and_subject_safe() -> None:
    assert derived_id("meta", "5545971704561545") == derived_id("meta", "5545971704561545")
    assert derived_id("meta", "1") != derived_id("typeform", "1")
    assert derived_id("a", "b\x1fc") != derived_id("a\x1fb", "c")
    assert is_valid_aggregate_id(derived_id("meta", "x"))
    assert not is_valid_aggregate_id("a.b") and not is_valid_aggregate_id("a*") and not is_valid_aggregate_id("")


@given(st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True))
def test_subjects_put_one_aggregate_on_one_subject_in_a_stable_partition(aggregate_id: str) -> None:
    naming = Naming("dealstream")
    subject = naming.aggregate_subject("deal", aggregate_id)
    assert subject == f"dealstream.evt.deal.{partition_of(aggregate_id)}.{aggregate_id}"
    assert 0 <= partition_of(aggregate_id) < PARTITIONS


def test_prefix_must_be_a_subject_token() -> None:
    with pytest.raises(ValueError, match="prefix"):
        Naming("Deal.Stream")


def test_pipelines_need_stages() -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"type": "pipeline.defined.v1", "name": "x", "stages": []}, PipelineDefined)
    ok = PipelineDefined(name="x", stages=[StageDefinition(id="a", name="A", probability=0.5)])
    assert decode(encode(envelope(ok, aggregate_type="pipeline"))).data == ok


def test_business_time_and_record_time_both_travel() -> None:
    e = envelope(deal_opened())
    assert isinstance(e, Envelope) and e.occurred_at == T0 and e.recorded_at > e.occurred_at


def test_a_capture_takes_its_marketing_ids_from_its_campaign_when_it_names_none() -> None:
    from events.types import with_marketing_ids
    from workers.intake import InboxLead, to_command

    tagged = LeadCaptured(campaign={"utm_source": "Newsletter", "utm_campaign": "q4-promo"})
    assert (with_marketing_ids(tagged).source, with_marketing_ids(tagged).utm_campaign) == ("newsletter", "q4-promo")
    named = LeadCaptured(source="Referral", campaign={"utm_source": "google"})
    assert with_marketing_ids(named).source == "referral"
    # A tracking value that is no marketing id (it could name a person) is not lifted out of the sealed campaign.
    assert with_marketing_ids(LeadCaptured(campaign={"utm_source": "ana@example.com"})).source is None
    assert with_marketing_ids(LeadCaptured()) == LeadCaptured()
    # Leads published on the NATS inbox get the same.
    inbox = InboxLead(integration="crm", source_ref="c-1", occurred_at=T0, lead=tagged)
    [lead] = to_command(inbox, b"{}").leads
    assert (lead.lead.source, lead.lead.utm_campaign) == ("newsletter", "q4-promo")
