"""The lead list over a seeded table: ``GET /v1/leads``'s query (filters, ``q`` search, sorts, keyset pages) timed
against lead records folded from synthetic captures, the way the lead records worker folds them."""

from __future__ import annotations

import datetime as dt
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

import msgspec
import psycopg

from bench.report import Report, Row, percentile
from events.envelope import StoredEvent
from events.ledger import Context, new_envelope
from events.types import Event, LeadAssigned, LeadCaptured, TouchpointLogged
from projections.lead_records import LeadTable, apply
from projections.lead_records_store import (
    DEFAULT_SORT,
    SORTS,
    LeadFilters,
    LeadRecordsProjection,
    LeadRecordsSql,
    list_records,
    values_of,
)
from projections.listing import decode_cursor, parse_sort
from projections.rules import SalesRules, sales_rules_from_toml
from workers.settings import Settings

FIRST = ("Marta", "Jan", "Anna", "Piotr", "Wei", "Li", "Ana", "Chen", "Ewa", "Tomasz", "Mei", "Bo", "Zofia", "Hao")
LAST = ("Kowalska", "Nowak", "Wiśniewski", "Zhang", "Wang", "Lima", "Liu", "Lewandowska", "Chen", "Zhou", "Mazur")
COMPANIES = ("Kowalski i Synowie", "Dragon Trade", "Lima Foods", "Acme", "Globex", "Initech", "Hooli", "Vandelay")
OWNERS = ("ana", "bo", "chen", "dora", "ewa", "fei", "gosia", "hao")
SOURCES = ("referral", "event", "partner", "ads", "webinar")
TITLES = ("Head of Sales", "Engineer", "Director", "Buyer", "CEO", "Analyst")
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
GOAL_MS = 50.0


def _events(n: int, rng: random.Random) -> Iterator[StoredEvent]:
    """A lead's capture, for most an owner, for a third a call: the events its record is folded from."""
    lead_id = f"lead-{n:07d}"
    first, last, company = rng.choice(FIRST), rng.choice(LAST), f"{rng.choice(COMPANIES)} {n % 997}"
    at = T0 + dt.timedelta(minutes=rng.randrange(365 * 24 * 60))
    captured = LeadCaptured(
        email=f"{first}.{last}{n}@example{n % 211}.com".lower(),
        phone=f"+48 {rng.randrange(500, 800)} {rng.randrange(100, 999)} {rng.randrange(100, 999)}",
        first_name=first,
        last_name=last,
        company=company,
        job_title=rng.choice(TITLES),
        country="PL",
        source=rng.choice(SOURCES),
    )
    data: list[tuple[Event, dt.datetime]] = [(captured, at)]
    if n % 5:
        data.append((LeadAssigned(owner=rng.choice(OWNERS)), at))
    if n % 3 == 0:
        data.append(
            (TouchpointLogged(touchpoint_id="c1", kind="call", direction="outbound"), at + dt.timedelta(days=2))
        )
    for seq, (event, when) in enumerate(data, start=3 * n + 1):
        context = Context(actor="bench", source="web_form", correlation_id=lead_id, now=when)
        envelope = new_envelope(context, "lead", lead_id, event)
        yield StoredEvent(sequence=seq, subject=f"b.evt.lead.0.{lead_id}", envelope=envelope)


def _queries(rng: random.Random) -> list[tuple[str, Callable[[], tuple[LeadFilters, str]]]]:
    """What a sales team asks of the list, each with fresh values."""

    def since() -> tuple[dt.datetime, dt.datetime]:
        start = T0 + dt.timedelta(days=rng.randrange(330))
        return start, start + dt.timedelta(days=30)

    return [
        ("newest", lambda: (LeadFilters(), DEFAULT_SORT)),
        ("by owner", lambda: (LeadFilters(owner=rng.choice(OWNERS)), DEFAULT_SORT)),
        ("open by score", lambda: (LeadFilters(status="open"), "-score")),
        ("source in a month", lambda: (LeadFilters(source=rng.choice(SOURCES), **_window(since())), DEFAULT_SORT)),
        ("score range by activity", lambda: (LeadFilters(score_min=20, score_max=60), "-last_activity")),
        ("q last name", lambda: (LeadFilters(q=rng.choice(LAST)[:4]), DEFAULT_SORT)),
        ("q e-mail", lambda: (LeadFilters(q=f"{rng.randrange(10_000, 99_999)}@"), DEFAULT_SORT)),
        ("q phone", lambda: (LeadFilters(q=f"{rng.randrange(500, 800)} {rng.randrange(100, 999)}"), DEFAULT_SORT)),
        ("owner + q by score", lambda: (LeadFilters(owner=rng.choice(OWNERS), q=rng.choice(COMPANIES)[:5]), "score")),
    ]


def _window(span: tuple[dt.datetime, dt.datetime]) -> dict[str, Any]:
    return {"captured_from": span[0], "captured_to": span[1]}


def _rules() -> SalesRules:
    """The rules the run's workers take (``DEALSTREAM_RULES``): the records score as they would."""
    return sales_rules_from_toml(Settings.from_env().read_rules()[0])


async def seed(dsn: str, leads: int) -> str:
    """Fold ``leads`` synthetic leads into a fresh lead records build and write them; returns the build."""
    projection = LeadRecordsProjection(_rules().scoring)
    rng = random.Random(15)
    table = LeadTable(key=b"bench")
    for n in range(leads):
        for event in _events(n, rng):
            apply(table, event, projection.rules)
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        for statement in projection.ddl():
            await conn.execute(statement)
        sql = LeadRecordsSql(projection.build)
        async with conn.cursor() as cur:
            columns = ", ".join(sql.columns)
            async with cur.copy(f"COPY {sql.leads} ({columns}) FROM STDIN") as copy:
                for record in table.leads.values():
                    await copy.write_row(values_of(record))
        await conn.execute(f"ANALYZE {sql.leads}")
    return projection.build


async def lead_list_figures(report: Report, dsn: str, leads: int, rounds: int) -> Row:
    """p50/p99 of one page of the lead list (the API's query and decoding, no HTTP) over ``leads`` records."""
    started = time.perf_counter()
    build = await seed(dsn, leads)
    seeded = time.perf_counter() - started
    rng = random.Random(51)
    queries = _queries(rng)
    latencies: list[float] = []
    by_kind: dict[str, list[float]] = {}
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        for _, make in queries:  # warm: a serving API has its pages and plans cached
            filters, sort_text = make()
            await list_records(conn, build, filters, parse_sort(sort_text, SORTS, DEFAULT_SORT), None, 50)
        for n in range(rounds):
            kind, make = queries[n % len(queries)]
            filters, sort_text = make()
            sort = parse_sort(sort_text, SORTS, DEFAULT_SORT)
            t = time.perf_counter()
            page = await list_records(conn, build, filters, sort, None, 50)
            if page.next_cursor is not None and n % 2:  # every other asks the next page too, as a scrolling rep
                after = decode_cursor(page.next_cursor, sort, msgspec.structs.asdict(filters))
                await list_records(conn, build, filters, sort, after, 50)
            latencies.append((time.perf_counter() - t) * 1000)
            by_kind.setdefault(kind, []).append(latencies[-1])
    p99 = percentile(latencies, 99)
    slowest = max(by_kind, key=lambda k: percentile(by_kind[k], 99)) if by_kind else ""
    return report.add(
        Row(
            section="lists",
            name=f"lead list, filters and q, {leads:,} leads",
            value=len(latencies) / (sum(latencies) / 1000) if latencies else 0.0,
            unit="pages/s",
            p50_ms=percentile(latencies, 50),
            p99_ms=p99,
            goal=f"p99 < {GOAL_MS:.0f} ms",
            met=p99 < GOAL_MS,
            note=f"{len(latencies)} pages of 50 over {len(queries)} kinds of question (a second page for half); "
            f"query and decoding, no HTTP; slowest: {slowest} (p99 {percentile(by_kind.get(slowest, []), 99):.1f} ms); "
            f"seeded in {seeded:.0f} s",
        )
    )
