"""The counts the CRM export fixtures' README gives per deals file, for the importer's tests."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from pathlib import Path

import msgspec

EXPORTS = Path(__file__).resolve().parent / "fixtures" / "crm-exports"


class Figures(msgspec.Struct, frozen=True, kw_only=True):
    """Open, won and lost deals, won sums per currency and lost deals per reason."""

    open: int
    won: int
    lost: int
    won_sums: dict[str, Decimal]
    lost_reasons: dict[str, int]


README_FIGURES = {
    "pipedrive": Figures(
        open=12,
        won=7,
        lost=6,
        won_sums={"EUR": Decimal("46900.00"), "PLN": Decimal("130101.00")},
        lost_reasons={
            "Price too high": 2,
            "Went with competitor": 1,
            "No budget this year": 1,
            "No response": 1,
            "Project postponed": 1,
        },
    ),
    "hubspot": Figures(
        open=11,
        won=8,
        lost=6,
        won_sums={"EUR": Decimal("167601.25"), "USD": Decimal("66300.00")},
        lost_reasons={
            "Lost to competitor": 2,
            "Price": 1,
            "No decision": 1,
            "Budget cut": 1,
            "Timing \u2013 revisit next year": 1,
        },
    ),
    # Sell's 3 unqualified deals are lost with an "Unqualified: <reason>" reason: Dealstream has one lost outcome.
    "zendesk-sell": Figures(
        open=10,
        won=7,
        lost=5 + 3,
        won_sums={"EUR": Decimal("118751.25"), "USD": Decimal("35550.00")},
        lost_reasons={
            "Bad timing": 2,
            "Lost to competitor": 1,
            "No decision": 1,
            "Too expensive": 1,
            "Unqualified: Duplicate": 2,
            "Unqualified: Not a fit": 1,
        },
    ),
}
FILES = {
    "pipedrive": {"deals": "deals.csv", "leads": "leads.csv", "people": "people.csv"},
    "hubspot": {"deals": "deals.csv", "people": "contacts.csv"},
    "zendesk-sell": {"deals": "deals.csv", "leads": "leads.csv", "people": "contacts.csv"},
}


def figures(outcomes: list[tuple[str, str, Decimal, str | None]]) -> Figures:
    """Figures of (status, currency, amount, lost reason) per deal."""
    won_sums: dict[str, Decimal] = {}
    for status, currency, amount, _ in outcomes:
        if status == "won":
            won_sums[currency] = won_sums.get(currency, Decimal(0)) + amount
    statuses = Counter(status for status, *_ in outcomes)
    return Figures(
        open=statuses["open"],
        won=statuses["won"],
        lost=statuses["lost"],
        won_sums=dict(won_sums),
        lost_reasons=dict(Counter(r for s, _, _, r in outcomes if s == "lost" and r)),
    )


def files_of(crm: str) -> dict[str, tuple[str, bytes]]:
    """The fixture files of ``crm`` by kind, as the importer takes them."""
    return {kind: (f"{crm}/{name}", (EXPORTS / crm / name).read_bytes()) for kind, name in FILES[crm].items()}
