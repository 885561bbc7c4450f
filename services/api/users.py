"""The users' admin API: create users, list them, change their role, team or standing, set their password."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Annotated, Literal

import msgspec
from litestar import Response, Router, get, patch, post
from litestar.params import JSONBody, QueryParameter

from events import aggregates as agg
from events import commands as cmd
from events.handlers import handle
from events.ids import check_id
from events.ledger import Context
from events.types import UserRole
from projections.access import Viewer, team_of
from services import users
from services.api.common import AggregateIdParam, AnyRequest, caller_of, context, requires, runtime
from services.api.identity import check_failures, user_state, users_connection
from services.api.session import Password
from services.errors import AuthError, InputError

ADMIN = [requires("users:write")]
TeamName = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class NewUser(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A user; without ``password`` a one-time password is made and answered once."""

    username: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    role: UserRole
    team: TeamName | None = None
    password: Password | None = None


class UserChange(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What to change; a field left out stays as it is (``team: null`` goes back to the rules file's team)."""

    role: UserRole | msgspec.UnsetType = msgspec.UNSET
    team: TeamName | msgspec.UnsetType | None = msgspec.UNSET
    active: bool | msgspec.UnsetType = msgspec.UNSET
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None


class NewPassword(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``password`` (none: a one-time password is made and answered once); ``current_password`` when a user sets
    their own without ``users:write``."""

    password: Password | None = None
    current_password: Password | None = None


class UserView(msgspec.Struct, frozen=True, omit_defaults=True):
    username: str
    role: UserRole
    team: str | None
    """The record's team, else the rules file's team listing them."""
    active: bool
    password_set: bool
    version: int
    one_time_password: str | None = None
    """Only in the answer that made it: hand it to the user, who should set their own."""


class UserList(msgspec.Struct, frozen=True):
    users: list[UserView]
    next_after: str | None


def _view(request: AnyRequest, user_id: str, state: agg.UserState, version: int, password: str | None) -> UserView:
    team = team_of(runtime(request).settings.teams, Viewer(user_id, state.role, state.team))
    return UserView(user_id, state.role, team, state.active, state.password_set, version, password)


def _check_team(request: AnyRequest, team: str | None) -> None:
    teams = runtime(request).settings.teams
    if team is not None and teams and team not in teams:
        raise InputError.one("team", f"no team {team!r} in the rules file; known: {sorted(teams)}")


async def _answer(request: AnyRequest, user_id: str, status: int, password: str | None = None) -> Response[UserView]:
    history = await runtime(request).ledger.history("user", user_id)
    state = agg.fold_user(h.envelope for h in history)
    version = history[-1].sequence if history else 0
    return Response(
        _view(request, user_id, state, version, password), status_code=status, headers={"ETag": f'"{version}"'}
    )


async def _set_password(
    request: AnyRequest, user_id: str, password: str | None, by: Literal["admin", "self"]
) -> str | None:
    """Set ``password`` (or a new one-time one, which is returned); the body is not fingerprinted: a digest of
    a password is a credential too."""
    rt = runtime(request)
    made = None if password is not None else users.new_password()
    async with users_connection(rt) as conn:
        await users.set_password(conn, rt.ledger, context(request), user_id, password or made or "", by)
    return made


@post("/users", status_code=201, tags=["users"], guards=ADMIN)
async def create_user(request: AnyRequest, data: JSONBody[NewUser]) -> Response[UserView]:
    """Create a user (their username is their id and the name their deals are owned by), with a password."""
    username = check_id(data.username, "username")
    _check_team(request, data.team)
    if data.password is not None:
        users.check_password(data.password)
    rt = runtime(request)
    body = msgspec.structs.replace(data, password=None)
    await handle(
        rt.ledger, context(request, body=body), cmd.CreateUser(username=username, role=data.role, team=data.team)
    )
    made = await _set_password(request, username, data.password, "admin")
    return await _answer(request, username, 201, made)


@get("/users", tags=["users"], guards=ADMIN)
async def list_users(
    request: AnyRequest,
    after: Annotated[str | None, QueryParameter(description="the last username of the previous page")] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
) -> UserList:
    """Users in username order, each folded from the log: the stream names every user's subject, so a page reads
    only its own users' events."""
    rt = runtime(request)
    naming = rt.store.naming
    info = await rt.store.js.stream_info(naming.events_stream, subjects_filter=naming.events_of_type("user"))
    names = sorted(n for n in (s.rsplit(".", 1)[-1] for s in (info.state.subjects or {})) if after is None or n > after)
    page = names[:limit]
    histories = await asyncio.gather(*(rt.ledger.history("user", n) for n in page))
    views = [
        _view(request, n, agg.fold_user(h.envelope for h in history), history[-1].sequence, None)
        for n, history in zip(page, histories, strict=True)
        if history
    ]
    return UserList(views, page[-1] if len(names) > limit else None)


def _part(ctx: Context, part: str) -> Context:
    """One change of several in a request: its own idempotency key, so that the second is not taken for a retry
    of the first (both land on the user's aggregate)."""
    key = ctx.idempotency_key
    return dataclasses.replace(ctx, idempotency_key=f"{key}#{part}") if key else ctx


@patch("/users/{user_id:str}", tags=["users"], guards=ADMIN)
async def change_user(request: AnyRequest, user_id: AggregateIdParam, data: JSONBody[UserChange]) -> Response[UserView]:
    """Change a user's role or team, deactivate them (their sessions end) or reactivate them."""
    rt = runtime(request)
    state = await user_state(rt, user_id)
    if not state.exists:
        raise agg.Rejected("user_id", "no such user", 404)
    ctx = context(request, body=data)
    if data.role is not msgspec.UNSET or data.team is not msgspec.UNSET:
        role = state.role if data.role is msgspec.UNSET else data.role
        team = state.team if data.team is msgspec.UNSET else data.team
        _check_team(request, team)
        if (role, team) != (state.role, state.team):
            await handle(rt.ledger, _part(ctx, "role"), cmd.ChangeUserRole(user_id=user_id, role=role, team=team))
    if data.active is False and state.active:
        await handle(rt.ledger, _part(ctx, "active"), cmd.DeactivateUser(user_id=user_id, reason=data.reason))
        async with users_connection(rt) as conn:
            await users.end_sessions_of(conn, user_id)
    elif data.active is True and not state.active:
        await handle(rt.ledger, _part(ctx, "active"), cmd.ReactivateUser(user_id=user_id))
    return await _answer(request, user_id, 200)


@post("/users/{user_id:str}/password", status_code=200, tags=["users"], guards=[requires(None)])
async def set_user_password(
    request: AnyRequest, user_id: AggregateIdParam, data: JSONBody[NewPassword]
) -> Response[UserView]:
    """Set a user's password (``users:write``; none given: a one-time password, answered once), or, signed in,
    your own with ``current_password``. The user's sessions end."""
    caller = caller_of(request)
    if "users:write" in caller.scopes:
        by: Literal["admin", "self"] = "admin"
    elif caller.user is not None and caller.user.username == user_id:
        by = "self"
        if data.password is None:
            raise InputError.one("password", "required when you set your own")
        rt = runtime(request)
        address = rt.client_address(request)
        check_failures(rt, address)
        async with users_connection(rt) as conn:
            if data.current_password is None or not await users.verify_password(conn, user_id, data.current_password):
                # Counted like a failed sign-in: a stolen session cannot guess the password it would lock in.
                rt.auth_failures.take(address)
                raise AuthError("current_password is wrong", status=403)
    else:
        raise AuthError(f"credential {caller.id!r} lacks scope 'users:write'", status=403)
    if data.password is not None:
        users.check_password(data.password)
    made = await _set_password(request, user_id, data.password, by)
    return await _answer(request, user_id, 200, made)


router = Router(path="/v1", route_handlers=[create_user, list_users, change_user, set_user_password])
