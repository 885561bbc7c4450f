"""structlog set-up shared by every process: JSON lines in production, readable lines in a terminal.

Whatever the format, every line passes :func:`scrub` last, so no credential reaches a log: tracebacks are
rendered without local variables (a frame's locals hold request headers), and what an exception's message
or a logged value still carries is redacted by its shape (bearer tokens, API-key headers, ``?key=``,
signatures, secrets, passwords in URLs) and by value (the secrets a process registers at start).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable
from typing import Any

import structlog

REDACTED = "[redacted]"

_SECRET_NAMES = (
    r"authorization|proxy-authorization|x-api-key|api[_-]?key|x-hub-signature(?:-256)?|typeform-signature"
    r"|x-webflow-signature|hub\.verify_token|verify_token|app_secret|secret|signature|password|passwd|token|cookie"
)
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # A header or field named for a secret, however it is printed: "name: v", name=v, 'name': 'v',
    # (b'name', b'v'), "name": "v" inside JSON (quotes escaped or not).
    (
        re.compile(
            rf"(?i)((?:{_SECRET_NAMES})\\?[\"']?\s*[:=,]\s*\(?(?-i:b)?\\?[\"']?)(?:(?:bearer|basic)\s+)?(?!\[redacted\])[^\s\"'\\&,;)\]}}]+"
        ),
        rf"\g<1>{REDACTED}",
    ),
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]+"), rf"\g<1> {REDACTED}"),
    (re.compile(r"(?i)([?&](?:key|api_key|token|hub\.verify_token)=)[^&\s\"'\\#]+"), rf"\g<1>{REDACTED}"),
    (re.compile(r"(?i)\b(sha(?:1|256)=)[A-Za-z0-9+/=]+"), rf"\g<1>{REDACTED}"),
    (re.compile(r"\bdsk_[A-Za-z0-9_-]+"), f"dsk_{REDACTED}"),
    (re.compile(r"(://[^:/@\s\"']+:)[^@\s\"']+@"), rf"\g<1>{REDACTED}@"),
)

# Every pattern above needs one of these in the line (lower-cased): a line with none of them, which is nearly every
# line (a request's, an append's), skips the regular expressions, which cost about 60 us a line.
_TRIGGERS = (
    "authorization", "apikey", "api_key", "api-key", "signature", "verify_token", "secret", "password", "passwd",
    "token", "cookie", "bearer", "key=", "sha1=", "sha256=", "dsk_", "://",
)  # fmt: skip

_known: tuple[str, ...] = ()


def redact_values(values: Iterable[str]) -> None:
    """Register secrets this process knows (webhook secrets, signing keys): they are redacted wherever they appear."""
    global _known
    # Short values would redact ordinary words; a real secret is longer than this. Longest first: a secret that
    # holds another is redacted whole.
    _known = tuple(sorted({*_known, *(v for v in values if len(v) >= 6)}, key=len, reverse=True))


def scrub(text: str) -> str:
    """``text`` with every credential it shows replaced by ``[redacted]``."""
    lowered = text.lower()
    if any(trigger in lowered for trigger in _TRIGGERS):
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
    for value in _known:
        if value in text:
            text = text.replace(value, REDACTED)
    return text


class _Scrubbed:
    """A renderer whose every line is scrubbed."""

    def __init__(self, renderer: Any) -> None:
        self._renderer = renderer

    def __call__(self, logger: Any, name: str, event_dict: structlog.types.EventDict) -> str:
        rendered = self._renderer(logger, name, event_dict)
        return scrub(rendered if isinstance(rendered, str) else bytes(rendered).decode("utf-8", "replace"))


class ScrubbingFormatter(logging.Formatter):
    """The standard library's lines (uvicorn, psycopg, nats) are scrubbed too."""

    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))


def configure_logging(json: bool | None = None, level: str | None = None) -> None:
    """JSON lines unless stderr is a terminal, at level info, unless told otherwise (the process's settings
    carry ``DEALSTREAM_LOG_FORMAT=json|console`` and ``DEALSTREAM_LOG_LEVEL``)."""
    if json is None:
        json = not sys.stderr.isatty()
    level_name = (level or "info").upper()
    # Plain tracebacks in every format: rich's console tracebacks print each frame's local variables.
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info if json else structlog.processors.StackInfoRenderer(),
            _Scrubbed(renderer),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level_name]),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(ScrubbingFormatter("%(name)s %(levelname)s %(message)s"))
    logging.basicConfig(level=level_name, handlers=[handler])
