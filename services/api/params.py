"""The parameters of every request, checked before any handler reads them: each id in the path or the query through
the one id check, and no query parameter the operation does not take."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from litestar import Litestar
from litestar.routes import HTTPRoute

from events.ids import InvalidId, check_id
from services.api.common import AnyRequest
from services.errors import FieldError, InputError

QUERY_OPT = "query_params"
"""A handler's ``opt`` key naming the query parameters it reads by hand (``?key=``, Meta's ``hub.*``)."""


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
"""No text parameter holds these (and PostgreSQL refuses NUL in text: a filter holding one was a 500)."""


def is_id(name: str) -> bool:
    """Every parameter named ``*_id`` is an id, in the path or the query (``lead_id``, ``pipeline_id``, ...)."""
    return name.endswith("_id")


def query_names(app: Litestar) -> dict[int, frozenset[str]]:
    """Per route handler (by identity), the query parameters it takes: those of its signature and its ``opt``."""
    names: dict[int, frozenset[str]] = {}
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler, model in route.route_handler_map.values():
            declared = {p.field_alias for p in model.expected_query_params}
            names[id(handler)] = frozenset(declared | set(handler.opt.get(QUERY_OPT, ())))
    return names


def id_errors(params: Iterable[tuple[str, Any]], where: str) -> list[FieldError]:
    errors: list[FieldError] = []
    for name, value in params:
        if is_id(name):
            try:
                check_id(value, name)
            except InvalidId as exc:
                errors.append(FieldError(name, f"{where}: {exc.reason}"))
    return errors


async def check_parameters(request: AnyRequest) -> None:
    """422 naming each path or query id that fails the id check, each query value holding a control character, and
    each query parameter the operation does not take (a misspelt filter silently ignored would answer another
    question than the one asked)."""
    known: frozenset[str] = request.app.state.query_names.get(id(request.route_handler), frozenset())
    query = request.query_params
    errors = id_errors(request.path_params.items(), "path")
    errors += id_errors(((k, v) for k, v in query.multi_items() if k in known), "query")
    errors += [
        FieldError(k, "must not contain control characters (NUL, newline, ...)")
        for k, v in query.multi_items()
        if k in known and not is_id(k) and _CONTROL.search(v)
    ]
    unknown = sorted({k for k in query if k not in known})
    takes = ", ".join(sorted(known)) or "none"
    errors += [FieldError(name, f"unknown query parameter (this operation takes: {takes})") for name in unknown]
    if errors:
        raise InputError(errors)
