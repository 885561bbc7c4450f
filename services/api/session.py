"""Browser sessions: sign in with a username and password, sign out, and who am I."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import msgspec
from litestar import Response, Router, delete, get, post
from litestar.datastructures import Cookie
from litestar.params import JSONBody

from events.ids import is_valid_aggregate_id
from projections.access import team_of
from services import users
from services.api.common import AnyRequest, caller_of, requires, runtime
from services.api.identity import check_failures, user_caller, user_state, users_connection
from services.errors import AuthError, InputError, RateLimited

Password = Annotated[str, msgspec.Meta(min_length=1, max_length=users.PASSWORD_MAX)]


class SignIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    username: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    password: Password


class Me(msgspec.Struct, frozen=True, omit_defaults=True):
    """Who the credential is: a user (role, team, what they may do) or an API key (its scopes)."""

    id: str
    kind: str
    scopes: list[str]
    role: str | None = None
    team: str | None = None
    csrf_token: str | None = None
    """A session's token for ``X-CSRF-Token``: every write made with the session cookie must carry it."""
    expires_at: dt.datetime | None = None


WRONG = "wrong username or password"
"""One answer for an unknown user, a deactivated one and a wrong password: it must not say which."""


def _me(request: AnyRequest, user_id: str, token: str | None) -> Me:
    caller = caller_of(request)
    teams = runtime(request).settings.teams
    viewer = caller.user
    assert viewer is not None
    return Me(
        user_id,
        "user",
        sorted(caller.scopes),
        viewer.role,
        team_of(teams, viewer),
        users.csrf_token(token) if token else None,
    )


@post("/session", status_code=200, tags=["session"], security=[])
async def sign_in(request: AnyRequest, data: JSONBody[SignIn]) -> Response[Me]:
    """Sign in: a session cookie (HttpOnly, SameSite=Strict, Secure over https) and, in the body, the CSRF token
    every write made with the cookie must send as ``X-CSRF-Token``. A wrong username or password is 401 and does
    not say which; failed attempts per address and per username are limited (429)."""
    rt = runtime(request)
    address = rt.client_address(request)
    check_failures(rt, address)
    wait = rt.sign_in_failures.wait(data.username)
    if wait > 0:
        limiter = rt.sign_in_failures
        raise RateLimited("this username", limiter.rate, limiter.burst, wait, what="failed sign-ins")
    state = await user_state(rt, data.username) if is_valid_aggregate_id(data.username) else None
    known = state is not None and state.active
    async with users_connection(rt) as conn:
        if not await users.verify_password(conn, data.username if known else None, data.password) or state is None:
            rt.auth_failures.take(address)
            rt.sign_in_failures.take(data.username)
            raise AuthError(WRONG)
        hours = rt.settings.config.session_hours
        token, expires = await users.open_session(conn, data.username, hours)
    request.state.caller = user_caller(data.username, state)
    secure = rt.settings.config.session_cookie_secure
    cookie = Cookie(
        key=users.SESSION_COOKIE,
        value=token,
        path="/v1",
        max_age=int(hours * 3600),
        httponly=True,
        samesite="strict",
        secure=rt.over_https(request) if secure is None else secure,
    )
    me = msgspec.structs.replace(_me(request, data.username, token), expires_at=expires)
    return Response(me, cookies=[cookie], headers={"Cache-Control": "no-store"})


@delete("/session", status_code=204, tags=["session"], guards=[requires(None)])
async def sign_out(request: AnyRequest) -> Response[None]:
    """End this session (a write: the cookie needs its ``X-CSRF-Token``)."""
    if caller_of(request).user is None:
        raise InputError.one("credential", "an API key has no session to end", 400)
    async with users_connection(runtime(request)) as conn:
        await users.end_session(conn, request.cookies.get(users.SESSION_COOKIE, ""))
    response: Response[None] = Response(None, status_code=204)
    response.delete_cookie(users.SESSION_COOKIE, path="/v1")
    return response


@get("/me", tags=["session"], guards=[requires(None)])
async def me(request: AnyRequest) -> Response[Me]:
    """The signed-in user (role, team, scopes, the session's CSRF token) or the API key's id and scopes."""
    caller = caller_of(request)
    if caller.user is None:
        return Response(Me(caller.id, "api_key", sorted(caller.scopes)))
    token = request.cookies.get(users.SESSION_COOKIE)
    return Response(_me(request, caller.id, token), headers={"Cache-Control": "no-store"})


router = Router(path="/v1", route_handlers=[sign_in, sign_out, me])
