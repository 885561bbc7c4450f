"""The first-touch compliance facts in PostgreSQL: the projection that writes them and the select that reads the
report back.

``apply_batch`` loads the facts of the touched leads, folds the batch in memory with
:func:`projections.compliance.apply` and writes only what changed. Every write is idempotent on its own too: a
lead row only moves to a higher ``version``, and owner rows are keyed by the sequence of their event. The query
selects the leads captured in the period by ``as_of`` and :mod:`projections.compliance_report` computes the
figures, the same formulas the pure tests check.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from psycopg import AsyncConnection, AsyncCursor

from events.envelope import AggregateType, StoredEvent
from projections.batch import BatchProjection, changed
from projections.compliance import ComplianceState, FirstTouchFacts, OwnerSpan, apply
from projections.compliance_report import ComplianceReport, Group, compliance_report
from projections.instants import utc, utc_or_none
from projections.sla_rules import SlaRules
from projections.velocity_periods import Period
from projections.versions import BuildVersion, build_name

VERSION = 1
"""The compliance fold's logic version. A build is this and the SLA policies' version (:class:`BuildVersion`), as
the SLA timers' are, so a new policy version measures the log again (``compliance_v101``: fold v1, policies v1)."""
BUILD = build_name("compliance", BuildVersion(VERSION, SlaRules().version).number)
"""The build readers use before any worker has registered one."""

_DDL = (
    """
    CREATE TABLE IF NOT EXISTS {t}leads (
        lead_id text PRIMARY KEY,
        channel text NOT NULL,
        source text NOT NULL,
        policy text NOT NULL,
        captured_at timestamptz NOT NULL,
        deadline timestamptz NOT NULL,
        touched_at timestamptz,
        business_seconds double precision,
        disqualified_at timestamptz,
        last_at timestamptz NOT NULL,
        version bigint NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS {t}leads_captured ON {t}leads (captured_at)",
    """
    CREATE TABLE IF NOT EXISTS {t}owners (
        lead_id text NOT NULL,
        sequence bigint NOT NULL,
        at timestamptz NOT NULL,
        owner text NOT NULL,
        team text,
        deadline timestamptz NOT NULL,
        PRIMARY KEY (lead_id, sequence)
    )
    """,
)

_LEAD_FIELDS = (
    "lead_id",
    "channel",
    "source",
    "policy",
    "captured_at",
    "deadline",
    "touched_at",
    "business_seconds",
    "disqualified_at",
    "last_at",
    "version",
)
_LEAD_COLUMNS = ", ".join(_LEAD_FIELDS)
_OWNER_COLUMNS = "lead_id, sequence, at, owner, team, deadline"


class ComplianceSql:
    """The compliance statements over one build's tables, ``<build>_leads`` and ``<build>_owners``."""

    def __init__(self, build: str) -> None:
        self.leads, self.owners = f"{build}_leads", f"{build}_owners"
        self.ddl = tuple(statement.format(t=f"{build}_") for statement in _DDL)
        updated = ", ".join(f"{f} = EXCLUDED.{f}" for f in _LEAD_FIELDS[6:])
        self.upsert_lead = (
            f"INSERT INTO {self.leads} ({_LEAD_COLUMNS}) VALUES ({', '.join(['%s'] * len(_LEAD_FIELDS))}) "  # noqa: S608
            f"ON CONFLICT (lead_id) DO UPDATE SET {updated} WHERE {self.leads}.version < EXCLUDED.version"
        )
        self.insert_owner = (
            f"INSERT INTO {self.owners} ({_OWNER_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s) "  # noqa: S608
            "ON CONFLICT DO NOTHING"
        )


async def select_leads(
    conn: AsyncConnection[Any], build: str, where: str, params: Sequence[Any]
) -> list[FirstTouchFacts]:
    """The leads matching ``where`` (over ``l``, a lead row) with their owners."""
    sql = ComplianceSql(build)
    owners: dict[str, list[OwnerSpan]] = {}
    async with conn.cursor() as cur:
        await cur.execute(
            f"SELECT o.lead_id, o.sequence, o.at, o.owner, o.team, o.deadline FROM {sql.owners} o "  # noqa: S608
            f"JOIN {sql.leads} l USING (lead_id) WHERE {where} ORDER BY o.lead_id, o.sequence",
            params,
        )
        for lead_id, seq, at, owner, team, deadline in await cur.fetchall():
            span = OwnerSpan(sequence=seq, at=utc(at), owner=owner, team=team, deadline=utc(deadline))
            owners.setdefault(lead_id, []).append(span)
        await cur.execute(f"SELECT {_LEAD_COLUMNS} FROM {sql.leads} l WHERE {where}", params)  # noqa: S608
        return [
            FirstTouchFacts(
                lead_id=r[0],
                channel=r[1],
                source=r[2],
                policy=r[3],
                captured_at=utc(r[4]),
                deadline=utc(r[5]),
                touched_at=utc_or_none(r[6]),
                business_seconds=r[7],
                disqualified_at=utc_or_none(r[8]),
                last_at=utc(r[9]),
                version=r[10],
                owners=tuple(owners.get(r[0], ())),
            )
            for r in await cur.fetchall()
        ]


async def read_state(conn: AsyncConnection[Any], build: str = BUILD) -> ComplianceState:
    """Every stored fact of one build: for tests and rebuild comparisons."""
    return ComplianceState({lead.lead_id: lead for lead in await select_leads(conn, build, "true", ())})


async def report(
    conn: AsyncConnection[Any], p: Period, group: Group, as_of: dt.datetime, build: str = BUILD
) -> ComplianceReport:
    """The compliance report of the leads captured in ``p`` as known at ``as_of`` (an aware instant)."""
    leads = await select_leads(
        conn,
        build,
        "l.captured_at >= %s AND l.captured_at < %s AND l.captured_at <= %s",
        (p.start, p.end, as_of),
    )
    return compliance_report(leads, p, group, as_of)


class ComplianceProjection(BatchProjection[ComplianceState]):
    """First-touch SLA compliance facts per lead, measured under the SLA rules the build is made from."""

    name = "compliance"
    # A lead's facts need only its own events: split by partition, each row has exactly one writer.
    partitioned: tuple[AggregateType, ...] = ("lead",)
    broadcast: tuple[AggregateType, ...] = ()

    def __init__(self, rules: SlaRules, instance: str = "") -> None:
        self.rules = rules
        self.version = BuildVersion(VERSION, rules.version).number
        self.build = build_name(self.name, self.version, instance)
        self.sql = ComplianceSql(self.build)

    def ddl(self) -> Sequence[str]:
        return self.sql.ddl

    async def load_touched(self, conn: AsyncConnection[Any], events: Sequence[StoredEvent]) -> ComplianceState:
        ids = sorted({e.envelope.aggregate_id for e in events if e.envelope.aggregate_type == "lead"})
        if not ids:
            return ComplianceState()
        leads = await select_leads(conn, self.build, "l.lead_id = ANY(%s)", (ids,))
        return ComplianceState({lead.lead_id: lead for lead in leads})

    def fold(self, state: ComplianceState, event: StoredEvent) -> None:
        apply(state, event, self.rules)

    async def write_changes(
        self, cur: AsyncCursor[Any], before: ComplianceState, after: ComplianceState, events: Sequence[StoredEvent]
    ) -> None:
        leads = changed(after.leads, before.leads)
        if not leads:
            return
        await cur.executemany(self.sql.upsert_lead, [tuple(getattr(x, f) for f in _LEAD_FIELDS) for x in leads])
        owners = [
            (x.lead_id, o.sequence, o.at, o.owner, o.team, o.deadline)
            for x in leads
            for o in x.owners[_known_owners(before.leads.get(x.lead_id)) :]
        ]
        if owners:
            await cur.executemany(self.sql.insert_owner, owners)


def _known_owners(old: FirstTouchFacts | None) -> int:
    """How many of the lead's owners are already stored: owners are only ever appended."""
    return len(old.owners) if old else 0
