"""Users' secrets beside the log: Argon2id password hashes and browser sessions, in PostgreSQL.

The log records that a password was set (``user.password_set.v1``), never the hash: a hash is a credential, and
the log is kept forever, copied to auditors and read by every consumer. The hash lives in ``user_credentials``,
written only here (the API's command path and ``dealstream users``), replaced when the password changes. A
session is a random token in an HttpOnly cookie; only its SHA-256 is stored, with its expiry.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import secrets
from functools import cache
from typing import Any, Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from psycopg import AsyncConnection

from events import commands as cmd
from events.handlers import handle
from events.ledger import Accepted, Context, Ledger
from services.errors import InputError

SESSION_COOKIE = "dealstream_session"
CSRF_HEADER = "X-CSRF-Token"
PASSWORD_MIN = 12
PASSWORD_MAX = 256
"""Argon2 hashes any length, but a megabyte-long guess should not cost a megabyte of hashing."""

DDL = (
    "CREATE TABLE IF NOT EXISTS user_credentials (user_id text PRIMARY KEY, argon2id text NOT NULL, "
    "set_at timestamptz NOT NULL DEFAULT now())",
    "CREATE TABLE IF NOT EXISTS user_sessions (token_sha256 text PRIMARY KEY, user_id text NOT NULL, "
    "created_at timestamptz NOT NULL DEFAULT now(), expires_at timestamptz NOT NULL)",
    "CREATE INDEX IF NOT EXISTS user_sessions_user ON user_sessions (user_id)",
)

_hasher = PasswordHasher()  # Argon2id, argon2-cffi's RFC 9106 low-memory profile


@cache
def _decoy() -> str:
    """A hash no password matches: an unknown user's sign-in checks it, so it costs what a known user's does."""
    return _hasher.hash(secrets.token_urlsafe(32))


def check_password(password: str, field: str = "password") -> str:
    """The password, or 422 naming ``field`` when it is too short or too long."""
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        raise InputError.one(field, f"must be {PASSWORD_MIN} to {PASSWORD_MAX} characters")
    return password


def new_password() -> str:
    """A one-time password to hand to a new user (about 128 bits)."""
    return secrets.token_urlsafe(16)


async def ensure_tables(conn: AsyncConnection[Any]) -> None:
    for statement in DDL:
        await conn.execute(statement)


async def verify_password(conn: AsyncConnection[Any], user_id: str | None, password: str) -> bool:
    """Whether ``password`` is ``user_id``'s; an unknown user is checked against a decoy, in the same time."""
    stored = None
    if user_id is not None:
        row = await (
            await conn.execute("SELECT argon2id FROM user_credentials WHERE user_id = %s", (user_id,))
        ).fetchone()
        stored = row[0] if row else None

    def verify() -> bool:
        try:
            return _hasher.verify(stored or _decoy(), password) and stored is not None
        except (VerificationError, InvalidHashError):
            return False

    # Argon2 takes tens of milliseconds of CPU on purpose: off the event loop.
    return await asyncio.to_thread(verify)


async def set_password(
    conn: AsyncConnection[Any],
    ledger: Ledger,
    ctx: Context,
    user_id: str,
    password: str,
    by: Literal["admin", "self"] = "admin",
) -> Accepted:
    """Store the password's Argon2id hash and record ``user.password_set.v1``; the user's sessions end.

    The hash is written in a transaction that commits only once the event is in the log, so the log never says
    less than the table holds (a failed append leaves the old password)."""
    hashed = await asyncio.to_thread(_hasher.hash, check_password(password))
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO user_credentials (user_id, argon2id) VALUES (%s, %s) "
            "ON CONFLICT (user_id) DO UPDATE SET argon2id = EXCLUDED.argon2id, set_at = now()",
            (user_id, hashed),
        )
        await conn.execute("DELETE FROM user_sessions WHERE user_id = %s", (user_id,))
        return await handle(ledger, ctx, cmd.RecordPasswordSet(user_id=user_id, by=by))


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def csrf_token(session_token: str) -> str:
    """The CSRF token of a session: derived from its token, which page scripts cannot read (HttpOnly), so only a
    page that asked ``/v1/session`` or ``/v1/me`` knows it."""
    return hmac.new(session_token.encode(), b"dealstream-csrf", hashlib.sha256).hexdigest()


def csrf_matches(session_token: str, presented: str | None) -> bool:
    return presented is not None and hmac.compare_digest(csrf_token(session_token), presented)


async def open_session(conn: AsyncConnection[Any], user_id: str, hours: float) -> tuple[str, dt.datetime]:
    """A new session of ``user_id``: its token (stored hashed) and when it expires."""
    token = secrets.token_urlsafe(32)
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(hours=hours)
    await conn.execute(
        "INSERT INTO user_sessions (token_sha256, user_id, expires_at) VALUES (%s, %s, %s)",
        (_digest(token), user_id, expires),
    )
    # Expired sessions are swept as new ones open: the table stays as large as the sessions in use.
    await conn.execute("DELETE FROM user_sessions WHERE expires_at < now()")
    return token, expires


async def session_user(conn: AsyncConnection[Any], token: str) -> str | None:
    """The user of an unexpired session, or None."""
    cur = await conn.execute(
        "SELECT user_id FROM user_sessions WHERE token_sha256 = %s AND expires_at > now()", (_digest(token),)
    )
    row = await cur.fetchone()
    return str(row[0]) if row else None


async def end_session(conn: AsyncConnection[Any], token: str) -> None:
    await conn.execute("DELETE FROM user_sessions WHERE token_sha256 = %s", (_digest(token),))


async def end_sessions_of(conn: AsyncConnection[Any], user_id: str) -> None:
    await conn.execute("DELETE FROM user_sessions WHERE user_id = %s", (user_id,))
