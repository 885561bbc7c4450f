"""Users, roles and browser sessions against the real servers: sign in and out, cookie flags, CSRF, brute force,
who may move and read which deal, the auditor, and that no password hash reaches the log or the logs."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
import psycopg
import pytest
import structlog
from litestar import Litestar
from litestar.testing import AsyncTestClient

from events.config import NatsSettings
from events.scan import scan
from events.subjects import Naming
from projections.rules import sales_rules_from_toml
from services.config import ApiConfig, Settings
from tests.conftest import ADMIN_KEY, api_config, wait_healthy

pytestmark = pytest.mark.integration

Client = AsyncTestClient[Litestar]
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
RULES = sales_rules_from_toml(
    """
[teams.inside-sales]
members = ["ana", "bo"]
manager = "maria"

[teams.enterprise]
members = ["chen"]
manager = "li"

[access]
reps_see = "team"
"""
)
PIPELINE = {
    "name": "Sales",
    "stages": [{"id": "new", "name": "New", "probability": 0.1}, {"id": "won", "name": "Won", "probability": 0.9}],
}
PASSWORD = "correct horse battery staple"
MakeClient = Callable[..., Awaitable[Client]]


@pytest.fixture
async def make_client(nats_settings: NatsSettings, pg_dsn: str) -> AsyncIterator[MakeClient]:
    """A fresh app and client per call (its own cookie jar), on the same log and database."""
    from services.api.app import create_app

    opened: list[Client] = []

    async def make(config: ApiConfig | None = None, base_url: str = "http://testserver.local") -> Client:
        settings = Settings(
            nats=nats_settings,
            config=config or api_config(),
            database_url=pg_dsn,
            teams=RULES.routing.teams,
            access=RULES.access,
        )
        client = AsyncTestClient(create_app(settings), base_url=base_url, raise_server_exceptions=False)
        await client.__aenter__()
        opened.append(client)
        await wait_healthy(client)
        return client

    yield make
    for client in reversed(opened):
        await client.__aexit__(None, None, None)


async def _user(admin: Client, username: str, role: str, **extra: Any) -> dict[str, Any]:
    r = await admin.post(
        "/v1/users", json={"username": username, "role": role, "password": PASSWORD, **extra}, headers=ADMIN
    )
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


async def _sign_in(client: Client, username: str, password: str = PASSWORD) -> str:
    r = await client.post("/v1/session", json={"username": username, "password": password})
    assert r.status_code == 200, r.text
    token: str = r.json()["csrf_token"]
    return token


async def _deals(admin: Client) -> None:
    r = await admin.put("/v1/pipelines/sales", json=PIPELINE, headers=ADMIN)
    assert r.status_code == 202, r.text
    for deal_id, owner in (("ana-deal", "ana"), ("bo-deal", "bo"), ("chen-deal", "chen")):
        body = {"deal_id": deal_id, "name": deal_id, "pipeline_id": "sales", "amount": "1", "currency": "EUR"}
        body["owner"] = owner
        assert (await admin.post("/v1/deals", json=body, headers=ADMIN)).status_code == 202


async def _move(client: Client, deal_id: str, csrf: str | None) -> int:
    headers = {"If-Match": "1"} if csrf is None else {"If-Match": "1", "X-CSRF-Token": csrf}
    # The deal's version as the mover reads it; one they may not read keeps a made-up If-Match (the guard is first).
    got = await client.get(f"/v1/deals/{deal_id}")
    if got.status_code == 200:
        headers["If-Match"] = got.headers["etag"]
    r = await client.post(f"/v1/deals/{deal_id}/stage", json={"to_stage": "won"}, headers=headers)
    return r.status_code


async def test_sign_in_me_and_sign_out(make_client: MakeClient) -> None:
    admin = await make_client()
    await _user(admin, "ana", "rep")
    browser = await make_client()
    r = await browser.post("/v1/session", json={"username": "ana", "password": PASSWORD})
    assert r.status_code == 200, r.text
    cookie = r.headers["set-cookie"]
    assert "dealstream_session=" in cookie
    assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower() and "Path=/v1" in cookie
    assert "Secure" not in cookie  # plain http, no TLS configuration
    body = r.json()
    assert body["id"] == "ana" and body["role"] == "rep" and body["team"] == "inside-sales"
    assert "users:write" not in body["scopes"] and len(body["csrf_token"]) >= 32
    me = await browser.get("/v1/me")
    assert me.status_code == 200 and me.json()["id"] == "ana" and me.json()["csrf_token"] == body["csrf_token"]
    assert (await browser.delete("/v1/session")).status_code == 403  # a write without its CSRF token
    out = await browser.delete("/v1/session", headers={"X-CSRF-Token": body["csrf_token"]})
    assert out.status_code == 204
    browser.cookies.clear()
    assert (await browser.get("/v1/me")).status_code == 401


async def test_an_ended_session_cookie_is_refused(make_client: MakeClient) -> None:
    admin = await make_client()
    await _user(admin, "ana", "rep")
    browser = await make_client()
    csrf = await _sign_in(browser, "ana")
    token = browser.cookies["dealstream_session"]
    await browser.delete("/v1/session", headers={"X-CSRF-Token": csrf})
    replayed = await make_client()
    replayed.cookies.set("dealstream_session", token, domain="testserver.local")
    assert (await replayed.get("/v1/me")).status_code == 401


async def test_the_cookie_is_secure_over_https(make_client: MakeClient) -> None:
    admin = await make_client()
    await _user(admin, "ana", "rep")
    browser = await make_client(base_url="https://testserver.local")
    r = await browser.post("/v1/session", json={"username": "ana", "password": PASSWORD})
    assert r.status_code == 200, r.text
    assert "Secure" in r.headers["set-cookie"]


async def test_a_wrong_password_and_an_unknown_user_answer_alike(make_client: MakeClient) -> None:
    admin = await make_client()
    await _user(admin, "ana", "rep")
    browser = await make_client()
    answers = [
        await browser.post("/v1/session", json={"username": "ana", "password": "not the password"}),
        await browser.post("/v1/session", json={"username": "nobody", "password": PASSWORD}),
        await browser.post("/v1/session", json={"username": "x' OR '1'='1", "password": PASSWORD}),
    ]
    assert [a.status_code for a in answers] == [401, 401, 401]
    assert len({a.json()["message"] for a in answers}) == 1
    assert "set-cookie" not in answers[0].headers


async def test_brute_force_gets_429_even_with_the_right_password(make_client: MakeClient) -> None:
    config = msgspec.structs.replace(api_config(), auth_failure_rate_per_second=0.001, auth_failure_burst=3)
    admin = await make_client(config)
    await _user(admin, "ana", "rep")
    browser = await make_client(config)
    statuses = [
        (await browser.post("/v1/session", json={"username": "ana", "password": f"guess-{n}-xxxxxxx"})).status_code
        for n in range(3)
    ]
    assert statuses == [401, 401, 401]
    right = await browser.post("/v1/session", json={"username": "ana", "password": PASSWORD})
    assert right.status_code == 429 and "retry-after" in right.headers


async def test_bad_sign_in_bodies_are_4xx_naming_the_field(make_client: MakeClient) -> None:
    browser = await make_client()
    long = await browser.post("/v1/session", json={"username": "ana", "password": "x" * 5000})
    assert long.status_code in (400, 422) and long.json()["errors"][0]["field"] == "password"
    missing = await browser.post("/v1/session", json={"username": "ana"})
    assert missing.status_code in (400, 422) and missing.json()["errors"][0]["field"] == "password"


async def test_a_forged_session_cookie_is_401(make_client: MakeClient) -> None:
    browser = await make_client()
    browser.cookies.set("dealstream_session", "forged-token", domain="testserver.local")
    assert (await browser.get("/v1/me")).status_code == 401
    assert (await browser.get("/v1/deals/x/events")).status_code == 401


async def test_csrf_header_is_required_on_cookie_writes(make_client: MakeClient) -> None:
    admin = await make_client()
    await _user(admin, "ana", "rep")
    await _deals(admin)
    browser = await make_client()
    csrf = await _sign_in(browser, "ana")
    touch = {"kind": "call", "direction": "outbound"}
    assert (await browser.post("/v1/deals/ana-deal/touchpoints", json=touch)).status_code == 403
    wrong = {"X-CSRF-Token": "0" * 64}
    assert (await browser.post("/v1/deals/ana-deal/touchpoints", json=touch, headers=wrong)).status_code == 403
    ok = await browser.post("/v1/deals/ana-deal/touchpoints", json=touch, headers={"X-CSRF-Token": csrf})
    assert ok.status_code == 202, ok.text
    events = (await browser.get("/v1/deals/ana-deal/events")).json()["events"]
    assert events[-1]["type"] == "touchpoint.logged.v1" and events[-1]["actor"] == "ana"


async def test_a_rep_moves_their_own_and_their_teams_deals_not_another_teams(make_client: MakeClient) -> None:
    admin = await make_client()
    await _user(admin, "ana", "rep")
    await _deals(admin)
    browser = await make_client()
    csrf = await _sign_in(browser, "ana")
    assert await _move(browser, "ana-deal", csrf) == 202
    assert await _move(browser, "bo-deal", csrf) == 202  # reps_see = "team"
    assert await _move(browser, "chen-deal", csrf) == 403
    assert (await browser.get("/v1/deals/chen-deal")).status_code == 403
    assert (await browser.get("/v1/deals/chen-deal/events")).status_code == 403
    touch = {"kind": "call", "direction": "outbound"}
    hdr = {"X-CSRF-Token": csrf}
    assert (await browser.post("/v1/deals/chen-deal/touchpoints", json=touch, headers=hdr)).status_code == 403
    task = {"title": "call back", "due_at": "2030-01-01T09:00:00Z"}
    assert (await browser.post("/v1/deals/chen-deal/tasks", json=task, headers=hdr)).status_code == 403
    assert (await browser.post("/v1/deals/bo-deal/tasks", json=task, headers=hdr)).status_code == 202
    # A deal for another team's rep cannot be opened either; one with no owner is the rep's own.
    new = {"deal_id": "mine", "name": "Mine", "pipeline_id": "sales", "amount": "1", "currency": "EUR"}
    assert (await browser.post("/v1/deals", json={**new, "owner": "chen"}, headers=hdr)).status_code == 403
    assert (await browser.post("/v1/deals", json=new, headers=hdr)).status_code == 202
    assert (await browser.get("/v1/deals/mine")).json()["owner"] == "ana"
    # The board of another team's rep, and the feed of every deal, are out of reach.
    assert (await browser.get("/v1/board", params={"owner": "chen"})).status_code == 403
    assert (await browser.get("/v1/board/changes")).status_code == 403
    history = (await admin.get("/v1/deals/ana-deal/events", headers=ADMIN)).json()["events"]
    assert history[-1]["type"] == "deal.stage_changed.v1" and history[-1]["actor"] == "ana"
    # Leads of another team's rep: neither their score, their history nor a write; nor that rep's alerts.
    lead = (await admin.post("/v1/leads", json={"email": "x@example.com"}, headers=ADMIN)).json()["aggregate_id"]
    assert (await admin.post(f"/v1/leads/{lead}/assign", json={"owner": "chen"}, headers=ADMIN)).status_code == 202
    assert (await browser.get(f"/v1/leads/{lead}/score")).status_code == 403
    assert (await browser.get(f"/v1/leads/{lead}/events")).status_code == 403
    assert (await browser.post(f"/v1/leads/{lead}/assign", json={"owner": "ana"}, headers=hdr)).status_code == 403
    assert (await browser.get("/v1/alerts", params={"rep": "chen"})).status_code == 403
    assert (await browser.get("/v1/leads", params={"owner": "chen"})).status_code == 403
    # The records, people and task routes hold the same line: another team's lead, deal, list or day is 403.
    assert (await browser.get(f"/v1/leads/{lead}")).status_code == 403
    fix = {"company": "Mine now"}
    patched = await browser.patch(f"/v1/leads/{lead}", json=fix, headers={**hdr, "If-Match": '"1"'})
    assert patched.status_code == 403
    assert (await browser.post(f"/v1/leads/{lead}/merge", json={"into": lead}, headers=hdr)).status_code == 403
    convert = {"pipeline_id": "sales", "amount": "1", "currency": "EUR"}
    assert (await browser.post(f"/v1/leads/{lead}/convert", json=convert, headers=hdr)).status_code == 403
    reassign = await browser.patch("/v1/deals/chen-deal", json={"owner": "ana"}, headers={**hdr, "If-Match": '"1"'})
    assert reassign.status_code == 403
    assert (await browser.post("/v1/deals/chen-deal/reopen", json={}, headers=hdr)).status_code == 403
    link = {"contact_id": "c1", "role": "champion"}
    assert (await browser.post("/v1/deals/chen-deal/contacts", json=link, headers=hdr)).status_code == 403
    assert (await browser.get("/v1/deals", params={"owner": "chen"})).status_code == 403
    assert (await browser.get("/v1/tasks", params={"owner": "chen"})).status_code == 403


async def test_reps_see_own_keeps_a_rep_off_their_teams_deals(nats_settings: NatsSettings, pg_dsn: str) -> None:
    from services.api.app import create_app

    rules = sales_rules_from_toml('[teams.t]\nmembers = ["ana", "bo"]\nmanager = "maria"\n[access]\nreps_see = "own"\n')
    settings = Settings(
        nats=nats_settings, config=api_config(), database_url=pg_dsn, teams=rules.routing.teams, access=rules.access
    )
    async with AsyncTestClient(create_app(settings), base_url="http://testserver.local") as client:
        await wait_healthy(client)
        await _user(client, "ana", "rep")
        await _deals(client)
        csrf = await _sign_in(client, "ana")
        assert await _move(client, "ana-deal", csrf) == 202
        assert await _move(client, "bo-deal", csrf) == 403


async def test_a_manager_moves_their_teams_deals(make_client: MakeClient) -> None:
    admin = await make_client()
    await _user(admin, "maria", "manager")
    await _deals(admin)
    browser = await make_client()
    csrf = await _sign_in(browser, "maria")
    assert (await browser.get("/v1/me")).json()["team"] == "inside-sales"
    assert await _move(browser, "bo-deal", csrf) == 202
    assert await _move(browser, "chen-deal", csrf) == 403


async def test_an_auditor_reads_history_and_writes_nothing(make_client: MakeClient) -> None:
    admin = await make_client()
    await _user(admin, "audrey", "auditor")
    await _deals(admin)
    browser = await make_client()
    csrf = await _sign_in(browser, "audrey")
    hdr = {"X-CSRF-Token": csrf}
    assert (await browser.get("/v1/deals/chen-deal/events")).status_code == 200
    assert (await browser.get("/v1/deals/ana-deal")).status_code == 200
    assert (await browser.get("/v1/pipelines/sales/events")).status_code == 200
    assert await _move(browser, "ana-deal", csrf) == 403
    touch = {"kind": "note", "direction": "internal"}
    assert (await browser.post("/v1/deals/ana-deal/touchpoints", json=touch, headers=hdr)).status_code == 403
    new = {"name": "N", "pipeline_id": "sales", "amount": "1", "currency": "EUR"}
    assert (await browser.post("/v1/deals", json=new, headers=hdr)).status_code == 403
    assert (await browser.post("/v1/leads", json={"email": "a@example.com"}, headers=hdr)).status_code == 403
    assert (await browser.put("/v1/pipelines/sales", json=PIPELINE, headers=hdr)).status_code == 403
    assert (await browser.post("/v1/users", json={"username": "x", "role": "admin"}, headers=hdr)).status_code == 403
    assert (await browser.get("/v1/board")).status_code == 403  # the board is not history


async def test_users_admin_api(make_client: MakeClient) -> None:
    admin = await make_client()
    assert (await admin.get("/v1/users", headers=ADMIN)).json() == {"users": [], "next_after": None}
    made = await admin.post("/v1/users", json={"username": "bo", "role": "rep"}, headers=ADMIN)
    assert made.status_code == 201, made.text
    one_time = made.json()["one_time_password"]
    assert made.json()["team"] == "inside-sales" and made.json()["password_set"]
    assert (await admin.post("/v1/users", json={"username": "bo", "role": "rep"}, headers=ADMIN)).status_code == 409
    bad = await admin.post("/v1/users", json={"username": "a.b", "role": "rep"}, headers=ADMIN)
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "username"
    unknown = await admin.post("/v1/users", json={"username": "z", "role": "rep", "team": "nope"}, headers=ADMIN)
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["field"] == "team"
    short = await admin.post("/v1/users", json={"username": "z", "role": "rep", "password": "short"}, headers=ADMIN)
    assert short.status_code == 422 and short.json()["errors"][0]["field"] == "password"
    await _user(admin, "li", "manager")
    listed = (await admin.get("/v1/users", headers=ADMIN)).json()
    assert [u["username"] for u in listed["users"]] == ["bo", "li"]
    assert "one_time_password" not in listed["users"][0]
    page = (await admin.get("/v1/users", params={"limit": 1}, headers=ADMIN)).json()
    assert [u["username"] for u in page["users"]] == ["bo"] and page["next_after"] == "bo"

    browser = await make_client()
    csrf = await _sign_in(browser, "bo", one_time)
    # Their own password, with the current one; then the one-time password no longer works.
    mine = {"password": PASSWORD, "current_password": one_time}
    assert (await browser.post("/v1/users/bo/password", json=mine, headers={"X-CSRF-Token": csrf})).status_code == 200
    assert (await browser.get("/v1/me")).status_code == 401  # setting a password ends the sessions
    other = await make_client()
    assert (await other.post("/v1/session", json={"username": "bo", "password": one_time})).status_code == 401
    csrf = await _sign_in(other, "bo")
    hdr = {"X-CSRF-Token": csrf}
    assert (await other.post("/v1/users/li/password", json={"password": PASSWORD}, headers=hdr)).status_code == 403
    assert (await other.patch("/v1/users/bo", json={"role": "admin"}, headers=hdr)).status_code == 403

    promoted = await admin.patch("/v1/users/bo", json={"role": "manager", "team": "enterprise"}, headers=ADMIN)
    assert promoted.status_code == 200 and promoted.json()["role"] == "manager"
    assert (await other.get("/v1/me")).json()["role"] == "manager"  # the role counts from the next request
    both = {"role": "rep", "active": False, "reason": "left"}
    off = await admin.patch("/v1/users/bo", json=both, headers={**ADMIN, "Idempotency-Key": "bo-leaves"})
    assert off.status_code == 200 and off.json()["active"] is False and off.json()["role"] == "rep"
    again = await admin.patch("/v1/users/bo", json=both, headers={**ADMIN, "Idempotency-Key": "bo-leaves"})
    assert again.json()["version"] == off.json()["version"]  # a retry changes nothing
    assert (await other.get("/v1/me")).status_code == 401
    assert (await other.post("/v1/session", json={"username": "bo", "password": PASSWORD})).status_code == 401
    types = [e["type"] for e in (await admin.get("/v1/users/bo/events", headers=ADMIN)).json()["events"]]
    assert types == [
        "user.created.v1",
        "user.password_set.v1",
        "user.password_set.v1",
        "user.role_changed.v1",
        "user.role_changed.v1",
        "user.deactivated.v1",
    ]


async def test_an_api_key_wins_over_a_session_cookie(make_client: MakeClient) -> None:
    admin = await make_client()
    await _user(admin, "ana", "rep")
    browser = await make_client()
    await _sign_in(browser, "ana")
    me = (await browser.get("/v1/me", headers=ADMIN)).json()
    assert me == {"id": "admin", "kind": "api_key", "scopes": me["scopes"]}


async def test_no_password_or_hash_reaches_the_log_or_the_logs(
    make_client: MakeClient, nats_conn: tuple[Any, Any], naming: Naming, pg_dsn: str
) -> None:
    with structlog.testing.capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        admin = await make_client()
        await _user(admin, "ana", "admin")
        made = (await admin.post("/v1/users", json={"username": "bo", "role": "rep"}, headers=ADMIN)).json()
        browser = await make_client()
        await _sign_in(browser, "ana")
        await browser.post("/v1/session", json={"username": "ana", "password": "wrong " + PASSWORD})
        await admin.post("/v1/users/bo/password", json={"password": PASSWORD + "!"}, headers=ADMIN)
    token = browser.cookies["dealstream_session"]
    with psycopg.connect(pg_dsn) as conn:
        hashes = [row[0] for row in conn.execute("SELECT argon2id FROM user_credentials").fetchall()]
        # A session's token is kept only as its digest: a read of the table signs nobody in.
        kept = conn.execute("SELECT token_sha256 FROM user_sessions").fetchall()
    assert kept and token not in repr(kept)
    assert len(hashes) == 2 and all(h.startswith("$argon2id$") for h in hashes)
    secrets = [*hashes, PASSWORD, made["one_time_password"], token]
    # Every piece of a hash that could identify it: the whole string and its salt and digest parts.
    secrets += [part for h in hashes for part in h.split("$")[-2:]]
    text = repr(logs)
    assert not [s for s in secrets if s in text]
    stream = b"".join([m.data async for m in scan(nats_conn[1], naming.events_stream)])
    assert b"user.password_set.v1" in stream
    assert not [s for s in secrets if s.encode() in stream]


def _cli(args: list[str], env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "services.cli", *args]
    return subprocess.run(command, env={**os.environ, **env}, input=stdin, capture_output=True, text=True, timeout=60)


async def test_cli_adds_users_with_a_one_time_or_given_password(
    make_client: MakeClient, nats_url: str, naming: Naming, pg_dsn: str
) -> None:
    env = {"DEALSTREAM_NATS_URL": nats_url, "DEALSTREAM_PREFIX": naming.prefix, "DATABASE_URL": pg_dsn}
    made = await asyncio.to_thread(_cli, ["users", "add", "carol", "--role", "manager"], env)
    assert made.returncode == 0, made.stderr
    one_time = made.stdout.strip().splitlines()[-1].rsplit(" ", 1)[-1]
    given = await asyncio.to_thread(_cli, ["users", "add", "dan", "--role", "rep", "--password-stdin"], env, PASSWORD)
    assert given.returncode == 0 and PASSWORD not in given.stdout, given.stderr
    again = await asyncio.to_thread(_cli, ["users", "add", "dan", "--role", "rep"], env)
    assert again.returncode == 1 and "already exists" in again.stderr
    bad = await asyncio.to_thread(_cli, ["users", "add", "no.dots", "--role", "rep"], env)
    assert bad.returncode == 2 and "username" in bad.stderr
    browser = await make_client()
    await _sign_in(browser, "carol", one_time)
    assert (await browser.get("/v1/me")).json()["role"] == "manager"
    await _sign_in(await make_client(), "dan")
    reset = await asyncio.to_thread(_cli, ["users", "password", "dan"], env)
    assert reset.returncode == 0, reset.stderr
    assert (await browser.post("/v1/session", json={"username": "dan", "password": PASSWORD})).status_code == 401


async def test_a_user_named_like_an_api_key_shares_neither_its_idempotency_keys_nor_its_rate(
    make_client: MakeClient,
) -> None:
    config = msgspec.structs.replace(api_config(), rate_per_second=0.001, rate_burst=5)
    admin = await make_client(config)
    await _user(admin, "admin", "admin")  # the API key's id is "admin" too
    await _deals(admin)  # with the user, 5 requests: the key's bucket is spent
    assert (await admin.get("/v1/me", headers=ADMIN)).status_code == 429
    browser = await make_client(config)
    csrf = await _sign_in(browser, "admin")
    touch = {"kind": "note", "direction": "internal"}
    hdr = {"X-CSRF-Token": csrf, "Idempotency-Key": "same"}
    first = await browser.post("/v1/deals/ana-deal/touchpoints", json=touch, headers=hdr)
    assert first.status_code == 202 and first.json()["duplicate"] is False, first.text


async def test_guessing_the_current_password_with_a_stolen_session_is_limited(make_client: MakeClient) -> None:
    config = msgspec.structs.replace(api_config(), auth_failure_rate_per_second=0.001, auth_failure_burst=2)
    admin = await make_client(config)
    await _user(admin, "ana", "rep")
    browser = await make_client(config)
    hdr = {"X-CSRF-Token": await _sign_in(browser, "ana")}
    guesses = [
        await browser.post(
            "/v1/users/ana/password", json={"password": "x" * 20, "current_password": f"guess {n}"}, headers=hdr
        )
        for n in range(3)
    ]
    assert [g.status_code for g in guesses] == [403, 403, 429]
