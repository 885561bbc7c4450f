"""``POST /v1/imports``: one CRM export file as the body (text/csv, bounded by ``max_body_bytes``), dry-run or
imported through the same plan and handlers as ``dealstream import``."""

from __future__ import annotations

from typing import Annotated, Literal

from litestar import Router, post
from litestar.params import FromQuery, QueryParameter

from services.api.common import AnyRequest, caller_of, context, requires, runtime
from services.errors import InputError
from services.imports import command
from services.imports.runner import Report, read_plan, run, summary

Crm = Literal["pipedrive", "hubspot", "zendesk-sell"]
Kind = Literal["deals", "leads", "people"]


@post("/imports", status_code=200, tags=["imports"], guards=[requires("deals:write")])
async def import_file(
    request: AnyRequest,
    crm: FromQuery[Crm],
    kind: FromQuery[Kind] = "deals",
    dry_run: Annotated[bool, QueryParameter(description="check every row, append nothing")] = False,
    zone: Annotated[str, QueryParameter(description="the zone of zone-less times, e.g. Europe/Warsaw")] = "UTC",
) -> Report:
    """Import one export file of ``crm`` (the body, as the CRM wrote it: any of the encodings, separators and
    formats ``dealstream import`` reads); the answer counts what was (or, dry, would be) imported and lists every
    rejected row with its column and reason. Importing the same file again appends nothing."""
    if kind == "leads":
        caller_of(request).require("leads:write")
    try:
        tz = command.zone(zone)
    except command.UsageError as exc:
        raise InputError.one("zone", str(exc).split(": ", 1)[1]) from None
    body = await request.body()
    if not body:
        raise InputError.one("body", "is empty: send the CSV file as the request body")
    plan = read_plan(crm, {kind: (f"{kind}.csv", body)}, tz)
    if dry_run:
        return summary(plan, dry_run=True)
    return await run(plan, runtime(request).ledger, context(request))


router = Router(path="/v1", route_handlers=[import_file])
