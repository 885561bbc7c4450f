"""The sales rules (``deploy/sales.toml``): one typed value, decoded once from the file's text at the entry point.

Each section is what one kind of projection folds by: ``[scoring]``, ``[sla]``, ``[routing]`` and ``[notify]``.
The top-level ``[teams]``, ``[calendar]`` and ``manager`` are shared: SLA policies measure teams in their
calendars, routing hands leads to their members. This module reads no file and no environment.
"""

from __future__ import annotations

import hashlib
import tomllib
from typing import Any, TypeVar

import msgspec

from projections.access import AccessRules
from projections.notify import NotifyRules
from projections.people_rules import NO_PEOPLE_RULES, PeopleRules
from projections.routing import RoutingRules
from projections.scoring import NO_RULES, ScoringRules, scoring_rules_of
from projections.sla_rules import SlaRules

T = TypeVar("T")

SHARED = ("teams", "calendar", "manager")
"""Top-level tables of the rules file that SLA policies and lead routing share."""


class SalesRules(msgspec.Struct, frozen=True, kw_only=True):
    """Every section of the rules file, each with the shared tables it reads merged in."""

    scoring: ScoringRules = NO_RULES
    sla: SlaRules = SlaRules()
    routing: RoutingRules = RoutingRules()
    notify: NotifyRules = NotifyRules()
    access: AccessRules = AccessRules()
    people: PeopleRules = NO_PEOPLE_RULES


NO_SALES_RULES = SalesRules()
"""What a process without a rules file runs by: nobody scored, no SLA, no routing, no notifications."""


def sales_rules_from_toml(text: str) -> SalesRules:
    """The rules in a TOML document (empty text: :data:`NO_SALES_RULES`); ValueError names the section and
    field that is wrong."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"rules: invalid TOML ({exc})") from exc
    return SalesRules(
        scoring=scoring_rules_of(document["scoring"]) if "scoring" in document else NO_RULES,
        sla=_section("sla", {**document.get("sla", {}), **{k: document[k] for k in SHARED if k in document}}, SlaRules),
        routing=_section("routing", {**document.get("routing", {}), "teams": document.get("teams", {})}, RoutingRules),
        # Notices nobody owns go to the top-level manager, escalations to the team's, unless [notify] says otherwise.
        notify=_section("notify", {**_managers(document), **document.get("notify", {})}, NotifyRules),
        access=_section("access", document.get("access", {}), AccessRules),
        people=_section("people", document.get("people", {}), PeopleRules),
    )


def _managers(document: dict[str, Any]) -> dict[str, Any]:
    """Notify's defaults from the shared tables: the top-level manager hears what nobody owns, and each team's
    manager the escalations of its members."""
    out: dict[str, Any] = {"fallback": document["manager"]} if "manager" in document else {}
    teams = document.get("teams", {})
    managers = {
        m: t["manager"] for t in teams.values() if isinstance(t, dict) and "manager" in t for m in t.get("members", [])
    }
    return out | ({"managers": managers} if managers else {})


def _section(name: str, table: dict[str, Any], kind: type[T]) -> T:
    try:
        return msgspec.convert(table, kind)
    except (msgspec.ValidationError, ValueError) as exc:
        raise ValueError(f"{name} rules: {exc}") from exc


_ADDED_LATER = ("country", "subdivision", "history_horizon_minutes")
"""Fields added after builds began recording digests: left out while unset, so those digests hold."""


def digest(used: object) -> str:
    """SHA-256 of the part of the rules a build uses, as ``projection_builds`` records it."""
    return hashlib.sha256(msgspec.json.encode(_without_unset(msgspec.to_builtins(used)))).hexdigest()


def _without_unset(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_unset(v) for k, v in value.items() if not (k in _ADDED_LATER and v is None)}
    if isinstance(value, list | tuple):
        return [_without_unset(v) for v in value]
    return value
