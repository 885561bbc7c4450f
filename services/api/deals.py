"""Deals as a sales team edits them: corrections, reassignment, reopening."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Response, Router, patch, post
from litestar.params import JSONBody

from events import commands as cmd
from events.aggregates import DEAL_FIELDS, Rejected
from events.types import DealField
from services.api import schemas
from services.api.commands import _run
from services.api.common import AggregateIdParam, AnyRequest, accepted, requires
from services.api.identity import reaches
from services.errors import InputError

WRITE = [requires("deals:write")]


def patch_command(deal_id: str, data: schemas.PatchDeal) -> cmd.Command:
    """The one command a PATCH body asks for: a reassignment, or an update of the other fields it names."""
    changed: tuple[DealField, ...] = tuple(f for f in DEAL_FIELDS if getattr(data, f) is not msgspec.UNSET)
    if isinstance(data.owner, str):
        if changed:
            raise Rejected("owner", "a reassignment is a change of its own: send the owner alone", 422)
        return cmd.ReassignDeal(deal_id=deal_id, owner=data.owner)
    if not changed:
        raise InputError.one("body", "names no field to change: owner, name, expected_close_date or next_step")

    def value(name: str) -> Any:
        found = getattr(data, name)
        return None if found is msgspec.UNSET else found

    return cmd.UpdateDeal(
        deal_id=deal_id,
        changed=changed,
        name=value("name"),
        expected_close_date=value("expected_close_date"),
        next_step=value("next_step"),
    )


@patch("/deals/{deal_id:str}", status_code=202, tags=["deals"], guards=[*WRITE, reaches("deal")])
async def patch_deal(
    request: AnyRequest, deal_id: AggregateIdParam, data: JSONBody[schemas.PatchDeal]
) -> Response[Any]:
    """Correct a deal (name, expected close date, next step: ``deal.updated.v1`` naming the fields changed) or
    hand it to another rep (owner alone: ``deal.reassigned.v1``). ``If-Match`` must carry the version you last
    saw (the ``ETag``); a stale one is 409. Closed deals do not change."""
    return accepted(await _run(request, data, patch_command(deal_id, data), if_match="required"))


@post("/deals/{deal_id:str}/reopen", status_code=202, tags=["deals"], guards=[*WRITE, reaches("deal")])
async def reopen_deal(
    request: AnyRequest, deal_id: AggregateIdParam, data: JSONBody[schemas.ReopenDeal]
) -> Response[Any]:
    """Bring a lost deal back into play (``deal.reopened.v1``), in ``stage`` or the stage it was lost in. A won
    deal stays won. Metrics count a deal lost only while it is lost: see docs/read-models.md."""
    return accepted(await _run(request, data, cmd.ReopenDeal(deal_id=deal_id, stage=data.stage), if_match="required"))


# PATCH /v1/deals/{id} shares its path with GET /v1/deals/{id} (history): Litestar needs both in one router.
router = Router(path="/v1", route_handlers=[reopen_deal])
