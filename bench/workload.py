"""The benchmark's sales workload: leads, touchpoints, deals moving through stages, won or lost.

Two forms of the same mix: HTTP requests (for the API figures) and ready envelopes (to fill a log of a
million events fast, for the rebuild figures). Seeded, so two runs replay the same pipeline.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from events.envelope import AggregateType, Envelope
from events.ids import uuid7
from events.ledger import Context, new_envelope
from events.types import (
    DealLost,
    DealOpened,
    DealStageChanged,
    DealWon,
    Event,
    LeadCaptured,
    PipelineDefined,
    StageDefinition,
    TouchpointLogged,
)

PIPELINE_ID = "sales"
STAGES = ["qualified", "discovery", "proposal", "negotiation"]
PIPELINE = PipelineDefined(
    name="Sales",
    stages=[
        StageDefinition(id=s, name=s.title(), probability=p, rotting_days=d)
        for s, p, d in zip(STAGES, (0.1, 0.25, 0.5, 0.8), (14, 14, 10, 7), strict=True)
    ],
)
OWNERS = ["ana", "bo", "chen", "dara"]
TITLES = ["Head of Sales", "CEO", "Engineer", "Office manager", "VP Marketing", "Founder"]
COUNTRIES = ["PL", "DE", "CN", "US", "FR"]
LOSS_REASONS = ["price", "timing", "competitor", "no budget"]


@dataclass(frozen=True, slots=True)
class LeadPlan:
    """One lead's life in the workload: its form, its touchpoints, and the deal it becomes (or not)."""

    n: int
    form: dict[str, Any]
    touches: int
    deal_moves: list[str] | None
    won: bool
    amount: int
    owner: str


def plans(leads: int, touches: int = 1, seed: int = 7) -> list[LeadPlan]:
    """Every second lead becomes a deal that moves through the stages; about 40% of deals are won."""
    rng = random.Random(seed)
    out = []
    for n in range(leads):
        form = {
            "source_ref": f"bench-{seed}-{n}",
            "email": f"buyer{n}@example{n % 97}.com",
            "first_name": f"Buyer{n}",
            "company": f"Company {n % 997}",
            "job_title": rng.choice(TITLES),
            "country": rng.choice(COUNTRIES),
            "answers": {"budget": f"{rng.randrange(1, 100)}k", "company_size": rng.choice(["1-10", "51-200"])},
        }
        moves = STAGES[1 : 1 + rng.randrange(1, len(STAGES))] if n % 2 == 0 else None
        out.append(
            LeadPlan(n, form, touches, moves, rng.random() < 0.4, rng.randrange(1_000, 90_000), rng.choice(OWNERS))
        )
    return out


def _envelope(kind: AggregateType, aggregate_id: str, data: Event, at: dt.datetime) -> Envelope:
    return new_envelope(Context(actor="bench", source="api", correlation_id=uuid7(), now=at), kind, aggregate_id, data)


def synthetic_log(events: int, start: dt.datetime, seed: int = 11, chunk: int = 2_000) -> Iterator[list[Envelope]]:
    """About ``events`` envelopes of the same mix, as phases: each phase holds at most one event per aggregate,
    and an aggregate's events come in order across phases, so each phase can be published concurrently."""
    yield [_envelope("pipeline", PIPELINE_ID, PIPELINE, start)]
    made, n = 1, 0
    rng = random.Random(seed)
    while made < events:
        phases: list[list[Envelope]] = [[] for _ in range(8)]
        for plan in plans(chunk, touches=2, seed=seed + n):
            lead_id, deal_id = f"lead-{n}", f"deal-{n}"
            at = start + dt.timedelta(minutes=n)
            lead = LeadCaptured(
                email_domain=plan.form["email"].split("@")[1],
                company=plan.form["company"],
                job_title=plan.form["job_title"],
                country=plan.form["country"],
                source_ref=plan.form["source_ref"],
                answers=plan.form["answers"],
            )
            phases[0].append(_envelope("lead", lead_id, lead, at))
            for t in range(plan.touches):
                touch = TouchpointLogged(touchpoint_id=f"t{t}", kind="call", direction="outbound", outcome="connected")
                phases[1 + t].append(_envelope("lead", lead_id, touch, at + dt.timedelta(hours=t + 1)))
            if plan.deal_moves is not None:
                opened = DealOpened(
                    name=f"Deal {n}",
                    pipeline_id=PIPELINE_ID,
                    stage=STAGES[0],
                    amount=Decimal(plan.amount),
                    currency="EUR",
                    owner=plan.owner,
                    lead_id=lead_id,
                )
                phases[0].append(_envelope("deal", deal_id, opened, at + dt.timedelta(hours=3)))
                stage = STAGES[0]
                for i, to_stage in enumerate(plan.deal_moves):
                    moved = DealStageChanged(from_stage=stage, to_stage=to_stage)
                    phases[1 + i].append(_envelope("deal", deal_id, moved, at + dt.timedelta(days=2 * i + 1)))
                    stage = to_stage
                close_at = at + dt.timedelta(days=10)
                closed: Event = (
                    DealWon(stage=stage, amount=Decimal(plan.amount), currency="EUR")
                    if plan.won
                    else DealLost(stage=stage, reason=rng.choice(LOSS_REASONS))
                )
                phases[1 + len(plan.deal_moves)].append(_envelope("deal", deal_id, closed, close_at))
            n += 1
        for phase in phases:
            if phase:
                made += len(phase)
                yield phase
