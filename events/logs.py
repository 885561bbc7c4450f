"""structlog set-up shared by every process: JSON lines in production, readable lines in a terminal."""

from __future__ import annotations

import logging
import os
import sys

import structlog


def configure_logging(json: bool | None = None, level: str | None = None) -> None:
    """``DEALSTREAM_LOG_FORMAT=json|console`` and ``DEALSTREAM_LOG_LEVEL`` override the defaults."""
    if json is None:
        fmt = os.environ.get("DEALSTREAM_LOG_FORMAT")
        json = fmt == "json" if fmt else not sys.stderr.isatty()
    level_name = (level or os.environ.get("DEALSTREAM_LOG_LEVEL", "info")).upper()
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info if json else structlog.processors.StackInfoRenderer(),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level_name]),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=level_name, stream=sys.stderr, format="%(name)s %(levelname)s %(message)s")
