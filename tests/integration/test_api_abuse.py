"""Abuse of a real ``uvicorn`` server on a free port, called from two loopback addresses (127.0.0.1 and
127.0.0.2): a flood on the public form key is refused per client address while other visitors get through,
failed authentications are throttled per address, X-Forwarded-For counts only from a trusted proxy, and a
connection whose headers never finish is closed."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import msgspec
import pytest
import uvicorn

from devstack.servers import free_port
from events.config import NatsSettings
from services.api.header_timeout import HeaderTimeoutProtocol
from services.config import ApiConfig, Settings
from tests.conftest import ADMIN_KEY, FORM_KEY, api_config

pytestmark = pytest.mark.integration

VISITOR, FLOODER = "127.0.0.1", "127.0.0.2"
LEAD = {"email": "ana@example.com"}
FORM = {"Authorization": f"Bearer {FORM_KEY}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
SLOW = 0.001
"""A refill so slow (one token in ~17 minutes) that none arrives during a test."""

Served = Callable[..., contextlib.AbstractAsyncContextManager[str]]


@pytest.fixture
def served(nats_settings: NatsSettings) -> Served:
    """Start the API under uvicorn (``dealstream api``'s protocol, no proxy headers) with ``api_config()``
    changed by the given fields; yields its base URL."""

    @contextlib.asynccontextmanager
    async def serve(**changes: Any) -> AsyncIterator[str]:
        from services.api.app import create_app

        config: ApiConfig = msgspec.structs.replace(api_config(), **changes)
        port = free_port()
        HeaderTimeoutProtocol.header_timeout = config.header_timeout_seconds
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(Settings(nats=nats_settings, config=config)),
                host="127.0.0.1",
                port=port,
                http=HeaderTimeoutProtocol,
                proxy_headers=False,
                lifespan="on",
                log_config=None,
                access_log=False,
            )
        )
        task = asyncio.create_task(server.serve())
        url = f"http://127.0.0.1:{port}"
        try:
            async with asyncio.timeout(30):
                while not server.started:
                    await asyncio.sleep(0.05)
                async with client_from(VISITOR, url) as c:
                    while (await c.get("/v1/health")).status_code != 200:
                        await asyncio.sleep(0.05)
            yield url
        finally:
            server.should_exit = True
            await asyncio.wait_for(task, 30)
            HeaderTimeoutProtocol.header_timeout = 5.0

    return serve


def client_from(address: str, url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, transport=httpx.AsyncHTTPTransport(local_address=address), timeout=30)


async def test_a_flood_on_the_public_form_key_is_refused_per_address_while_other_visitors_get_in(
    served: Served,
) -> None:
    # The key's own bucket (10) would be spent by the flood alone; the flooder's address has 3.
    limits = {"rate_per_second": SLOW, "rate_burst": 10, "client_rate_per_second": SLOW, "client_rate_burst": 3}
    async with served(**limits) as url, client_from(FLOODER, url) as flooder, client_from(VISITOR, url) as visitor:
        flood = [await flooder.post("/v1/leads", json=LEAD, headers=FORM) for _ in range(30)]
        assert [r.status_code for r in flood] == [202] * 3 + [429] * 27
        refused = flood[-1].json()
        assert refused["error"] == "rate_limited" and int(flood[-1].headers["retry-after"]) >= 1
        assert (
            refused["message"]
            == "website from this address is over its limit of 0.001 requests per second (bursts of 3)"
        )
        assert refused["errors"] == [{"field": "credential", "reason": refused["message"]}]
        # The same key sent as ?key= from the same address is the same visitor.
        assert (await flooder.post(f"/v1/leads?key={FORM_KEY}", data={"email": "a@example.com"})).status_code == 429
        # A real visitor on the same key, from another address, still gets in.
        assert [(await visitor.post("/v1/leads", json=LEAD, headers=FORM)).status_code for _ in range(3)] == [202] * 3


async def test_keys_that_stay_on_servers_are_limited_per_key_only(served: Served) -> None:
    limits = {"rate_per_second": SLOW, "rate_burst": 5, "client_rate_per_second": SLOW, "client_rate_burst": 1}
    async with served(**limits) as url, client_from(FLOODER, url) as client:
        # The admin key (every scope) is not public: its bucket of 5 is all that counts.
        answers = [(await client.get("/v1/deals/none", headers=ADMIN)).status_code for _ in range(6)]
        assert answers == [404] * 5 + [429]


async def test_failed_authentications_are_throttled_per_address_before_any_key_is_checked(served: Served) -> None:
    limits = {"auth_failure_rate_per_second": SLOW, "auth_failure_burst": 3}
    async with served(**limits) as url, client_from(FLOODER, url) as guesser, client_from(VISITOR, url) as visitor:
        guesses = [await guesser.get("/v1/board", headers={"Authorization": f"Bearer guess-{n}"}) for n in range(10)]
        assert [r.status_code for r in guesses] == [401] * 3 + [429] * 7
        refused = guesses[-1].json()
        assert refused["message"] == (
            "this address is over its limit of 0.001 failed authentications per second (bursts of 3)"
        )
        assert int(guesses[-1].headers["retry-after"]) >= 1
        # Once over, the address is refused before its key is looked at: even the right key waits.
        assert (await guesser.get("/v1/deals/none", headers=ADMIN)).status_code == 429
        assert (await guesser.post("/v1/leads?key=guess", data={"email": "a@example.com"})).status_code == 429
        # Another address is not affected, and successes never count.
        answers = [(await visitor.get("/v1/deals/none", headers=ADMIN)).status_code for _ in range(5)]
        assert answers == [404] * 5


async def test_x_forwarded_for_names_the_client_only_behind_a_trusted_proxy(served: Served) -> None:
    limits = {"client_rate_per_second": SLOW, "client_rate_burst": 2, "trusted_proxies": [f"{VISITOR}/32"]}
    async with served(**limits) as url, client_from(VISITOR, url) as proxy, client_from(FLOODER, url) as direct:

        async def via_proxy(client_address: str) -> int:
            headers = {**FORM, "X-Forwarded-For": f"203.0.113.9, {client_address}"}
            return (await proxy.post("/v1/leads", json=LEAD, headers=headers)).status_code

        # Behind the proxy, the last address it appended is the client's (what came before is the client's word).
        assert [await via_proxy("198.51.100.7") for _ in range(3)] == [202, 202, 429]
        assert [await via_proxy("198.51.100.8") for _ in range(3)] == [202, 202, 429]
        # From anywhere else the header is ignored: a flooder cannot make up a fresh address per request.
        spoofed = [
            (
                await direct.post("/v1/leads", json=LEAD, headers={**FORM, "X-Forwarded-For": f"198.51.100.{n}"})
            ).status_code
            for n in range(20, 24)
        ]
        assert spoofed == [202, 202, 429, 429]


async def _closed_by_server(reader: asyncio.StreamReader, within: float = 30.0) -> bool:
    """Read until the server closes the connection (True), or give up after a generous bound (False)."""
    try:
        async with asyncio.timeout(within):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return False
    return True


async def test_a_connection_whose_headers_never_finish_is_closed(served: Served) -> None:
    async with served(header_timeout_seconds=1.0) as url:
        port = int(url.rsplit(":", 1)[1])
        # Slowloris: a request line and part of the headers, then a byte now and then, never the blank line.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /v1/leads HTTP/1.1\r\nHost: x\r\n")
        await writer.drain()
        dribble = asyncio.create_task(_dribble(writer))
        try:
            assert await _closed_by_server(reader)
        finally:
            dribble.cancel()
            writer.close()
        # A connection that sends nothing at all.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await _closed_by_server(reader)
        writer.close()
        # A kept-alive connection: its first request is answered, the next one's headers never finish.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\nGET /v1/health HTTP/1.1\r\nHost: x\r\n")
        await writer.drain()
        answer = await reader.readuntil(b"\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200")
        assert await _closed_by_server(reader)
        writer.close()
        # Requests whose headers arrive in time are served as ever.
        async with client_from(VISITOR, url) as client:
            assert (await client.post("/v1/leads", json=LEAD, headers=FORM)).status_code == 202


async def _dribble(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        for n in range(1000):
            await asyncio.sleep(0.2)
            writer.write(f"X-{n}: y\r\n".encode())
            await writer.drain()
