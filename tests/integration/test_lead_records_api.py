"""Lead records against real servers: captured leads are read back one by one and as a list with filters, search,
sorts and keyset pages; a correction is sealed in the log and followed by the record; a capture repeating a live
lead's e-mail is flagged its duplicate, and merging it keeps both histories; a rebuild equals the live records."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from nats.js import JetStreamContext

from events.config import NatsSettings
from events.store import EventStore
from events.subjects import Naming
from events.types import LeadCorrected
from projections.lead_records_store import LeadRecordsProjection
from projections.scoring import rules_from_toml
from services.config import Settings
from tests.conftest import ADMIN_KEY, api_config, wait_healthy
from tests.projection_fixtures import FAST, wait_caught_up
from workers.engine import ProjectionEngine
from workers.rebuild import verify

pytestmark = pytest.mark.integration

Client = AsyncTestClient[Litestar]
RULES = rules_from_toml("""
[scoring]
version = 1
threshold = 100
half_life_days = 14
[[scoring.fit]]
name = "leader"
field = "job_title"
pattern = "head|director"
points = 20
""")
T0 = dt.datetime(2026, 11, 20, 9, 0, tzinfo=dt.UTC)
LEADS: list[dict[str, Any]] = [
    {
        "first_name": "Marta",
        "last_name": "Kowalska",
        "email": "marta@kowalski.pl",
        "company": "Kowalski i Synowie",
        "phone": "+48 600 100 200",
        "job_title": "Head of Sales",
        "country": "PL",
        "source": "referral",
    },
    {"name": "Chen Wei", "email": "chen@dragon.cn", "company": "Dragon Trade", "job_title": "Engineer"},
    {"name": "Ana Lima", "email": "ana@lima.example", "company": "Lima Foods", "job_title": "Director"},
]


@contextlib.asynccontextmanager
async def records(nats_settings: NatsSettings, dsn: str, js: JetStreamContext, naming: Naming) -> AsyncIterator[Any]:
    """The lead records worker, running until the block ends; the yielded function waits for it to catch up."""
    projection = LeadRecordsProjection(RULES)
    stop = asyncio.Event()
    task = asyncio.create_task(ProjectionEngine(projection, nats_settings, dsn, settings=FAST).run(stop))

    async def caught_up() -> None:
        await wait_caught_up(js, dsn, naming, projection)

    try:
        yield caught_up
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


@pytest.fixture
async def client(nats_settings: NatsSettings, pg_dsn: str) -> AsyncIterator[Client]:
    from services.api.app import create_app

    app = create_app(Settings(nats=nats_settings, config=api_config(), database_url=pg_dsn))
    async with AsyncTestClient(app, raise_server_exceptions=False) as c:
        c.headers["Authorization"] = f"Bearer {ADMIN_KEY}"
        await wait_healthy(c)
        yield c


async def capture(c: Client, lead: dict[str, Any], at: dt.datetime) -> str:
    r = await c.post("/v1/leads", json={**lead, "occurred_at": at.isoformat()})
    assert r.status_code == 202, r.text
    lead_id: str = r.json()["aggregate_id"]
    return lead_id


def ids(page: dict[str, Any]) -> list[str]:
    return [x["lead_id"] for x in page["leads"]]


async def test_leads_are_read_back_filtered_searched_sorted_and_paged(
    client: Client, nats_conn: tuple[Any, JetStreamContext], nats_settings: NatsSettings, naming: Naming, pg_dsn: str
) -> None:
    c, (_, js) = client, nats_conn
    marta, chen, ana = [await capture(c, lead, T0 + dt.timedelta(hours=n)) for n, lead in enumerate(LEADS)]
    assert (await c.post(f"/v1/leads/{marta}/assign", json={"owner": "ana"})).status_code == 202
    touch = {"kind": "call", "direction": "outbound", "occurred_at": (T0 + dt.timedelta(days=1)).isoformat()}
    assert (await c.post(f"/v1/leads/{chen}/touchpoints", json=touch)).status_code == 202
    task = {"task_id": "t1", "title": "Call back", "due_at": (T0 + dt.timedelta(days=3)).isoformat()}
    assert (await c.post(f"/v1/leads/{chen}/tasks", json=task)).status_code == 202
    async with records(nats_settings, pg_dsn, js, naming) as caught_up:
        await caught_up()

        r = await c.get(f"/v1/leads/{marta}")
        assert r.status_code == 200, r.text
        one = r.json()
        assert r.headers["etag"] == f'"{one["version"]}"'
        assert (one["name"], one["email"], one["company"], one["phone"]) == (
            "Marta Kowalska",
            "marta@kowalski.pl",
            "Kowalski i Synowie",
            "+48 600 100 200",
        )
        assert (one["job_title"], one["country"], one["source"], one["channel"]) == (
            "Head of Sales",
            "PL",
            "referral",
            "web_form",
        )
        assert (one["owner"], one["status"], one["score"]) == ("ana", "open", 20.0)
        assert one["captured_at"] == "2026-11-20T09:00:00Z" and one["last_touch_at"] is None
        assert one["open_tasks"] == [] and one["alerts"] == [] and one["duplicate_of"] is None
        chen_view = (await c.get(f"/v1/leads/{chen}")).json()
        assert chen_view["open_tasks"] == ["t1"] and chen_view["last_activity_at"] == "2026-11-21T09:00:00Z"
        assert (await c.get("/v1/leads/nobody")).status_code == 404

        # Newest capture first by default; filters, search over name, e-mail, company and phone digits.
        assert ids((await c.get("/v1/leads")).json()) == [ana, chen, marta]
        listed = (await c.get("/v1/leads", params={"owner": "ana"})).json()["leads"]
        assert [(x["lead_id"], x["name"], x["email"], x["company"]) for x in listed] == [
            (marta, "Marta Kowalska", "marta@kowalski.pl", "Kowalski i Synowie")
        ]
        for q, found in (
            ("kowal", [marta]),
            ("DRAGON", [chen]),
            ("ana@lima", [ana]),
            ("Lima", [ana]),
            ("600 100", [marta]),
            ("600-100-200", [marta]),
            ("100%", []),
            ("nobody", []),
        ):
            assert ids((await c.get("/v1/leads", params={"q": q})).json()) == found, q
        assert ids((await c.get("/v1/leads", params={"source": "referral"})).json()) == [marta]
        assert ids((await c.get("/v1/leads", params={"status": "open", "score_min": 10})).json()) == [ana, marta]
        assert ids((await c.get("/v1/leads", params={"score_max": 0})).json()) == [chen]
        window = {"captured_from": (T0 + dt.timedelta(hours=1)).isoformat(), "captured_to": "2026-11-20T11:00:00Z"}
        assert ids((await c.get("/v1/leads", params=window)).json()) == [chen]
        by_activity = (await c.get("/v1/leads", params={"sort": "-last_activity"})).json()
        assert ids(by_activity) == [chen, ana, marta]
        assert by_activity["leads"][0]["open_tasks"] == 1

        # Keyset pages: the cursor carries the sort and the filters; every lead once, in order.
        seen: list[str] = []
        params: dict[str, Any] = {"sort": "score", "limit": 1}
        while True:
            page = (await c.get("/v1/leads", params=params)).json()
            seen += ids(page)
            if page["next_cursor"] is None:
                break
            params["cursor"] = page["next_cursor"]
        assert seen == [chen, *sorted([ana, marta])]  # equal scores: by id
        cursor = (await c.get("/v1/leads", params={"sort": "score", "limit": 1})).json()["next_cursor"]
        for bad, field in (
            ({"colour": "red"}, "colour"),
            ({"limit": 201}, "limit"),
            ({"sort": "name"}, "sort"),
            ({"status": "won"}, "status"),
            ({"cursor": "garbage"}, "cursor"),
            ({"cursor": cursor, "sort": "score", "owner": "ana"}, "cursor"),
            ({"captured_from": "2026-11-20T09:00:00"}, "captured_from"),
            ({"score_min": 5, "score_max": 1}, "score_max"),
            ({"score_min": "nan"}, "score_min"),
            ({"order": "score", "q": "x"}, "q"),
        ):
            r = await c.get("/v1/leads", params=bad)
            assert r.status_code == 422 and r.json()["errors"][0]["field"] == field, (bad, r.text)


async def test_a_correction_is_sealed_in_the_log_and_the_record_follows(
    client: Client,
    store: EventStore,
    nats_conn: tuple[Any, JetStreamContext],
    nats_settings: NatsSettings,
    naming: Naming,
    pg_dsn: str,
) -> None:
    c, (_, js) = client, nats_conn
    marta = await capture(c, LEADS[0], T0)
    async with records(nats_settings, pg_dsn, js, naming) as caught_up:
        await caught_up()
        version = (await c.get(f"/v1/leads/{marta}")).headers["etag"]
        change = {"company": "Kowalska Consulting", "job_title": None, "last_name": "Nowak", "first_name": "Marta"}
        assert (await c.patch(f"/v1/leads/{marta}", json=change)).status_code == 428
        r = await c.patch(f"/v1/leads/{marta}", json=change, headers={"If-Match": '"12345"'})
        assert r.status_code == 409, r.text
        same = {"email": "marta@kowalski.pl", "country": "PL"}  # changes nothing
        for bad, field in (({}, "body"), ({"email": "x"}, "email"), ({"colour": "red"}, "colour"), (same, "body")):
            r = await c.patch(f"/v1/leads/{marta}", json=bad, headers={"If-Match": version})
            assert r.status_code in (400, 422) and field in r.text, r.text
        r = await c.patch(f"/v1/leads/{marta}", json=change, headers={"If-Match": version})
        assert r.status_code == 202, r.text
        assert r.json()["type"] == "lead.corrected.v1"

        # In the log: which fields changed (not the first name given unchanged), in clear; their values sealed.
        [stored] = [e.envelope.data for e in await store.read("lead", marta) if e.envelope.type == "lead.corrected.v1"]
        assert isinstance(stored, LeadCorrected) and stored.sealed is not None
        assert set(stored.fields) == {"company", "job_title", "last_name"}
        assert stored.company is None and stored.last_name is None

        await caught_up()
        one = (await c.get(f"/v1/leads/{marta}")).json()
        assert (one["company"], one["job_title"], one["name"]) == ("Kowalska Consulting", None, "Marta Nowak")
        assert one["corrected_fields"] == ["company", "job_title", "last_name"] and one["score"] == 0.0
        assert ids((await c.get("/v1/leads", params={"q": "consulting"})).json()) == [marta]
        assert ids((await c.get("/v1/leads", params={"q": "synowie"})).json()) == []


async def test_a_repeated_email_is_flagged_a_duplicate_and_a_merge_keeps_both_histories(
    client: Client, nats_conn: tuple[Any, JetStreamContext], nats_settings: NatsSettings, naming: Naming, pg_dsn: str
) -> None:
    c, (_, js) = client, nats_conn
    first = await capture(c, LEADS[0], T0)
    again = await capture(c, {"email": "MARTA@Kowalski.PL", "name": "M. Kowalska"}, T0 + dt.timedelta(days=1))
    by_phone = await capture(c, {"phone": "+48-600-100-200", "company": "x"}, T0 + dt.timedelta(days=2))
    other = await capture(c, LEADS[1], T0 + dt.timedelta(days=3))
    async with records(nats_settings, pg_dsn, js, naming) as caught_up:
        await caught_up()
        assert (await c.get(f"/v1/leads/{first}")).json()["duplicate_of"] is None
        assert (await c.get(f"/v1/leads/{again}")).json()["duplicate_of"] == first
        assert (await c.get(f"/v1/leads/{other}")).json()["duplicate_of"] is None
        assert (await c.get(f"/v1/leads/{by_phone}")).json()["duplicate_of"] == first  # phones match on digits
        assert ids((await c.get("/v1/leads", params={"duplicate_of": first})).json()) == [by_phone, again]

        for body, status in (({"into": again}, 422), ({"into": "nobody"}, 404)):
            r = await c.post(f"/v1/leads/{again}/merge", json=body)
            assert r.status_code == status, r.text
        r = await c.post(f"/v1/leads/{again}/merge", json={"into": first})
        assert r.status_code == 202 and r.json()["type"] == "lead.merged.v1", r.text
        assert (await c.post(f"/v1/leads/{again}/merge", json={"into": first})).status_code == 409
        await caught_up()
        absorbed = (await c.get(f"/v1/leads/{again}")).json()
        assert (absorbed["status"], absorbed["merged_into"]) == ("merged", first)
        assert (await c.get(f"/v1/leads/{first}")).json()["merged_from"] == [again]
        assert again not in ids((await c.get("/v1/leads")).json())
        assert ids((await c.get("/v1/leads", params={"status": "merged"})).json()) == [again]
        # Both histories stay whole: the absorbed lead's capture and its merge; the survivor's own events.
        history = (await c.get(f"/v1/leads/{again}/events")).json()["events"]
        assert [e["type"] for e in history] == ["lead.captured.v1", "lead.merged.v1"]
        assert history[1]["data"]["into"] == first
        assert [e["type"] for e in (await c.get(f"/v1/leads/{first}/events")).json()["events"]] == ["lead.captured.v1"]

        # Rebuilt from the log, the records (duplicate links and contact hashes too) equal the live ones.
        result = await verify(LeadRecordsProjection(RULES, "check"), nats_settings, pg_dsn)
        assert result.same and {t.table for t in result.tables} == {"leads", "contacts"}, result
