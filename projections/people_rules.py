"""The ``[people]`` section of the rules file: which stages of a pipeline are late, where a deal is expected to
have a decision maker. Read by the API, which joins the flag onto deals at query time; no build depends on it."""

from __future__ import annotations

import tomllib

import msgspec


class PeopleRules(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``late_stages``: by pipeline id, its late stages; a pipeline not named has the last half of its stages."""

    late_stages: dict[str, list[str]] = {}


NO_PEOPLE_RULES = PeopleRules()


def people_rules_from_toml(text: str) -> PeopleRules:
    """The ``[people]`` section of a rules document (empty text or no section: the defaults); ValueError names the
    field that is wrong."""
    try:
        section = tomllib.loads(text).get("people", {}) if text else {}
        return msgspec.convert(section, PeopleRules)
    except (tomllib.TOMLDecodeError, msgspec.ValidationError) as exc:
        raise ValueError(f"people rules: {exc}") from exc
