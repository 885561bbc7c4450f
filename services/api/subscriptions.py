"""Webhook subscriptions over HTTP: create, list, delete, their deliveries, and replays from a stream sequence."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import secrets
import socket
import urllib.parse
from typing import Annotated, Any

import msgspec
from litestar import Response, Router, delete, get, post
from litestar.params import JSONBody, PathParameter, QueryParameter

from events.aggregates import Rejected
from events.ids import check_id, uuid7
from projections.subscriptions import FILTER_FIELDS, EventPattern, Subscription, target_allowed
from projections.subscriptions_store import (
    WebhookDelivery,
    create_subscription,
    delete_subscription,
    ensure_tables,
    list_deliveries,
    list_subscriptions,
    request_replay,
)
from services.api.common import AnyRequest, caller_of, requires, runtime
from services.errors import InputError

IdParam = Annotated[str, PathParameter(description="Subscription id")]
READ = [requires("subscriptions:read")]
WRITE = [requires("subscriptions:write")]


class NewSubscription(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    url: Annotated[str, msgspec.Meta(max_length=2000)]
    event_types: Annotated[list[EventPattern], msgspec.Meta(min_length=1, max_length=50)]
    filter: dict[str, Annotated[str, msgspec.Meta(min_length=1, max_length=200)]] = {}
    active: bool = True
    description: Annotated[str, msgspec.Meta(max_length=500)] | None = None


class CreatedSubscription(msgspec.Struct, frozen=True, kw_only=True):
    """The subscription and its signing secret, shown this once only."""

    subscription: Subscription
    secret: str


class ReplayRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    from_sequence: Annotated[int, msgspec.Meta(ge=1)]


class ReplayAccepted(msgspec.Struct, frozen=True, kw_only=True):
    replay_id: str
    subscription_id: IdParam
    from_sequence: int


async def check_target(url: str, allowed_networks: list[str]) -> None:
    """422 on ``url`` unless it is http(s) with a host every address of which is public or allow-listed: a
    subscription must not make the worker call into the private network (SSRF)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError.one("url", "must be an http or https URL with a host")
    if parts.username or parts.password:
        raise InputError.one("url", "must not carry credentials")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise InputError.one("url", "has an invalid port") from None
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise InputError.one("url", f"host {parts.hostname!r} does not resolve") from None
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if not target_allowed(address, allowed_networks):
            raise InputError.one(
                "url", f"resolves to {address}, a private, loopback or reserved address that is not allowed"
            )


def _check_filter(filter: dict[str, str]) -> None:
    for field, value in filter.items():
        if field not in FILTER_FIELDS:
            raise InputError.one(f"filter.{field}", f"unknown filter field; known: {', '.join(FILTER_FIELDS)}")
        if field.endswith("_id"):
            check_id(value, f"filter.{field}")


@post("/subscriptions", status_code=201, tags=["subscriptions"], guards=WRITE)
async def create(request: AnyRequest, data: JSONBody[NewSubscription]) -> CreatedSubscription:
    """Subscribe a URL to the events of the given types (and filter); the answer holds the signing secret, once."""
    _check_filter(data.filter)
    rt = runtime(request)
    await check_target(data.url, rt.settings.config.subscription_allowed_networks)
    subscription = Subscription(
        subscription_id=uuid7(),
        url=data.url,
        event_types=list(data.event_types),
        filter=dict(data.filter),
        active=data.active,
        description=data.description,
        created_at=dt.datetime.now(dt.UTC),
        created_by=caller_of(request).id,
    )
    secret = secrets.token_urlsafe(32)
    async with rt.read_connection() as conn:
        await ensure_tables(conn)
        await create_subscription(conn, subscription, secret)
    return CreatedSubscription(subscription=subscription, secret=secret)


@get("/subscriptions", tags=["subscriptions"], guards=READ)
async def list_all(request: AnyRequest) -> list[Subscription]:
    """Every subscription not deleted, oldest first (without secrets)."""
    async with runtime(request).read_connection() as conn:
        await ensure_tables(conn)
        return await list_subscriptions(conn)


async def _one(conn: Any, subscription_id: IdParam) -> Subscription:
    found = await list_subscriptions(conn, subscription_id)
    if not found:
        raise Rejected("subscription_id", "no such subscription", 404)
    return found[0]


@get("/subscriptions/{subscription_id:str}", tags=["subscriptions"], guards=READ)
async def get_one(request: AnyRequest, subscription_id: IdParam) -> Subscription:
    async with runtime(request).read_connection() as conn:
        await ensure_tables(conn)
        return await _one(conn, subscription_id)


@delete("/subscriptions/{subscription_id:str}", status_code=204, tags=["subscriptions"], guards=WRITE)
async def remove(request: AnyRequest, subscription_id: IdParam) -> None:
    """Stop the subscription: its secret is wiped and its pending deliveries cancelled."""
    async with runtime(request).read_connection() as conn:
        await ensure_tables(conn)
        if not await delete_subscription(conn, subscription_id, dt.datetime.now(dt.UTC), caller_of(request).id):
            raise Rejected("subscription_id", "no such subscription", 404)


@get("/subscriptions/{subscription_id:str}/deliveries", tags=["subscriptions"], guards=READ)
async def deliveries(
    request: AnyRequest, subscription_id: IdParam, limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100
) -> list[WebhookDelivery]:
    """The subscription's deliveries in log order (replays after), each with every attempt."""
    async with runtime(request).read_connection() as conn:
        await ensure_tables(conn)
        await _one(conn, subscription_id)
        return await list_deliveries(conn, subscription_id, limit)


@post("/subscriptions/{subscription_id:str}/replay", status_code=202, tags=["subscriptions"], guards=WRITE)
async def replay(
    request: AnyRequest, subscription_id: IdParam, data: JSONBody[ReplayRequest]
) -> Response[ReplayAccepted]:
    """Send the subscription's events again from a stream sequence to the end of the log (as new deliveries)."""
    async with runtime(request).read_connection() as conn:
        await ensure_tables(conn)
        subscription = await _one(conn, subscription_id)
        if not subscription.active:
            raise Rejected("subscription_id", "the subscription is not active", 409)
        replay_id = await request_replay(
            conn, subscription_id, data.from_sequence, dt.datetime.now(dt.UTC), caller_of(request).id
        )
    return Response(
        ReplayAccepted(replay_id=replay_id, subscription_id=subscription_id, from_sequence=data.from_sequence),
        status_code=202,
    )


router = Router(path="/v1", route_handlers=[create, list_all, get_one, remove, deliveries, replay])
