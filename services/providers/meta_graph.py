"""Meta Lead Ads' second half: fetch the fields of an id-only lead from the Graph API and record them once.

Meta's webhook names the lead (``leadgen_id``) and its page; the person's answers come from ``GET /{leadgen_id}``
made with that page's access token. The token is a credential: it travels in the ``Authorization`` header (never
in a URL an error could print) and is scrubbed from anything logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from typing import Literal

import httpx
import msgspec
import psycopg
import structlog

from events import aggregates as agg
from events.commands import RaiseAlert, RecordLeadDetails
from events.config import connect
from events.handlers import raise_alert, record_lead_details
from events.ids import derived_id
from events.ledger import Accepted, Context, Ledger
from events.personal import Vault
from events.store import ConcurrencyError, EventStore
from events.types import AlertRaised, LeadCaptured, LeadDetailsFetched
from projections.routes import needs_details
from projections.routing_store import awaiting_details
from projections.versions import serving_build
from services.errors import InputError
from services.providers.meta import parse_graph_lead
from workers.settings import GraphSettings, Settings

log = structlog.get_logger("dealstream.meta")
# httpx and httpcore log every request's URL, and a Graph URL names Meta's lead id, which the log seals like the
# capture's source ids: their request lines are kept out. Our own lines name the lead by its Dealstream id only.
for _name in ("httpx", "httpcore"):
    logging.getLogger(_name).setLevel(logging.WARNING)

ErrorKind = Literal["expired_token", "rate_limit", "unavailable", "refused", "no_token"]
RATE_LIMIT_CODES = frozenset({4, 17, 32, 613})
"""Graph API error codes that mean "too many calls": application, user, page and custom rate limits."""
EXPIRED_TOKEN_CODE = 190
ALERT_POLICY = "meta_graph"
"""The ``policy`` of the admin alert raised when a lead's fields could not be fetched."""


class _GraphErrorBody(msgspec.Struct, frozen=True):
    message: str = ""
    type: str = ""
    code: int = 0
    error_subcode: int | None = None


class _GraphErrorAnswer(msgspec.Struct, frozen=True):
    error: _GraphErrorBody


class GraphError(Exception):
    """A Graph API call that failed: what kind of failure, Meta's code and message (never the token)."""

    def __init__(self, kind: ErrorKind, message: str, code: int | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind
        self.code = code
        self.status = status


def _scrubbed(text: str, token: str, leadgen_id: str = "") -> str:
    # Meta quotes back what it was asked about: the token is a credential, the lead's id is sealed like a capture's.
    for value, shown in ((token, "[token]"), (leadgen_id, "[leadgen_id]")):
        text = text.replace(value, shown) if value else text
    return text


def graph_error(status: int, body: bytes, token: str, leadgen_id: str = "") -> GraphError:
    """The failure an HTTP answer other than 200 means, from Meta's ``{"error": {...}}`` body when it has one."""
    try:
        error = msgspec.json.decode(body, type=_GraphErrorAnswer).error
    except msgspec.DecodeError:
        kind: ErrorKind = "unavailable" if status >= 500 or status == 429 else "refused"
        return GraphError(kind, f"HTTP {status} without a Graph error body", None, status)
    message = _scrubbed(error.message, token, leadgen_id)[:500]
    if error.code == EXPIRED_TOKEN_CODE:
        return GraphError("expired_token", message, error.code, status)
    if error.code in RATE_LIMIT_CODES or status == 429:
        return GraphError("rate_limit", message, error.code, status)
    if status >= 500 or error.code in (1, 2):  # 1 unknown and 2 service errors: Meta says retry
        return GraphError("unavailable", message, error.code, status)
    return GraphError("refused", message, error.code, status)


async def fetch_graph_lead(
    client: httpx.AsyncClient, settings: GraphSettings, leadgen_id: str, page_id: str | None, lead_id: str
) -> bytes:
    """The Graph API's answer for one lead, retried with exponential backoff; ``GraphError`` past the attempts.

    Every failure is retried (an expired token too: the admin may renew it meanwhile) and logged with Meta's
    code and message, the token scrubbed."""
    token = settings.page_tokens.get(page_id)
    if not token:
        raise GraphError("no_token", "no access token is configured for the lead's page")
    url = f"{settings.base_url.rstrip('/')}/{settings.version}/{leadgen_id}"
    backoff = settings.backoff
    error = GraphError("unavailable", "not tried")
    for attempt in range(1, settings.attempts + 1):
        try:
            answer = await client.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=settings.timeout)
        except httpx.HTTPError as exc:
            error = GraphError("unavailable", _scrubbed(f"{type(exc).__name__}: {exc}", token, leadgen_id))
        else:
            if answer.status_code == 200:
                return answer.content
            error = graph_error(answer.status_code, answer.content, token, leadgen_id)
        last = attempt == settings.attempts
        log.warning(
            "meta.fetch_failed",
            lead_id=lead_id,
            kind=error.kind,
            code=error.code,
            status=error.status,
            error=str(error),
            attempt=attempt,
            backoff=None if last else backoff,
        )
        if last or error.kind == "refused":
            break
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, settings.max_backoff)
    raise error


def details_of(body: bytes) -> LeadDetailsFetched:
    """The personal fields of a Graph API lead, mapped like every provider's (``services/providers/fields.py``)."""
    lead = parse_graph_lead(body).lead
    return LeadDetailsFetched(
        provider="meta",
        email=lead.email,
        phone=lead.phone,
        first_name=lead.first_name,
        last_name=lead.last_name,
        full_name=lead.full_name,
        company=lead.company,
        job_title=lead.job_title,
        answers=dict(lead.answers),
    )


async def fetch_details(
    ledger: Ledger,
    client: httpx.AsyncClient,
    settings: GraphSettings,
    lead_id: str,
    now: dt.datetime | None = None,
    actor: str = "meta-fetcher",
) -> Accepted | None:
    """Fetch and record the fields of the Meta lead ``lead_id``, once; past the attempts, raise an admin alert.

    None when there is nothing to do: not a Meta lead, already fetched, erased, or the fields came with the
    capture."""
    now = now or dt.datetime.now(dt.UTC)
    history = await ledger.history("lead", lead_id)
    if not history or ledger.vault is None:
        return None
    state = agg.fold_lead(h.envelope for h in history)
    if state.erased or state.details_fetched:
        return None
    (captured,) = await ledger.vault.unsealed([history[0].envelope])
    data = captured.data
    if not isinstance(data, LeadCaptured) or not needs_details(data, captured.source):
        return None
    ctx = Context(actor=actor, source="system", correlation_id=captured.correlation_id, now=now)
    leadgen_id = data.source_ref or ""
    page_id = data.campaign.get("page_id")
    try:
        details = details_of(await fetch_graph_lead(client, settings, leadgen_id, page_id, lead_id))
    except (GraphError, InputError) as exc:
        kind = exc.kind if isinstance(exc, GraphError) else "refused"
        log.error("meta.fetch_gave_up", lead_id=lead_id, kind=kind)
        alert = AlertRaised(
            kind="source_fetch",
            policy=ALERT_POLICY,
            subject_type="lead",
            subject_id=lead_id,
            deadline=now,
            rep=settings.admin,
        )
        command = RaiseAlert(alert_id=derived_id("meta-fetch", lead_id), alert=alert, occurred_at=now)
        with contextlib.suppress(agg.Rejected, ConcurrencyError):  # raised already by an earlier attempt
            await raise_alert(ledger, ctx, command)
        return None
    try:
        return await record_lead_details(ledger, ctx, RecordLeadDetails(lead_id=lead_id, details=details))
    except (agg.Rejected, ConcurrencyError):
        return None  # recorded or erased meanwhile


async def run_fetcher(settings: Settings, stop: asyncio.Event, poll: float = 1.0) -> None:
    """``dealstream worker meta``: fetch the fields of every lead the serving routing build holds as awaiting
    them, until ``stop``; survives NATS and PostgreSQL outages like the actors.

    Each lead is tried once per process: one given up on raised its admin alert, and waits for the restart that
    a renewed page token (``DEALSTREAM_META_PAGE_TOKENS``) takes anyway."""
    url = settings.require_database_url()
    naming = settings.nats.naming
    tried: set[str] = set()
    backoff = 0.2
    while not stop.is_set():
        try:
            nc, js = await connect(settings.nats, "dealstream-meta-fetcher")
            try:
                ledger = Ledger(
                    EventStore(nc, js, naming, settings.nats.publish_timeout), Vault(js, naming), cached_events=1_000
                )
                async with (
                    await psycopg.AsyncConnection.connect(url, autocommit=True) as conn,
                    httpx.AsyncClient() as client,
                ):
                    while not stop.is_set():
                        build = await serving_build(conn, "routing")
                        for lead_id in await awaiting_details(conn, build.build) if build else []:
                            if lead_id not in tried and not stop.is_set():
                                await fetch_details(ledger, client, settings.meta_graph, lead_id)
                                tried.add(lead_id)
                        backoff = 0.2
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(stop.wait(), poll)
            finally:
                with contextlib.suppress(Exception):
                    await nc.close()
        except Exception as exc:
            log.warning("meta.retry", error=f"{type(exc).__name__}: {exc}", backoff=backoff)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff)
            backoff = min(backoff * 2, 10.0)
