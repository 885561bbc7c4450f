"""``dealstream users``: add a user, or set a user's password, from the command line (and the dev stack's demo
users). The user's events go to the log; the password's hash only to PostgreSQL (see services/users.py)."""

from __future__ import annotations

import datetime as dt
import sys
from typing import TextIO

import psycopg

from events import aggregates as agg
from events import commands as cmd
from events.config import NatsSettings, connect
from events.handlers import handle
from events.ids import InvalidId, check_id, uuid7
from events.ledger import Context, Ledger
from events.personal import Vault
from events.store import EventStore
from events.types import UserRole
from services import users
from services.errors import InputError


def _context() -> Context:
    return Context(actor="dealstream-cli", source="system", correlation_id=uuid7(), now=dt.datetime.now(dt.UTC))


def read_password(stream: TextIO) -> str:
    """The first line of ``stream`` without its line ending (a password may hold spaces)."""
    return users.check_password(stream.readline().rstrip("\r\n"))


async def ensure_user(
    nats: NatsSettings, database_url: str, username: str, role: UserRole, password: str | None, team: str | None = None
) -> tuple[bool, str | None]:
    """Create ``username`` with ``password`` (None: a one-time password, returned second) unless they exist:
    then (False, None), and nothing is changed (a demo user's password stays what its owner made it)."""
    nc, js = await connect(nats, "dealstream-users")
    try:
        ledger = Ledger(EventStore(nc, js, nats.naming, nats.publish_timeout), Vault(js, nats.naming))
        if agg.fold_user(h.envelope for h in await ledger.history("user", username)).exists:
            return False, None
        ctx = _context()
        await handle(ledger, ctx, cmd.CreateUser(username=username, role=role, team=team))
        made = password or users.new_password()
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            await users.ensure_tables(conn)
            await users.set_password(conn, ledger, ctx, username, made)
        return True, None if password else made
    finally:
        await nc.close()


async def add(
    nats: NatsSettings, database_url: str, name: str, role: UserRole, team: str | None, from_stdin: bool
) -> int:
    """``dealstream users add NAME --role R``: prints the one-time password, or takes one from stdin."""
    try:
        username = check_id(name, "username")
        password = read_password(sys.stdin) if from_stdin else None
        created, made = await ensure_user(nats, database_url, username, role, password, team)
    except (InvalidId, InputError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except agg.Rejected as exc:
        print(f"error: {exc.reason}", file=sys.stderr)
        return 2
    if not created:
        print(f"error: user {username!r} already exists (dealstream users password {username})", file=sys.stderr)
        return 1
    print(f"user {username!r} created with role {role}")
    if made is not None:
        print(f"one-time password (shown once; they should set their own): {made}")
    return 0


async def reset(nats: NatsSettings, database_url: str, name: str, from_stdin: bool) -> int:
    """``dealstream users password NAME``: a new password (printed once, or from stdin); their sessions end."""
    try:
        username = check_id(name, "username")
        password = read_password(sys.stdin) if from_stdin else users.new_password()
        nc, js = await connect(nats, "dealstream-users")
        try:
            ledger = Ledger(EventStore(nc, js, nats.naming, nats.publish_timeout), Vault(js, nats.naming))
            async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
                await users.ensure_tables(conn)
                await users.set_password(conn, ledger, _context(), username, password)
        finally:
            await nc.close()
    except (InvalidId, InputError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except agg.Rejected as exc:
        print(f"error: {exc.reason}", file=sys.stderr)
        return 2
    print(f"password of {username!r} set" + ("" if from_stdin else f"; one-time password: {password}"))
    return 0
