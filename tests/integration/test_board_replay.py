"""The board as it stood at the end of a past quarter, replayed from the log, and the deals that slipped."""

from __future__ import annotations

from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

pytestmark = pytest.mark.integration

Client = AsyncTestClient[Litestar]
PIPELINE = {
    "name": "Sales",
    "stages": [
        {"id": "qualified", "name": "Qualified", "probability": 0.2},
        {"id": "proposal", "name": "Proposal", "probability": 0.6},
    ],
    "occurred_at": "2026-01-01T00:00:00+01:00",
}


async def post(api: Client, path: str, body: dict[str, Any], version: int | None = None) -> int:
    headers = {"If-Match": f'"{version}"'} if version is not None else {}
    r = await api.post(path, json=body, headers=headers)
    assert r.status_code == 202, r.text
    return int(r.json()["version"])


def columns(board: dict[str, Any]) -> dict[str, list[str]]:
    return {c["stage"]: [d["deal_id"] for d in c["deals"]] for b in board["boards"] for c in b["columns"]}


async def test_the_board_at_the_end_of_a_quarter_and_the_deals_that_slipped(api: Client) -> None:
    assert (await api.put("/v1/pipelines/sales", json=PIPELINE)).status_code == 202
    deal = {"pipeline_id": "sales", "amount": "1000", "currency": "EUR", "owner": "ana"}
    await post(
        api,
        "/v1/deals",
        {
            **deal,
            "deal_id": "a",
            "name": "A",
            "expected_close_date": "2026-03-15",
            "occurred_at": "2026-01-10T10:00:00+01:00",
        },
    )
    b = await post(
        api,
        "/v1/deals",
        {
            **deal,
            "deal_id": "b",
            "name": "B",
            "expected_close_date": "2026-03-31",
            "occurred_at": "2026-02-01T10:00:00+01:00",
        },
    )
    await post(
        api,
        "/v1/deals",
        {
            **deal,
            "deal_id": "c",
            "name": "C",
            "expected_close_date": "2026-04-30",
            "occurred_at": "2026-03-01T10:00:00+01:00",
        },
    )
    b = await post(api, "/v1/deals/b/stage", {"to_stage": "proposal", "occurred_at": "2026-03-05T10:00:00+01:00"}, b)
    await post(api, "/v1/deals/b/won", {"occurred_at": "2026-04-10T10:00:00+02:00"})
    await post(api, "/v1/deals/a/lost", {"reason": "budget", "occurred_at": "2026-04-20T10:00:00+02:00"})

    q1 = (await api.get("/v1/board/as-of", params={"at": "2026-03-31T23:59:59+02:00", "since": "2026-01-01"})).json()
    assert columns(q1) == {"qualified": ["a", "c"], "proposal": ["b"]}
    assert [(s["deal_id"], s["stage_then"], s["status_now"]) for s in q1["slipped"]] == [
        ("a", "qualified", "lost"),
        ("b", "proposal", "won"),
    ]
    feb = (await api.get("/v1/board/as-of", params={"at": "2026-02-15T00:00:00+01:00"})).json()
    assert columns(feb) == {"qualified": ["a", "b"], "proposal": []} and feb["slipped"] == []
    now = (await api.get("/v1/board/as-of", params={"at": "2026-12-31T00:00:00+01:00"})).json()
    assert columns(now) == {"qualified": ["c"], "proposal": []}
    assert (await api.get("/v1/board/as-of", params={"at": "2026-03-31T23:59:59"})).status_code == 422
