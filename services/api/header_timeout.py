"""uvicorn's HTTP protocol with a header deadline: a connection whose request line and headers have not all
arrived within ``header_timeout`` seconds is closed (uvicorn itself waits for them forever, so a client that
sends a byte now and then holds a connection open as long as it likes: slowloris)."""

from __future__ import annotations

import asyncio

import structlog
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = structlog.get_logger("dealstream.api")


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """Every request's headers must be complete within ``header_timeout`` of its first byte (of the connection's
    opening, for the first request). ``dealstream api`` sets it from ``header_timeout_seconds``."""

    header_timeout: float = 5.0
    _header_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_deadline()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_header_deadline()

    def on_headers_complete(self) -> None:
        self._disarm_header_deadline()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_deadline()
        super().connection_lost(exc)

    def _arm_header_deadline(self) -> None:
        if self._header_deadline is None:
            self._header_deadline = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _disarm_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        if not self.transport.is_closing():
            log.info("connection.closed", reason=f"request headers incomplete after {self.header_timeout:g}s")
            self.transport.close()
