"""Who is calling, when it is a signed-in user: their session cookie, its CSRF token on writes, their role and
team; and the one guard that keeps a user to the leads and deals their role reaches (:func:`reaches`)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import structlog
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.types import Guard
from psycopg import AsyncConnection

from events import aggregates as agg
from events.envelope import AggregateType
from events.ids import check_id
from projections.access import Viewer, may_reach, visible_owners
from services import users
from services.api.runtime import Runtime
from services.auth import ROLE_SCOPES, Caller
from services.errors import AuthError, RateLimited

AnyConnection = ASGIConnection[Any, Any, Any, Any]
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@contextlib.asynccontextmanager
async def users_connection(rt: Runtime) -> AsyncIterator[AsyncConnection[Any]]:
    """A connection to the users' tables, created on first use."""
    async with rt.read_connection() as conn:
        if not rt.users_tables_ready:
            await users.ensure_tables(conn)
            rt.users_tables_ready = True
        yield conn


def presents_key(connection: AnyConnection, allow_query_key: bool) -> bool:
    """Whether the request names an API key (which then wins over any session cookie)."""
    headers = connection.headers
    return bool(
        headers.get("authorization")
        or headers.get("x-api-key")
        or (allow_query_key and connection.query_params.get("key"))
    )


async def user_state(rt: Runtime, user_id: str) -> agg.UserState:
    return agg.fold_user(h.envelope for h in await rt.ledger.history("user", user_id))


def user_caller(user_id: str, state: agg.UserState) -> Caller:
    return Caller(
        id=user_id, scopes=ROLE_SCOPES[state.role], source="api", user=Viewer(user_id, state.role, state.team)
    )


def check_failures(rt: Runtime, address: str) -> None:
    """429 for an address over its failed authentications, before any credential is looked at."""
    wait = rt.auth_failures.wait(address)
    if wait > 0:
        limiter = rt.auth_failures
        raise RateLimited("this address", limiter.rate, limiter.burst, wait, what="failed authentications")


async def session_caller(rt: Runtime, connection: AnyConnection, address: str) -> Caller:
    """The user of the session cookie; a write must carry the session's CSRF token in ``X-CSRF-Token``."""
    check_failures(rt, address)
    token = connection.cookies.get(users.SESSION_COOKIE, "")
    async with users_connection(rt) as conn:
        user_id = await users.session_user(conn, token) if token else None
    state = await user_state(rt, user_id) if user_id else agg.UserState()
    if user_id is None or not state.active:
        rt.auth_failures.take(address)
        raise AuthError("no session, or it has expired or ended: sign in again (POST /v1/session)")
    method = str(connection.scope.get("method", "GET"))
    if method not in SAFE_METHODS and not users.csrf_matches(token, connection.headers.get(users.CSRF_HEADER)):
        raise AuthError(f"a write with a session cookie needs its {users.CSRF_HEADER} header", status=403)
    structlog.contextvars.bind_contextvars(credential=f"user:{user_id}")
    return user_caller(user_id, state)


async def identify(rt: Runtime, connection: AnyConnection, allow_query_key: bool, address: str) -> Caller:
    """An API key when the request names one, else the session cookie's user; 401 without either."""
    if not presents_key(connection, allow_query_key) and users.SESSION_COOKIE in connection.cookies:
        return await session_caller(rt, connection, address)
    return rt.authenticate(connection, allow_query_key, address)


def viewer_of(connection: AnyConnection) -> Viewer | None:
    caller: Caller = connection.state.caller
    return caller.user


async def owner_of(rt: Runtime, aggregate_type: AggregateType, aggregate_id: str) -> tuple[bool, str | None]:
    """Whether the lead or deal exists, and its owner, folded from the log."""
    history = [h.envelope for h in await rt.ledger.history(aggregate_type, aggregate_id)]
    state = agg.fold_lead(history) if aggregate_type == "lead" else agg.fold_deal(history)
    return state.exists, state.owner


def reaches(aggregate_type: AggregateType, parameter: str | None = None) -> Guard:
    """A guard after ``requires``: a signed-in user reaches only the leads or deals their role and the rules'
    ``[access]`` let them (403 otherwise); API keys pass. A new route on one lead or deal opts in with
    ``guards=[requires(scope), reaches("deal")]``; the id is the path parameter ``<type>_id``."""
    name = parameter or f"{aggregate_type}_id"

    async def guard(connection: AnyConnection, _: BaseRouteHandler) -> None:
        viewer = viewer_of(connection)
        if viewer is None:
            return
        rt: Runtime = connection.app.state.runtime
        if visible_owners(rt.settings.teams, rt.settings.access, viewer) is None:
            return  # sees everyone's: no need to read the owner
        aggregate_id = check_id(connection.path_params.get(name), name)
        exists, owner = await owner_of(rt, aggregate_type, aggregate_id)
        # A missing one is the handler's 404; one owned out of reach is 403 for reads and writes alike.
        if exists and not may_reach(rt.settings.teams, rt.settings.access, viewer, owner):
            raise AuthError(f"{viewer.role} {viewer.username!r} may not reach this {aggregate_type}", status=403)

    return guard


def owner_filter(connection: AnyConnection, owner: str | None) -> str | None:
    """The ``owner`` a signed-in user's list may ask for: their own when they name none and do not see
    everyone's; 403 for an owner out of their reach."""
    viewer = viewer_of(connection)
    if viewer is None:
        return owner
    rt: Runtime = connection.app.state.runtime
    owners = visible_owners(rt.settings.teams, rt.settings.access, viewer)
    if owners is None:
        return owner
    if owner is None:
        return viewer.username
    if owner not in owners:
        raise AuthError(f"{viewer.role} {viewer.username!r} may not see {owner!r}'s deals", status=403)
    return owner


def sees_everyone(connection: AnyConnection) -> None:
    """403 for a signed-in user who does not see everyone's leads and deals (a feed of all of them)."""
    viewer = viewer_of(connection)
    if viewer is None:
        return
    rt: Runtime = connection.app.state.runtime
    if visible_owners(rt.settings.teams, rt.settings.access, viewer) is not None:
        raise AuthError(f"{viewer.role} {viewer.username!r} sees only some deals: ask the board by owner", 403)


def owner_for_new(connection: AnyConnection, owner: str | None) -> str | None:
    """The owner of a deal a signed-in user opens: themselves when they name none; 403 for one out of reach."""
    viewer = viewer_of(connection)
    if viewer is None:
        return owner
    rt: Runtime = connection.app.state.runtime
    if owner is None:
        return viewer.username
    if not may_reach(rt.settings.teams, rt.settings.access, viewer, owner):
        raise AuthError(f"{viewer.role} {viewer.username!r} may not open a deal for {owner!r}", status=403)
    return owner
