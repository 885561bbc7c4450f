"""Erasing a lead's personal data from an immutable log: nothing readable is left anywhere, the chain holds,
and the metrics stay."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest
import structlog
import structlog.testing
from litestar import Litestar
from litestar.testing import AsyncTestClient
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType

from devstack.servers import NatsServer
from events.audit import audit_stream, scan
from events.config import NatsSettings, connect
from events.personal import Vault
from events.streams import StreamSettings, ensure_streams
from events.subjects import Naming
from events.types import LeadCaptured
from services.config import Settings
from tests.builders import envelope
from tests.conftest import ADMIN_KEY, api_config, wait_healthy
from tests.waiting import eventually
from workers.registry import serve_worker

pytestmark = pytest.mark.integration

Client = AsyncTestClient[Litestar]
LEAD = {
    "email": "jan.kowalski@firma.pl",
    "first_name": "Jan",
    "last_name": "Kowalski",
    "phone": "+48 600 100 200",
    "message": "Proszę o wycenę",
    "job_title": "Head of Sales",
    "occurred_at": "2026-11-02T10:00:00+01:00",
}


@pytest.fixture
async def client(nats_settings: NatsSettings, pg_dsn: str) -> AsyncIterator[Client]:
    from services.api.app import create_app

    stop = asyncio.Event()
    workers = [
        asyncio.create_task(serve_worker(name, "0/1", nats_settings, pg_dsn, stop=stop, instance=""))
        for name in ("velocity", "scores")
    ]
    app = create_app(Settings(nats=nats_settings, config=api_config(), database_url=pg_dsn))
    try:
        async with AsyncTestClient(app, raise_server_exceptions=False) as c:
            c.headers["Authorization"] = f"Bearer {ADMIN_KEY}"
            await wait_healthy(c)
            yield c
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*workers), 30)


async def test_an_erased_lead_shows_no_personal_data_anywhere_while_its_metrics_stay(
    client: Client, nats_conn: tuple[Any, JetStreamContext], naming: Naming
) -> None:
    _, js = nats_conn
    r = await client.post("/v1/leads", json=LEAD)
    assert r.status_code == 202, r.text
    lead_id = r.json()["aggregate_id"]
    [captured] = (await client.get(f"/v1/leads/{lead_id}/events", params={"include_raw": "true"})).json()["events"]
    assert captured["data"]["last_name"] == "Kowalski" and "Kowalski" in captured["raw"]["body"]
    log = b"".join([m.data async for m in scan(js, naming.events_stream)])
    assert b"Kowalski" not in log and b"jan.kowalski" not in log and b"600 100 200" not in log

    params = {"from": "2026-11-01T00:00:00+01:00", "to": "2026-12-01T00:00:00+01:00", "group_by": "source"}

    async def counted() -> bool:
        r = await client.get("/v1/metrics/velocity", params=params)
        score = await client.get(f"/v1/leads/{lead_id}/score")
        return r.status_code == 200 and bool(r.json()["groups"]) and score.status_code == 200

    await eventually(counted)
    before = (await client.get("/v1/metrics/velocity", params=params)).json()
    score_before = (await client.get(f"/v1/leads/{lead_id}/score")).json()

    r = await client.post(f"/v1/leads/{lead_id}/erase", json={"reason": "data subject request 2026-11-22"})
    assert r.status_code == 202, r.text
    assert (await client.post(f"/v1/leads/{lead_id}/erase", json={})).status_code == 409
    history = (await client.get(f"/v1/leads/{lead_id}/events", params={"include_raw": "true"})).json()["events"]
    assert [e["type"] for e in history] == ["lead.captured.v1", "lead.erased.v1"]
    data = history[0]["data"]
    assert {data[f] for f in ("email", "first_name", "last_name", "phone", "message")} == {"[erased]"}
    assert history[0]["raw"]["body"] == "[erased]" and "Kowalski" not in repr(history)

    async def marked() -> bool:
        return bool((await client.get(f"/v1/leads/{lead_id}/score")).json()["erased"])

    await eventually(marked)
    score_after = (await client.get(f"/v1/leads/{lead_id}/score")).json()
    assert score_after["fit"] == score_before["fit"]  # scored on what stays: the title, the e-mail's domain
    assert (await client.get("/v1/metrics/velocity", params=params)).json()["groups"] == before["groups"]
    report = await audit_stream(js, naming.events_stream)
    assert report.intact and report.events == 2


@dataclass
class OwnNats:
    """A nats-server of the test's own, whose files the test may read, with the streams and a vault."""

    server: NatsServer
    js: JetStreamContext
    vault: Vault
    naming: Naming


@pytest.fixture
async def own(tmp_path: Path) -> AsyncIterator[OwnNats]:
    server = NatsServer(tmp_path / "nats", name="erasure-test").start()
    try:
        settings = NatsSettings(servers=(server.url,), naming=Naming(prefix="erase"), streams=StreamSettings())
        nc, js = await connect(settings, "test")
        try:
            await ensure_streams(js, settings.naming, settings.streams)
            yield OwnNats(server, js, Vault(js, settings.naming), settings.naming)
        finally:
            await nc.close()
    finally:
        server.stop()


def _stored_bytes(store_dir: Path) -> bytes:
    return b"".join(p.read_bytes() for p in store_dir.rglob("*") if p.is_file())


async def test_erasure_overwrites_the_key_in_the_servers_files(own: OwnNats) -> None:
    """Crypto-shredding is only as good as the key's destruction: no copy of it stays in nats-server's files."""
    server, vault = own.server, own.vault
    kept, erased = await vault.key("lead-kept", create=True), await vault.key("lead-erased", create=True)
    assert kept is not None and erased is not None
    kept_text, erased_text = base64.b64encode(kept), base64.b64encode(erased)

    async def written() -> bool:
        stored = _stored_bytes(server.store_dir)
        return kept_text in stored and erased_text in stored

    await eventually(written)
    assert await vault.erase("lead-erased") is True
    assert await vault.key("lead-erased") is None and await vault.key("lead-kept") == kept
    assert await vault.erase("lead-erased") is False

    async def overwritten() -> bool:
        return erased_text not in _stored_bytes(server.store_dir)

    await eventually(overwritten)
    assert kept_text in _stored_bytes(server.store_dir)


async def test_a_bucket_made_by_an_older_version_still_erases(
    nats_conn: tuple[Any, JetStreamContext], nats_settings: NatsSettings
) -> None:
    """Stock KV buckets deny deletes and the server never lifts that: streams still come up, erasure still
    purges the key (reads give nothing), and both say in the log that the key's bytes were not overwritten."""
    _, js = nats_conn
    naming = Naming(prefix=f"{nats_settings.naming.prefix}old")
    await js.create_key_value(KeyValueConfig(bucket=naming.lead_keys_bucket, history=1, storage=StorageType.FILE))
    vault = Vault(js, naming)
    assert await vault.key("lead-1", create=True) is not None
    with structlog.testing.capture_logs() as logs:
        configs = await ensure_streams(js, naming, StreamSettings())
        assert await vault.erase("lead-1") is True
    assert await vault.key("lead-1") is None
    assert next(c for c in configs if c.name == naming.lead_keys_stream).deny_delete is True
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == [
        "streams.lead_keys_deny_delete",
        "vault.key_not_overwritten",
    ]


async def test_erasing_one_lead_of_a_batch_overwrites_its_key_and_keeps_the_others(own: OwnNats) -> None:
    """Leads captured together share one key entry (one write for all their keys). Erasing one rewrites the
    entry without it and overwrites the old revision on disk; the others still open; the last erasure purges."""
    server, vault = own.server, own.vault
    leads = {f"lead-{n}": LeadCaptured(email=f"person{n}@example.com") for n in range(3)}
    sealed = await vault.sealed_together([envelope(data, "lead", lead_id) for lead_id, data in leads.items()])
    refs = {e.data.key_ref for e in sealed if isinstance(e.data, LeadCaptured)}
    assert len(refs) == 1 and None not in refs
    [ref] = refs
    assert all(isinstance(e.data, LeadCaptured) and e.data.email is None for e in sealed)
    keys = await vault.shared_keys(ref)
    assert sorted(keys) == sorted(leads)
    texts = {lead_id: base64.b64encode(key) for lead_id, key in keys.items()}

    async def on_disk(lead_id: str) -> bool:
        return texts[lead_id] in _stored_bytes(server.store_dir)

    await eventually(lambda: on_disk("lead-1"))
    assert await vault.erase("lead-1", ref) is True

    async def gone() -> bool:
        return not await on_disk("lead-1")

    await eventually(gone)
    opened = await vault.unsealed(sealed)
    emails = [e.data.email for e in opened if isinstance(e.data, LeadCaptured)]
    assert emails == ["person0@example.com", "[erased]", "person2@example.com"]
    assert await vault.erase("lead-1", ref) is False
    assert await vault.erase("lead-0", ref) is True and await vault.erase("lead-2", ref) is True
    assert await vault.shared_keys(ref) == {}


async def test_an_erasure_cut_off_between_its_two_steps_is_finished_by_its_retry(own: OwnNats) -> None:
    """The new revision of a shared entry lands before the old one is overwritten. If the process dies in
    between, the old revision still holds the key: the retried erasure finds and overwrites it."""
    server, js, vault = own.server, own.js, own.vault
    sealed = await vault.sealed_together(
        [envelope(LeadCaptured(email=f"p{n}@example.com"), "lead", f"lead-{n}") for n in range(2)]
    )
    ref = sealed[0].data.key_ref  # type: ignore[union-attr]
    assert ref is not None
    keys = await vault.shared_keys(ref)
    erased_text = base64.b64encode(keys["lead-0"])
    # The first step only, as a process killed right after it would have left things.
    kv = await js.key_value(own.naming.lead_keys_bucket)
    latest = await kv.get(ref)
    await kv.update(ref, msgspec.json.encode({"lead-1": keys["lead-1"]}), last=latest.revision)
    assert erased_text in _stored_bytes(server.store_dir)

    assert await vault.erase("lead-0", ref) is False  # already gone from the entry's latest revision

    async def overwritten() -> bool:
        return erased_text not in _stored_bytes(server.store_dir)

    await eventually(overwritten)
    assert await vault.shared_keys(ref) == {"lead-1": keys["lead-1"]}


async def test_a_lead_captured_in_a_batch_is_erased_alone(client: Client) -> None:
    batch = [{**LEAD, "email": f"person{n}@example.com", "source_ref": f"batch-erase-{n}"} for n in range(3)]
    r = await client.post("/v1/leads/batch", json={"leads": batch})
    assert r.status_code == 202, r.text
    lead_ids = [a["aggregate_id"] for a in r.json()]
    r = await client.post(f"/v1/leads/{lead_ids[1]}/erase", json={"reason": "data subject request"})
    assert r.status_code == 202, r.text
    emails = []
    for lead_id in lead_ids:
        [captured, *_] = (await client.get(f"/v1/leads/{lead_id}/events")).json()["events"]
        emails.append(captured["data"]["email"])
    assert emails == ["person0@example.com", "[erased]", "person2@example.com"]


async def test_no_new_text_about_an_erased_lead_is_kept(client: Client) -> None:
    """Text about an erased person would have no key to be sealed with: a note on the lead is refused (409 naming
    the field, nothing appended), a touch without text is still logged. A deal opened from the lead afterwards
    seals its name with a key of its own (the deal's business goes on)."""
    r = await client.post("/v1/leads", json={**LEAD, "source_ref": "erased-then-noted"})
    lead_id = r.json()["aggregate_id"]
    assert (await client.post(f"/v1/leads/{lead_id}/erase", json={})).status_code == 202
    touch = {"kind": "call", "direction": "outbound"}
    r = await client.post(f"/v1/leads/{lead_id}/touchpoints", json={**touch, "notes": "Jan called back"})
    assert r.status_code == 409 and r.json()["errors"][0]["field"] == "notes", r.text
    assert (await client.post(f"/v1/leads/{lead_id}/touchpoints", json=touch)).status_code == 202
    history = (await client.get(f"/v1/leads/{lead_id}/events")).json()["events"]
    assert [e["type"] for e in history] == ["lead.captured.v1", "lead.erased.v1", "touchpoint.logged.v1"]
    assert "Jan called back" not in repr(history)
    pipeline = {"name": "Sales", "stages": [{"id": "new", "name": "New", "probability": 0.1}]}
    assert (await client.put("/v1/pipelines/sales", json=pipeline)).status_code == 202
    deal = {"pipeline_id": "sales", "name": "Renewal", "amount": "10", "currency": "EUR", "lead_id": lead_id}
    r = await client.post("/v1/deals", json=deal)
    assert r.status_code == 202, r.text
    [opened] = (await client.get(f"/v1/deals/{r.json()['aggregate_id']}/events")).json()["events"]
    assert opened["data"]["name"] == "Renewal"


async def test_a_workers_cached_key_is_forgotten_when_the_erasure_reaches_it(own: OwnNats) -> None:
    """A projection engine keeps keys opened across batches and drops a lead's key when it folds the lead's
    erasure; a reader without a cache (the API) sees an erased key at once."""
    cached = Vault(own.js, own.naming, cached_keys=10)
    sealed = await cached.sealed(envelope(LeadCaptured(email="jan@example.com"), "lead", "lead-c"))
    assert [e.data.email for e in await cached.unsealed([sealed])] == ["jan@example.com"]  # type: ignore[union-attr]
    assert await own.vault.erase("lead-c") is True
    assert [e.data.email for e in await own.vault.unsealed([sealed])] == ["[erased]"]  # type: ignore[union-attr]
    assert [e.data.email for e in await cached.unsealed([sealed])] == ["jan@example.com"]  # type: ignore[union-attr]
    cached.forget("lead-c")
    assert [e.data.email for e in await cached.unsealed([sealed])] == ["[erased]"]  # type: ignore[union-attr]
