"""A lean HTTP/1.1 keep-alive client for the load generator.

httpx spends about 2.5 ms of CPU per request; on a 2-core machine the load generator then measures itself,
not the API. This client writes a request and reads a ``Content-Length`` answer on a pool of persistent
connections, and nothing more: enough for Dealstream's JSON API, not a general client.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return msgspec.json.decode(self.body)


class LeanClient:
    """``size`` persistent connections to ``host:port``; a broken connection is reopened and the request
    sent again once (every request the bench sends is idempotent)."""

    def __init__(self, host: str, port: int, size: int, headers: Mapping[str, str]) -> None:
        self.host, self.port = host, port
        self._common = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self._idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter] | None] = asyncio.Queue()
        for _ in range(size):
            self._idle.put_nowait(None)
        self._open: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> LeanClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        for writer in self._open:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        self._open.append(writer)
        return reader, writer

    async def request(
        self, method: str, path: str, json: object = None, headers: Mapping[str, str] | None = None
    ) -> Answer:
        body = b"" if json is None else msgspec.json.encode(json)
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n{self._common}{extra}"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        conn = await self._idle.get()
        try:
            for attempt in (1, 2):
                if conn is None:
                    conn = await self._connect()
                try:
                    answer = await self._exchange(conn, head + body)
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    conn[1].close()
                    conn = None
                    if attempt == 2:
                        raise
                    continue
                if answer.headers.get("connection", "").lower() == "close":
                    conn[1].close()
                    conn = None
                return answer
            raise AssertionError("unreachable")
        finally:
            self._idle.put_nowait(conn)

    @staticmethod
    async def _exchange(conn: tuple[asyncio.StreamReader, asyncio.StreamWriter], data: bytes) -> Answer:
        reader, writer = conn
        writer.write(data)
        await writer.drain()
        status_line = await reader.readuntil(b"\r\n")
        status = int(status_line.split(b" ", 2)[1])
        headers: dict[str, str] = {}
        while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        return Answer(status, headers, await reader.readexactly(length) if length else b"")
