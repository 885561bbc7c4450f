"""A conversion cut off half-way (the log unreachable after the organisation and the contact landed) and retried
lands only what was missing, once, with the same ids; two conversions racing make one of each."""

from __future__ import annotations

import asyncio
import datetime as dt
from decimal import Decimal

import pytest

from events import commands as cmd
from events import conversion, handlers
from events.aggregates import Rejected
from events.ledger import Context, Ledger
from events.personal import Vault
from events.store import EventStore, StoreUnavailable
from events.types import ContactCreated, LeadCaptured, StageDefinition
from tests.builders import T0

pytestmark = pytest.mark.integration

NOW = T0 + dt.timedelta(hours=1)


def _ctx(key: str | None = "convert-1") -> Context:
    return Context(actor="user:ana", source="api", correlation_id="c", now=NOW, idempotency_key=key)


class NoneYet:
    """A people read model that holds nothing yet (a conversion then derives the organisation's id)."""

    async def organisation_by(self, name: str, domain: str | None) -> str | None:
        return None

    async def contact_by_email(self, email: str) -> str | None:
        return None


async def _qualified(ledger: Ledger, lead_id: str) -> None:
    lead = LeadCaptured(email=f"{lead_id}@acme.example", first_name="Ana", company="Acme")
    await handlers.capture_leads(ledger, _ctx(None), cmd.CaptureLeads(leads=[cmd.NewLead(lead_id, lead, T0)]))
    await handlers.handle(ledger, _ctx(None), cmd.QualifyLead(lead_id=lead_id))
    stages = [StageDefinition(id="new", name="New", probability=0.1)]
    await handlers.handle(ledger, _ctx(None), cmd.DefinePipeline(pipeline_id="sales", name="Sales", stages=stages))


CONVERT = cmd.ConvertLead(lead_id="l1", pipeline_id="sales", amount=Decimal(100), currency="EUR", occurred_at=NOW)


async def test_a_retry_after_a_failure_half_way_lands_the_rest_once(
    store: EventStore, vault: Vault, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = Ledger(store, vault)
    await _qualified(ledger, "l1")
    real_open = conversion.open_deal

    async def unreachable(*_: object) -> object:
        raise StoreUnavailable("the log went away")

    monkeypatch.setattr(conversion, "open_deal", unreachable)
    with pytest.raises(StoreUnavailable):
        await conversion.convert_lead(ledger, _ctx(), CONVERT, NoneYet())
    monkeypatch.setattr(conversion, "open_deal", real_open)

    done = await conversion.convert_lead(Ledger(store, vault), _ctx(), CONVERT, NoneYet())
    assert [a.type for a in done.events] == ["deal.opened.v1", "contact.linked_to_deal.v1", "lead.converted.v1"]
    again = await conversion.convert_lead(Ledger(store, vault), _ctx(), CONVERT, NoneYet())
    assert again.duplicate and (again.organisation_id, again.contact_id, again.deal_id) == (
        done.organisation_id,
        done.contact_id,
        done.deal_id,
    )
    assert len(await store.read("organisation", done.organisation_id)) == 1
    assert [s.envelope.type for s in await store.read("contact", done.contact_id)] == [
        "contact.created.v1",
        "contact.linked_to_deal.v1",
    ]
    # Sealed with the lead's key in the log, opened with it.
    logged = (await store.read("contact", done.contact_id))[0].envelope.data
    assert isinstance(logged, ContactCreated) and logged.email is None and logged.name is None
    assert logged.sealed is not None and logged.sealed.key_id == "l1"
    [created, _] = await vault.unsealed([s.envelope for s in await store.read("contact", done.contact_id)])
    assert isinstance(created.data, ContactCreated) and created.data.email == "l1@acme.example"
    assert created.data.lead_id == "l1"
    with pytest.raises(Rejected) as unkeyed:
        await conversion.convert_lead(Ledger(store, vault), _ctx(None), CONVERT, NoneYet())
    assert unkeyed.value.field == "lead_id"


async def test_two_conversions_at_once_make_one_organisation_contact_and_deal(store: EventStore, vault: Vault) -> None:
    await _qualified(Ledger(store, vault), "l1")
    outcomes = await asyncio.gather(
        conversion.convert_lead(Ledger(store, vault), _ctx("a"), CONVERT, NoneYet()),
        conversion.convert_lead(Ledger(store, vault), _ctx("b"), CONVERT, NoneYet()),
        return_exceptions=True,
    )
    won = [o for o in outcomes if isinstance(o, conversion.Conversion)]
    assert len(won) == 1, outcomes
    lost = [o for o in outcomes if not isinstance(o, conversion.Conversion)]
    assert all(isinstance(o, Rejected) and o.field == "lead_id" for o in lost), lost
    result = won[0]
    assert len(await store.read("organisation", result.organisation_id)) == 1
    assert len(await store.read("deal", result.deal_id)) == 1
    converted = [s for s in await store.read("lead", "l1") if s.envelope.type == "lead.converted.v1"]
    assert len(converted) == 1
