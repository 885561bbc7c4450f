"""Lead scoring without a server: the rules file, every matcher, decay, as-of, caps, explanations, bad rules."""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from events.types import LeadCaptured
from projections.rules import sales_rules_from_toml
from projections.scoring import (
    NO_RULES,
    EngagementRule,
    FitRule,
    LeadProfile,
    Score,
    ScoringRules,
    Touch,
    explain,
    fit_score,
    parse_number,
    profile_from,
    rules_from_toml,
    score,
)

DEPLOY = Path(__file__).parents[2] / "deploy"
NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
LEAD = LeadProfile(source="web_form")


def rules(*fit: FitRule, engagement: tuple[EngagementRule, ...] = (), threshold: float = 50.0) -> ScoringRules:
    return ScoringRules(version=1, threshold=threshold, half_life_days=14, fit=list(fit), engagement=list(engagement))


def fit_points(rule: FitRule, profile: LeadProfile) -> float:
    return score(rules(rule), profile, [], NOW).fit


def ago(days: float, kind: str = "call", direction: str = "outbound", outcome: str | None = None) -> Touch:
    return msgspec.convert(
        {"at": NOW - dt.timedelta(days=days), "kind": kind, "direction": direction, "outcome": outcome}, Touch
    )


# --- the rules file ----------------------------------------------------------------------------------------


def test_the_example_file_parses() -> None:
    r = sales_rules_from_toml((DEPLOY / "sales.toml").read_text()).scoring
    assert r.version == 1 and 40 <= r.threshold <= 60 and r.half_life_days == 14
    assert len(r.fit) >= 6 and len(r.engagement) >= 4
    assert any(f.points < 0 for f in r.fit)


def test_the_example_file_scores_a_strong_lead_qualified_and_a_weak_one_not() -> None:
    r = sales_rules_from_toml((DEPLOY / "sales.toml").read_text()).scoring
    strong = LeadProfile(
        source="web_form",
        email="anna@acme.example",
        phone="+48 600 000 000",
        job_title="Head of Sales",
        country="PL",
        answers={"company_size": "51-200", "budget": "25 000 EUR"},
    )
    weak = LeadProfile(source="meta", email="someone@gmail.com", job_title="Student")
    assert score(r, strong, [], NOW).qualified
    s = score(r, weak, [ago(1, "email", "outbound", "Replied")], NOW)
    assert not s.qualified and s.fit < 0 and s.engagement > 0


def test_the_shared_rules_file_holds_a_scoring_table_or_none() -> None:
    assert sales_rules_from_toml("").scoring is NO_RULES
    assert sales_rules_from_toml('manager = "x"\n').scoring is NO_RULES
    assert not score(NO_RULES, LEAD, [ago(0)], NOW).qualified
    text = (DEPLOY / "sales.toml").read_text()
    assert sales_rules_from_toml(text).scoring == rules_from_toml(text)


def test_a_file_of_its_own_may_leave_out_the_table() -> None:
    r = rules_from_toml(
        'version = 2\nthreshold = 10\nhalf_life_days = 7\n[[fit]]\nname = "a"\nfield = "company"\n'
        'equals = "Acme"\npoints = 1\n'
    )
    assert r.version == 2 and r.fit[0].name == "a"


def test_rules_survive_a_json_round_trip() -> None:
    r = sales_rules_from_toml((DEPLOY / "sales.toml").read_text()).scoring
    assert msgspec.json.decode(msgspec.json.encode(r), type=ScoringRules) == r


# --- matchers ----------------------------------------------------------------------------------------------


def test_equals_ignores_case_and_surrounding_blanks() -> None:
    rule = FitRule(name="acme", field="company", equals=" ACME ", points=7)
    assert fit_points(rule, LeadProfile(source="api", company="acme  ")) == 7
    assert fit_points(rule, LeadProfile(source="api", company="Acme Corp")) == 0
    assert fit_points(rule, LeadProfile(source="api")) == 0


def test_one_of_ignores_case() -> None:
    rule = FitRule(name="dach", field="country", one_of=["de", "AT", "CH"], points=10)
    assert fit_points(rule, LeadProfile(source="api", country="DE")) == 10
    assert fit_points(rule, LeadProfile(source="api", country="PL")) == 0


def test_pattern_is_a_case_insensitive_search() -> None:
    rule = FitRule(name="senior", field="job_title", pattern=r"\b(head|director|vp)\b", points=20)
    assert fit_points(rule, LeadProfile(source="api", job_title="Regional HEAD of Growth")) == 20
    assert fit_points(rule, LeadProfile(source="api", job_title="Headhunter")) == 0


def test_range_bounds_are_inclusive_and_either_may_be_absent() -> None:
    both = FitRule(name="size", field="answers.company_size", min=50, max=500, points=15)
    at_least = FitRule(name="budget", field="answers.budget", min=10_000, points=20)
    at_most = FitRule(name="tiny", field="answers.company_size", max=10, points=-5)
    for value, expected in [("50", 15), ("500", 15), ("49", 0), ("501", 0), ("51-200", 15), ("no idea", 0)]:
        assert fit_points(both, LeadProfile(source="api", answers={"company_size": value})) == expected, value
    assert fit_points(at_least, LeadProfile(source="api", answers={"budget": "10000"})) == 20
    assert fit_points(at_least, LeadProfile(source="api", answers={"budget": "9 999"})) == 0
    assert fit_points(at_most, LeadProfile(source="api", answers={"company_size": "10"})) == -5


def test_a_range_reads_the_number_out_of_free_text() -> None:
    rule = FitRule(name="budget", field="answers.budget", min=20_000, max=30_000, points=20)
    assert fit_points(rule, LeadProfile(source="api", answers={"budget": "25 000 EUR"})) == 20
    s = score(rules(rule), LeadProfile(source="api", answers={"budget": "25 000 EUR"}), [], NOW)
    assert s.contributions[0].detail == "answers.budget 25000 in 20000..30000"


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("25000", 25_000),
        ("25 000 EUR", 25_000),
        ("25\u00a0000 zł", 25_000),
        ("EUR 1,250,000", 1_250_000),
        ("1.500", 1_500),
        ("1'500 CHF", 1_500),
        ("2.5", 2.5),
        ("25k", 25_000),
        ("2 M€", 2_000_000),
        ("51-200 employees", 51),
        ("500+", 500),
        ("200 members", 200),
        ("none yet", None),
        ("", None),
    ],
)
def test_parse_number(text: str, number: float | None) -> None:
    assert parse_number(text) == number


def test_derived_fields_and_prefixed_keys() -> None:
    profile = LeadProfile(
        source="meta",
        email="Anna@Gmail.COM",
        phone="+48 600 000 000",
        form_id="f-1",
        message="We need a demo next week",
        campaign={"utm_source": "linkedin"},
        answers={"use_case": "  "},
    )
    cases = [
        (FitRule(name="free", field="email_domain", one_of=["gmail.com"], points=-10), -10),
        (FitRule(name="phone", field="has_phone", equals="true", points=5), 5),
        (FitRule(name="no-phone", field="has_phone", equals="false", points=-5), 0),
        (FitRule(name="meta", field="source", equals="meta", points=3), 3),
        (FitRule(name="form", field="form_id", equals="f-1", points=2), 2),
        (FitRule(name="demo", field="message", pattern="demo", points=8), 8),
        (FitRule(name="li", field="campaign.utm_source", equals="LinkedIn", points=4), 4),
        # A blank answer is no answer: it matches nothing, not even a pattern that matches anything.
        (FitRule(name="blank", field="answers.use_case", pattern=".*", points=1), 0),
        (FitRule(name="absent", field="answers.budget", pattern=".*", points=1), 0),
    ]
    for rule, expected in cases:
        assert fit_points(rule, profile) == expected, rule.name
    assert fit_points(cases[1][0], LeadProfile(source="api")) == 0
    assert fit_points(FitRule(name="np", field="has_phone", equals="false", points=-5), LeadProfile(source="x")) == -5


def test_negative_points_lower_the_score_and_are_explained() -> None:
    free_mail = FitRule(name="free-mail", field="email_domain", one_of=["gmail.com", "wp.pl"], points=-15)
    senior = FitRule(name="senior", field="job_title", pattern="director", points=20)
    s = score(rules(senior, free_mail), LeadProfile(source="api", email="x@wp.pl", job_title="Director"), [], NOW)
    assert s.fit == 5 and s.total == 5
    assert [(c.rule, c.points) for c in s.contributions] == [("senior", 20), ("free-mail", -15)]
    assert s.contributions[1].detail == "email_domain is 'wp.pl', one of 2 listed"


def test_profile_from_a_captured_lead() -> None:
    captured = LeadCaptured(
        email="a@acme.example",
        phone="+48 600 000 000",
        first_name="Anna",
        company="Acme",
        job_title="CTO",
        country="PL",
        message="hi",
        form_id="f1",
        campaign={"utm_campaign": "spring"},
        answers={"budget": "10k"},
    )
    profile = profile_from(captured, "typeform")
    assert profile == LeadProfile(
        source="typeform",
        email="a@acme.example",
        phone="+48 600 000 000",
        company="Acme",
        job_title="CTO",
        country="PL",
        message="hi",
        form_id="f1",
        campaign={"utm_campaign": "spring"},
        answers={"budget": "10k"},
    )
    assert profile.value("email_domain") == "acme.example"


def test_a_rule_on_source_sees_the_marketing_source_and_one_on_channel_the_channel() -> None:
    referral = profile_from(LeadCaptured(source="referral", utm_campaign="partner-week"), "api")
    plain = profile_from(LeadCaptured(), "web_form")
    on_source = FitRule(name="referrals", field="source", equals="referral", points=15)
    on_channel = FitRule(name="api", field="channel", equals="api", points=5)
    on_campaign = FitRule(name="pw", field="utm_campaign", equals="partner-week", points=3)
    assert [fit_points(r, referral) for r in (on_source, on_channel, on_campaign)] == [15, 5, 3]
    # A lead naming no marketing source keeps its channel as its source: rules written on channels still match.
    assert plain.value("source") == "web_form" and plain.value("channel") == "web_form"
    assert plain == LeadProfile(source="web_form") and referral.channel == "api"
    # A profile stored before the channel was a field reads its source as its channel.
    assert LeadProfile(source="meta").value("channel") == "meta"


# --- explanations ------------------------------------------------------------------------------------------


def test_the_explanation_lists_exactly_the_contributing_rules_and_adds_up() -> None:
    r = rules(
        FitRule(name="senior", field="job_title", pattern="head|director|vp", points=20),
        FitRule(name="dach", field="country", one_of=["DE"], points=10),  # does not match
        FitRule(name="zero", field="company", equals="Acme", points=0),  # matches, adds nothing
        FitRule(name="budget", field="answers.budget", min=10_000, points=12.345),
        engagement=(
            EngagementRule(name="calls", kind=["call"], direction=["outbound"], points=10),
            EngagementRule(name="sms", kind=["sms"], points=5),  # no such touch
        ),
    )
    profile = LeadProfile(source="api", company="Acme", job_title="VP Sales", answers={"budget": "25 000 EUR"})
    s = score(r, profile, [ago(0), ago(14), ago(3, "note", "internal")], NOW)
    assert [(c.rule, c.kind, c.points) for c in s.contributions] == [
        ("senior", "fit", 20),
        ("budget", "fit", 12.35),
        ("calls", "engagement", 15),
    ]
    assert s.contributions[0].detail == "job_title matches 'head|director|vp'"
    assert s.contributions[2].detail == "2 x call outbound, decayed"
    assert abs(sum(c.points for c in s.contributions) - s.total) < 0.01 * len(s.contributions)
    assert (s.fit, s.engagement, s.total) == (32.35, 15, 47.35)
    text = explain(s)
    assert text.splitlines() == [
        "score 47.35 (fit 32.35, engagement 15), scoring rules v1",
        "+20 senior: job_title matches 'head|director|vp'",
        "+12.35 budget: answers.budget 25000 >= 10000",
        "+15 calls: 2 x call outbound, decayed",
    ]


def test_fit_score_is_the_fit_part_of_the_score() -> None:
    r = sales_rules_from_toml((DEPLOY / "sales.toml").read_text()).scoring
    profile = LeadProfile(source="web_form", job_title="Founder", country="DE", email="x@gmail.com")
    assert fit_score(r, profile) == score(r, profile, [ago(1, "meeting", "inbound")], NOW).fit == 20 + 10 + 10 - 15


# --- engagement: decay, as of, filters, caps ----------------------------------------------------------------


CALLS = EngagementRule(name="calls", kind=["call"], points=10)


def test_points_halve_after_one_half_life() -> None:
    r = rules(engagement=(CALLS,))
    assert score(r, LEAD, [ago(0)], NOW).engagement == 10
    assert score(r, LEAD, [ago(14)], NOW).engagement == 5
    assert score(r, LEAD, [ago(28)], NOW).engagement == 2.5
    assert score(r, LEAD, [ago(7)], NOW).engagement == round(10 * 0.5**0.5, 2)


def test_touches_after_as_of_are_not_known_yet() -> None:
    r = rules(engagement=(CALLS,))
    touches = [ago(1), ago(-1), ago(-30)]
    assert score(r, LEAD, touches, NOW) == score(r, LEAD, touches[:1], NOW)
    assert score(r, LEAD, touches, NOW - dt.timedelta(days=2)).engagement == 0
    assert score(r, LEAD, [ago(0)], NOW).engagement == 10  # at as_of itself counts


def test_max_count_takes_the_most_recent_touches() -> None:
    r = rules(engagement=(msgspec.structs.replace(CALLS, max_count=2),))
    s = score(r, LEAD, [ago(28), ago(0), ago(14), ago(42)], NOW)
    assert s.engagement == 15
    assert s.contributions[0].detail == "2 x call outbound, decayed; the most recent 2 of 4"


def test_within_days_kind_direction_and_outcome_filter_touches() -> None:
    replied = EngagementRule(name="replied", kind=["email"], direction=["outbound"], outcome="repl(y|ied)", points=10)
    recent = EngagementRule(name="recent", points=1, within_days=7)
    r = rules(engagement=(replied, recent))
    touches = [
        ago(0, "email", "outbound", "REPLIED within the hour"),
        ago(0, "email", "outbound", "bounced"),
        ago(0, "email", "outbound"),
        ago(0, "email", "inbound", "replied"),
        ago(7, "note", "internal"),  # exactly within_days old: no longer younger than it
        ago(6.9, "sms", "inbound"),
    ]
    s = score(r, LEAD, touches, NOW)
    assert [(c.rule, c.points) for c in s.contributions] == [
        ("replied", 10),
        ("recent", round(4 + 0.5 ** (6.9 / 14), 2)),
    ]
    assert s.contributions[1].detail == "1 x email inbound, 3 x email outbound, 1 x sms inbound, decayed"


def test_reaching_the_threshold_qualifies() -> None:
    senior = FitRule(name="senior", field="job_title", pattern="director", points=40)
    r = rules(senior, engagement=(CALLS,), threshold=50)
    profile = LeadProfile(source="api", job_title="Director")
    assert not score(r, profile, [], NOW).qualified
    assert not score(r, profile, [ago(14)], NOW).qualified  # 45
    s = score(r, profile, [ago(0)], NOW)
    assert s.total == 50 and s.qualified and s.rules_version == 1
    assert not score(r, profile, [ago(0)], NOW + dt.timedelta(days=1)).qualified  # it cools off


def test_times_must_carry_a_time_zone() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        Touch(at=dt.datetime(2026, 1, 1), kind="call", direction="outbound")
    with pytest.raises(ValueError, match="timezone-aware"):
        score(rules(), LEAD, [], dt.datetime(2026, 1, 1))


# --- invalid rules -------------------------------------------------------------------------------------------

HEAD = "[scoring]\nversion = 1\nthreshold = 50\nhalf_life_days = 14\n"
GOOD_FIT = '[[scoring.fit]]\nname = "ok"\nfield = "company"\nequals = "Acme"\npoints = 1\n'


@pytest.mark.parametrize(
    ("text", "where", "why"),
    [
        (
            HEAD
            + GOOD_FIT
            + '[[scoring.fit]]\nname = "two"\nfield = "company"\nequals = "a"\npattern = "a"\npoints = 1',
            "scoring.fit[1]: ",
            "exactly one of equals, one_of, pattern, min/max (got equals and pattern)",
        ),
        (
            HEAD + '[[scoring.fit]]\nname = "none"\nfield = "company"\npoints = 1',
            "scoring.fit[0]: ",
            "(got none)",
        ),
        (
            HEAD
            + GOOD_FIT
            + GOOD_FIT.replace('"ok"', '"ok2"')
            + '[[scoring.fit]]\nname = "bad"\nfield = "job_title"\npattern = "(head"\npoints = 1',
            "scoring.fit[2].pattern: ",
            "invalid regex",
        ),
        (
            HEAD + '[[scoring.engagement]]\nname = "bad"\noutcome = "[x"\npoints = 1',
            "scoring.engagement[0].outcome: ",
            "invalid regex",
        ),
        (
            HEAD + '[[scoring.fit]]\nname = "bad"\nfield = "salary"\nequals = "a"\npoints = 1',
            "scoring.fit[0].field: ",
            "unknown field 'salary'",
        ),
        (
            HEAD + '[[scoring.fit]]\nname = "bad"\nfield = "answers."\nequals = "a"\npoints = 1',
            "scoring.fit[0].field: ",
            "unknown field 'answers.'",
        ),
        (HEAD.replace("half_life_days = 14", "half_life_days = 0"), "scoring.half_life_days: ", "must be above 0"),
        (HEAD.replace("version = 1", "version = 0"), "scoring.version: ", "at least 1"),
        (HEAD.replace("threshold = 50", 'threshold = "high"'), "scoring.threshold: ", "Expected `float`"),
        (HEAD.replace("threshold = 50", "threshold = inf"), "scoring.threshold: ", "finite"),
        (HEAD.replace("threshold = 50\n", ""), "scoring: ", "missing required field `threshold`"),
        (
            HEAD + '[[scoring.fit]]\nname = "r"\nfield = "company"\nmin = 10\nmax = 5\npoints = 1',
            "scoring.fit[0].min: ",
            "above max",
        ),
        (
            HEAD + '[[scoring.fit]]\nname = "r"\nfield = "company"\none_of = []\npoints = 1',
            "scoring.fit[0].one_of: ",
            "at least one",
        ),
        (
            HEAD + GOOD_FIT + '[[scoring.engagement]]\nname = "ok"\npoints = 1',
            "scoring.engagement[0].name: ",
            "duplicate",
        ),
        (
            HEAD + '[[scoring.engagement]]\nname = "e"\nkind = ["fax"]\npoints = 1',
            "scoring.engagement[0].kind[0]: ",
            "fax",
        ),
        (
            HEAD + '[[scoring.engagement]]\nname = "e"\nmax_count = 0\npoints = 1',
            "scoring.engagement[0].max_count: ",
            "",
        ),
        (
            HEAD + '[[scoring.engagement]]\nname = "e"\nwithin_days = -1\npoints = 1',
            "scoring.engagement[0].within_days: ",
            "",
        ),
        (
            HEAD + '[[scoring.engagement]]\nname = "e"\npoints = 1\nweight = 2',
            "scoring.engagement[0]: ",
            "unknown field `weight`",
        ),
        ("[scoring\n", "scoring: ", "invalid TOML"),
    ],
)
def test_invalid_rules_name_the_field(text: str, where: str, why: str) -> None:
    with pytest.raises(ValueError) as caught:
        rules_from_toml(text)
    message = str(caught.value)
    assert message.startswith(where) and why in message, message


def test_invalid_rules_built_in_code_are_refused_too() -> None:
    with pytest.raises(ValueError, match="half_life_days"):
        ScoringRules(version=1, threshold=1, half_life_days=0)
    with pytest.raises(ValueError, match="exactly one"):
        FitRule(name="x", field="company", one_of=["a"], min=1, points=1)
    with pytest.raises(ValueError, match="pattern: invalid regex"):
        FitRule(name="x", field="company", pattern="(", points=1)
    with pytest.raises(ValueError, match="unknown field"):
        FitRule(name="x", field="Company", equals="a", points=1)
    with pytest.raises(ValueError, match="kind"):
        EngagementRule(name="x", kind=[], points=1)


# --- properties ----------------------------------------------------------------------------------------------

KIND = st.sampled_from(["call", "email", "meeting", "note", "sms"])
DIRECTION = st.sampled_from(["inbound", "outbound", "internal"])
OUTCOME = st.none() | st.sampled_from(["replied", "booked", "no answer", "Connected"])
TOUCHES = st.lists(
    st.builds(
        lambda days, kind, direction, outcome: ago(days, kind, direction, outcome),
        st.floats(min_value=0, max_value=120, allow_nan=False),
        KIND,
        DIRECTION,
        OUTCOME,
    ),
    max_size=12,
)


def engagement_rules(points: st.SearchStrategy[float]) -> st.SearchStrategy[list[EngagementRule]]:
    rule = st.builds(
        lambda name, kinds, directions, outcome, within, cap, p: EngagementRule(
            name=name, kind=kinds, direction=directions, outcome=outcome, within_days=within, max_count=cap, points=p
        ),
        st.just(""),
        st.none() | st.lists(KIND, min_size=1, max_size=3, unique=True),
        st.none() | st.lists(DIRECTION, min_size=1, max_size=2, unique=True),
        st.none() | st.sampled_from(["repl", "book|connect", "^no"]),
        st.none() | st.floats(min_value=0.5, max_value=90),
        st.none() | st.integers(min_value=1, max_value=4),
        points,
    )
    return st.lists(rule, max_size=4).map(
        lambda rs: [msgspec.structs.replace(r, name=f"e{i}") for i, r in enumerate(rs)]
    )


FIT_RULES = [
    FitRule(name="senior", field="job_title", pattern="head|director", points=20),
    FitRule(name="budget", field="answers.budget", min=10_000, points=15.5),
    FitRule(name="free-mail", field="email_domain", one_of=["gmail.com"], points=-12.25),
    FitRule(name="pl", field="country", equals="PL", points=7),
]
PROFILES = st.builds(
    lambda title, budget, email, country: LeadProfile(
        source="api", job_title=title, answers={"budget": budget}, email=email, country=country
    ),
    st.sampled_from([None, "Head of IT", "Engineer", "director"]),
    st.sampled_from(["", "5000", "25 000 EUR", "10k"]),
    st.sampled_from([None, "a@gmail.com", "b@acme.example"]),
    st.sampled_from([None, "PL", "DE"]),
)
HALF_LIFE = st.floats(min_value=0.5, max_value=60)


@settings(max_examples=200, deadline=None)
@given(
    engagement=engagement_rules(st.floats(min_value=0.01, max_value=50)),
    touches=TOUCHES,
    half_life=HALF_LIFE,
    later=st.lists(st.floats(min_value=0, max_value=60), min_size=1, max_size=4),
)
def test_engagement_only_fades_as_time_goes_by(
    engagement: list[EngagementRule], touches: list[Touch], half_life: float, later: list[float]
) -> None:
    r = ScoringRules(version=1, threshold=50, half_life_days=half_life, engagement=engagement)
    previous = score(r, LEAD, touches, NOW).engagement
    for days in sorted(later):
        current = score(r, LEAD, touches, NOW + dt.timedelta(days=days)).engagement
        assert current <= previous
        previous = current


@settings(max_examples=200, deadline=None)
@given(
    profile=PROFILES,
    engagement=engagement_rules(st.floats(min_value=-30, max_value=30)),
    touches=TOUCHES,
    half_life=HALF_LIFE,
    order=st.randoms(use_true_random=False),
)
def test_scores_are_deterministic_and_add_up(
    profile: LeadProfile, engagement: list[EngagementRule], touches: list[Touch], half_life: float, order: random.Random
) -> None:
    r = ScoringRules(version=3, threshold=10, half_life_days=half_life, fit=FIT_RULES, engagement=engagement)
    s = score(r, profile, touches, NOW)
    shuffled = list(touches)
    order.shuffle(shuffled)
    assert score(r, profile, touches, NOW) == s == score(r, profile, shuffled, NOW)
    assert s.total == round(s.fit + s.engagement, 2)
    assert abs(sum(c.points for c in s.contributions) - s.total) < 0.01 * max(1, len(s.contributions))
    assert s.qualified == (s.total >= r.threshold) and s.rules_version == 3
    assert all(c.points != 0 and round(c.points, 2) == c.points for c in s.contributions)
    names = [f.name for f in r.fit] + [e.name for e in r.engagement]
    assert [c.rule for c in s.contributions] == sorted((c.rule for c in s.contributions), key=names.index)
    assert isinstance(msgspec.json.decode(msgspec.json.encode(s), type=Score), Score)
