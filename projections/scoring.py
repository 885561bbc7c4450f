"""Lead scoring: fit (who the lead is) plus engagement (how they responded), by rules from TOML. Pure: no I/O, no clock.

Fit rules look at what the lead told us when captured; each matching rule adds its points once. Engagement rules
look at touchpoints up to ``as_of``; each counted touch adds points halved every ``half_life_days``, so a score
cools off when nobody talks to the lead. :func:`score` explains itself: one contribution per rule that added
points, in the order the rules are listed, and the contributions add up to the total.

The rules live in the ``[scoring]`` table of the rules file (``deploy/sales.toml``).
Scores are comparable only under the same ``version``: a changed rule set gets a new one.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import re
import tomllib
from collections import Counter
from collections.abc import Sequence
from typing import Any, Literal, get_args

import msgspec

from events.types import Direction, LeadCaptured, LeadCorrected, LeadDetailsFetched, TouchpointKind, lead_source
from events.types import ShortText as Name

FIELDS = (
    "company",
    "job_title",
    "country",
    "source",
    "channel",
    "utm_campaign",
    "email_domain",
    "has_phone",
    "message",
    "form_id",
)
"""What a fit rule can look at, besides ``answers.<key>`` and ``campaign.<key>``. ``source`` is the marketing
source the capture named, else the channel (``events.types.lead_source``); ``channel`` is always the channel."""
PREFIXES = ("answers.", "campaign.")

_KINDS: frozenset[str] = frozenset(get_args(TouchpointKind))
_DIRECTIONS: frozenset[str] = frozenset(get_args(Direction))
_DAY = dt.timedelta(days=1)


def _finite(name: str, value: float | None) -> None:
    # TOML has inf and nan; either would poison every total it touches.
    if value is not None and not math.isfinite(value):
        raise ValueError(f"{name}: must be a finite number, got {value}")


def _regex(name: str, pattern: str) -> None:
    try:
        re.compile(pattern, re.IGNORECASE)
    except re.error as exc:
        raise ValueError(f"{name}: invalid regex ({exc})") from None


def _norm(text: str) -> str:
    return text.strip().casefold()


# A fold scores every lead event against the same few rules: their normalised values and compiled patterns are
# made once per rule text, not once per event (rules are frozen structs, which cannot carry them).
@functools.lru_cache(maxsize=1024)
def _listed(values: tuple[str, ...]) -> frozenset[str]:
    return frozenset(_norm(v) for v in values)


@functools.lru_cache(maxsize=1024)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE)


class FitRule(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Points when a field of the lead matches. One matcher: ``equals`` or ``one_of`` (case and surrounding
    blanks ignored), ``pattern`` (case-insensitive regex, found anywhere), or a range ``min``/``max`` (inclusive)
    on the first number in the field's text (see :func:`parse_number`). A missing or blank field matches nothing.
    """

    name: Name
    field: str
    points: float
    equals: str | None = None
    one_of: list[str] | None = None
    pattern: str | None = None
    min: float | None = None
    max: float | None = None

    def __post_init__(self) -> None:
        if self.field not in FIELDS and not any(
            self.field.startswith(p) and len(self.field) > len(p) for p in PREFIXES
        ):
            raise ValueError(
                f"field: unknown field {self.field!r}, expected one of {', '.join(FIELDS)}, answers.<key> or"
                " campaign.<key>"
            )
        given = [
            name
            for name, present in (
                ("equals", self.equals is not None),
                ("one_of", self.one_of is not None),
                ("pattern", self.pattern is not None),
                ("min/max", self.min is not None or self.max is not None),
            )
            if present
        ]
        if len(given) != 1:
            got = " and ".join(given) if given else "none"
            raise ValueError(f"rule {self.name!r}: give exactly one of equals, one_of, pattern, min/max (got {got})")
        if self.one_of is not None and not self.one_of:
            raise ValueError("one_of: must list at least one value")
        if self.pattern is not None:
            _regex("pattern", self.pattern)
        for name in ("points", "min", "max"):
            _finite(name, getattr(self, name))
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min: {self.min} is above max {self.max}")

    def describe(self, value: str) -> str | None:
        """Why this rule matches ``value`` (the field's text), or None when it does not."""
        if self.equals is not None:
            return f"{self.field} is {self.equals!r}" if _norm(value) == _norm(self.equals) else None
        if self.one_of is not None:
            listed = _listed(tuple(self.one_of))
            return f"{self.field} is {value.strip()!r}, one of {len(listed)} listed" if _norm(value) in listed else None
        if self.pattern is not None:
            found = _compiled(self.pattern).search(value) is not None
            # The pattern as written in the rules: repr() would double every backslash (r"\bceo\b" -> '\\bceo\\b').
            return f"{self.field} matches '{self.pattern}'" if found else None
        number = parse_number(value)
        if number is None or (self.min is not None and number < self.min):
            return None
        if self.max is not None and number > self.max:
            return None
        if self.max is None:
            bounds = f">= {_fmt(self.min or 0.0)}"
        elif self.min is None:
            bounds = f"<= {_fmt(self.max)}"
        else:
            bounds = f"in {_fmt(self.min)}..{_fmt(self.max)}"
        return f"{self.field} {_fmt(number)} {bounds}"


class EngagementRule(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Points per matching touchpoint, decayed by its age at scoring time. ``kind``/``direction``: None for any;
    ``outcome``: case-insensitive regex found in the outcome (then a touch without one never matches);
    ``within_days``: only touches younger than this count; ``max_count``: only the most recent this many."""

    name: Name
    points: float
    kind: list[TouchpointKind] | None = None
    direction: list[Direction] | None = None
    outcome: str | None = None
    within_days: float | None = None
    max_count: int | None = None

    def __post_init__(self) -> None:
        # msgspec checks the literals only when decoding; rules built in code are checked here.
        for name, allowed in (("kind", _KINDS), ("direction", _DIRECTIONS)):
            values: list[str] | None = getattr(self, name)
            if values is not None and (not values or not set(values) <= allowed):
                raise ValueError(f"{name}: expected a non-empty list of {', '.join(sorted(allowed))}")
        if self.outcome is not None:
            _regex("outcome", self.outcome)
        for name in ("points", "within_days"):
            _finite(name, getattr(self, name))
        if self.within_days is not None and self.within_days <= 0:
            raise ValueError(f"within_days: must be above 0, got {self.within_days}")
        if self.max_count is not None and self.max_count < 1:
            raise ValueError(f"max_count: must be at least 1, got {self.max_count}")

    def matches(self, touch: Touch, age: dt.timedelta) -> bool:
        return (
            (self.kind is None or touch.kind in self.kind)
            and (self.direction is None or touch.direction in self.direction)
            and (self.within_days is None or age < self.within_days * _DAY)
            and (
                self.outcome is None
                or (touch.outcome is not None and _compiled(self.outcome).search(touch.outcome) is not None)
            )
        )


class ScoringRules(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A rule set. A lead whose total reaches ``threshold`` is qualified."""

    version: int
    threshold: float
    half_life_days: float
    fit: list[FitRule] = []
    engagement: list[EngagementRule] = []

    def __post_init__(self) -> None:
        if self.version < 1:
            raise ValueError(f"version: must be at least 1, got {self.version}")
        _finite("threshold", self.threshold)
        _finite("half_life_days", self.half_life_days)
        if self.half_life_days <= 0:
            raise ValueError(f"half_life_days: must be above 0, got {self.half_life_days}")
        # Contributions are explained by rule name, so a name must say which rule it was.
        seen: set[str] = set()
        tables: tuple[tuple[str, Sequence[FitRule | EngagementRule]], ...] = (
            ("fit", self.fit),
            ("engagement", self.engagement),
        )
        for table, rules in tables:
            for index, rule in enumerate(rules):
                if rule.name in seen:
                    raise ValueError(f"{table}[{index}].name: duplicate rule name {rule.name!r}")
                seen.add(rule.name)


class LeadProfile(msgspec.Struct, frozen=True, kw_only=True):
    """What fit rules look at: the lead as captured, its source (marketing, else channel) and its channel."""

    source: str
    # Kept only where it differs from ``source``: profiles stored before the marketing source existed, and any
    # lead naming none, read the same (and fold to the same rows) whichever way they were made.
    channel: str | None = None
    utm_campaign: str | None = None
    email: str | None = None
    phone: str | None = None
    company: str | None = None
    job_title: str | None = None
    country: str | None = None
    message: str | None = None
    form_id: str | None = None
    campaign: dict[str, str] = {}
    answers: dict[str, str] = {}

    def value(self, field: str) -> str | None:
        """The text of a fit rule's field; None when the lead left it out or blank."""
        text: str | None
        if field == "email_domain":
            text = self.email.rpartition("@")[2].lower() if self.email and "@" in self.email else None
        elif field == "has_phone":
            text = "true" if self.phone and self.phone.strip() else "false"
        elif field == "channel":
            text = self.channel or self.source
        elif field.startswith("answers."):
            text = self.answers.get(field.removeprefix("answers."))
        elif field.startswith("campaign."):
            text = self.campaign.get(field.removeprefix("campaign."))
        else:
            text = getattr(self, field)
        return text if text is not None and text.strip() else None


ERASED = "[erased]"
"""What a sealed field reads once its lead's key is gone (events/personal.py): no value to score on."""


def _given(value: str | None) -> str | None:
    return None if value == ERASED else value


def profile_from(captured: LeadCaptured, channel: str) -> LeadProfile:
    """The profile of a captured lead; ``channel`` is the envelope's ``source`` ("web_form", "meta", ...).

    Workers read captures opened with the lead's key. A capture still sealed (or erased) leaves only what the
    log holds in clear: the country, whether there is a phone, and for captures before 2026-11-23 the e-mail's
    domain; never the values."""
    email = _given(captured.email)
    if email is None and captured.email_domain:
        email = f"@{captured.email_domain}"
    phone = _given(captured.phone)
    if phone is None and captured.has_phone:
        phone = "(sealed)"
    source = lead_source(captured, channel)
    return LeadProfile(
        source=source,
        channel=channel if channel != source else None,
        utm_campaign=captured.utm_campaign,
        email=email,
        phone=phone,
        company=_given(captured.company),
        job_title=_given(captured.job_title),
        country=captured.country,
        message=_given(captured.message),
        form_id=_given(captured.form_id),
        campaign=dict(captured.campaign),
        answers=dict(captured.answers),
    )


def with_details(profile: LeadProfile, details: LeadDetailsFetched) -> LeadProfile:
    """The profile completed with what a source's API answered for the lead (Meta's Graph API): given fields win."""
    given = {
        "email": _given(details.email),
        "phone": _given(details.phone),
        "company": _given(details.company),
        "job_title": _given(details.job_title),
    }
    return msgspec.structs.replace(
        profile,
        **{k: v for k, v in given.items() if v is not None},
        answers=profile.answers | dict(details.answers),
    )


CORRECTED_PROFILE = ("email", "phone", "company", "job_title", "country")
"""The fields of a correction (``lead.corrected.v1``) a profile holds; names are not scored."""


def corrected(profile: LeadProfile, correction: LeadCorrected) -> LeadProfile:
    """The profile with a correction's listed fields taking their new values (a listed field without one is cleared;
    one read ``[erased]`` is gone)."""
    changes = {f: _given(getattr(correction, f)) for f in correction.fields if f in CORRECTED_PROFILE}
    return msgspec.structs.replace(profile, **changes) if changes else profile


def scrubbed(profile: LeadProfile) -> LeadProfile:
    """What a profile keeps once its lead is erased: what a capture's clear allow-list holds."""
    return LeadProfile(
        source=profile.source,
        channel=profile.channel,
        utm_campaign=profile.utm_campaign,
        country=profile.country,
        phone="(sealed)" if profile.phone is not None else None,
    )


class Touch(msgspec.Struct, frozen=True, kw_only=True):
    """One touchpoint with the lead, at business time (timezone-aware)."""

    at: dt.datetime
    kind: TouchpointKind
    direction: Direction
    outcome: str | None = None

    def __post_init__(self) -> None:
        if self.at.utcoffset() is None:
            raise ValueError("at: must be timezone-aware")


class Contribution(msgspec.Struct, frozen=True, kw_only=True):
    """What one rule added, and why."""

    rule: str
    kind: Literal["fit", "engagement"]
    points: float
    detail: str


class Score(msgspec.Struct, frozen=True, kw_only=True):
    total: float
    fit: float
    engagement: float
    contributions: list[Contribution]
    qualified: bool
    rules_version: int


def score(
    rules: ScoringRules,
    profile: LeadProfile,
    touches: Sequence[Touch],
    as_of: dt.datetime,
    known_fit: Sequence[Contribution] | None = None,
) -> Score:
    """The lead's score as of a business time: touches after ``as_of`` are not known yet and do not count.
    ``known_fit``: the profile's fit contributions under these rules when the caller already has them."""
    if as_of.utcoffset() is None:
        raise ValueError("as_of must be timezone-aware")
    contributions = _fit(rules, profile) if known_fit is None else list(known_fit)
    # Most recent first, ties broken on every field, so max_count picks the same touches whatever the input order.
    known = sorted(
        ((as_of - t.at, t) for t in touches if t.at <= as_of),
        key=lambda aged: (aged[0], aged[1].kind, aged[1].direction, aged[1].outcome or ""),
    )
    for rule in rules.engagement:
        matching = [(age, t) for age, t in known if rule.matches(t, age)]
        counted = matching if rule.max_count is None else matching[: rule.max_count]
        points = _round(sum(rule.points * 0.5 ** (age / _DAY / rules.half_life_days) for age, _ in counted))
        if points != 0:
            groups = Counter((t.kind, t.direction) for _, t in counted)
            detail = ", ".join(f"{n} x {kind} {direction}" for (kind, direction), n in sorted(groups.items()))
            detail += ", decayed"
            if len(counted) < len(matching):
                detail += f"; the most recent {len(counted)} of {len(matching)}"
            contributions.append(Contribution(rule=rule.name, kind="engagement", points=points, detail=detail))
    # Totals are sums of the rounded contributions, so the explanation adds up to exactly what is shown.
    fit = _round(sum(c.points for c in contributions if c.kind == "fit"))
    engagement = _round(sum(c.points for c in contributions if c.kind == "engagement"))
    total = _round(fit + engagement)
    return Score(
        total=total,
        fit=fit,
        engagement=engagement,
        contributions=contributions,
        qualified=total >= rules.threshold,
        rules_version=rules.version,
    )


def fit_score(rules: ScoringRules, profile: LeadProfile) -> float:
    """The fit part of the score alone: what the lead told us, before anyone talked to them."""
    return _round(sum(c.points for c in _fit(rules, profile)))


def explain(result: Score) -> str:
    """A score as text for people: the totals, then one line per contributing rule."""
    lines = [
        f"score {_fmt(result.total)} (fit {_fmt(result.fit)}, engagement {_fmt(result.engagement)}),"
        f" scoring rules v{result.rules_version}"
    ]
    lines += [f"{_signed(c.points)} {c.rule}: {c.detail}" for c in result.contributions]
    return "\n".join(lines)


def _fit(rules: ScoringRules, profile: LeadProfile) -> list[Contribution]:
    contributions = []
    for rule in rules.fit:
        value = profile.value(rule.field)
        detail = None if value is None else rule.describe(value)
        points = _round(rule.points)
        if detail is not None and points != 0:
            contributions.append(Contribution(rule=rule.name, kind="fit", points=points, detail=detail))
    return contributions


def _round(value: float) -> float:
    # Adding 0.0 turns -0.0 into 0.0, which nobody wants to read in an explanation.
    return round(float(value), 2) + 0.0


def _fmt(number: float) -> str:
    return format(number, ".15g")


def _signed(number: float) -> str:
    return ("-" if number < 0 else "+") + _fmt(abs(number))


_NUMBER = re.compile(
    r"(?P<int>\d{1,3}(?:[ \u00a0\u202f',.]\d{3}(?!\d))+|\d+)(?:[.,](?P<frac>\d+))?(?:\s?(?P<unit>[kKmM])(?![^\W\d_]))?"
)


def parse_number(text: str) -> float | None:
    """The first number in a free-text answer, or None. Digit groups may be separated by blanks, commas, dots or
    apostrophes ("25 000 EUR", "1,000,000", "1.500"); a ``k`` or ``m`` right after the number multiplies it by a
    thousand or a million ("25k"). Of a bracket like "51-200" it is the lower bound."""
    match = _NUMBER.search(text)
    if match is None:
        return None
    number = float(re.sub(r"\D", "", match["int"]) + (f".{match['frac']}" if match["frac"] else ""))
    return number * {"k": 1e3, "m": 1e6}.get((match["unit"] or "").lower(), 1.0)


NO_RULES = ScoringRules(version=1, threshold=1.0, half_life_days=14.0)
"""What a rules file without a ``[scoring]`` table scores by: every lead 0, nobody qualified."""


def rules_from_toml(text: str) -> ScoringRules:
    """Scoring rules from TOML: the ``[scoring]`` table, or the whole document when it has none.

    ValueError names the offending field and says why, e.g. ``scoring.fit[2].pattern: invalid regex (...)``."""
    document = _parse(text)
    return scoring_rules_of(document.get("scoring", document))


def _parse(text: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"scoring: invalid TOML ({exc})") from exc


def scoring_rules_of(table: Any) -> ScoringRules:
    """Scoring rules from a decoded TOML table; ValueError as :func:`rules_from_toml`."""
    try:
        return msgspec.convert(table, ScoringRules)
    except msgspec.ValidationError as exc:
        raise ValueError(_where(str(exc))) from exc


def _where(message: str) -> str:
    """msgspec's "reason - at `$.fit[2]`" as "scoring.fit[2].pattern: reason".

    The checks in ``__post_init__`` start their reasons with the field they are about, which msgspec does not
    know (its path ends at the struct): that field is moved over to the path."""
    located = re.fullmatch(r"(?s)(?P<reason>.*) - at `\$(?P<path>[^`]*)`", message)
    reason, path = (located["reason"], located["path"]) if located else (message, "")
    field = re.match(r"(?s)(?P<field>[A-Za-z_][\w.\[\]]*): (?P<reason>.*)", reason)
    if field:
        path, reason = f"{path}.{field['field']}", field["reason"]
    return f"scoring{path}: {reason}"
