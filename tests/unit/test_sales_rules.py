"""The rules file decodes once into SalesRules, and the example files give the rules they gave before."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from projections.rules import NO_SALES_RULES, sales_rules_from_toml
from projections.scoring import NO_RULES
from workers.registry import build_rules

DEPLOY = Path(__file__).parents[2] / "deploy"

# The digests builds recorded for these files before the rules were one type: equal digests mean equal rules,
# and a build made from them is not refused as made from other rules.
BEFORE = {
    # sla_v2 (lapsed history, deadlines counted again on a new owner) is a new build, and sales.toml gained its
    # history horizon with it: a new digest, recorded by the new build.
    ("sales.toml", "sla"): "2419b8f53b9daa37f838e3ce8954baa7d00fdf912e6059506bac722f26941c81",
    ("sales.toml", "routing"): "3941c2c6cc005d0a8e06b6b2e09d28a5d0ad57a6688869b97496234be4a3cf7c",
    ("sales.toml", "scores"): "5a5ad99be2f091ac92f7fef78d1266917134a1d71ba157c04736af4d82cbf105",
    # notify_v2 reads the top-level and team managers (who hear what nobody owns, and escalations) and has new
    # defaults: a new digest, recorded by a new build (notify's rules are not binding anyway).
    ("sales.toml", "notify"): "4cf46fb8f1eaa16f89ac8c25d1ab9fb97f147bb2b4d2105539c670fcb2d4a753",
    ("dev.toml", "sla"): "b9f0dbe94eef6c3b858400a54d4273172063a761b4f5d13f9d892f67fb307ef0",
    ("dev.toml", "routing"): "a5846f6ccd359a615104e8e8ac05fe636116a861e4b4b4eebbd88da5741dd0a9",
    ("dev.toml", "scores"): "4d9ebc996d8bd8dfccf87fb91be00c9053ca2eacac767d2a8d5b03b6abd018eb",
    ("dev.toml", "notify"): "dfd33c0c1ebd4b1e784093ff5dec6e5c097ccbed80004ca2be48f9e6286a1740",
}


@pytest.mark.parametrize(("file", "worker"), sorted(BEFORE))
def test_the_deploy_files_give_the_rules_they_gave_before(file: str, worker: str) -> None:
    text = (DEPLOY / file).read_text()
    assert build_rules(worker, text, file).sha256 == BEFORE[file, worker]


def test_the_shared_tables_reach_the_sections_that_read_them() -> None:
    rules = sales_rules_from_toml((DEPLOY / "sales.toml").read_text())
    assert rules.sla.teams == rules.routing.teams and set(rules.sla.teams) == {"inside-sales", "enterprise"}
    assert rules.sla.manager == "sales-lead" and rules.sla.calendar.timezone == "Europe/Warsaw"
    assert rules.routing.fallback == "sales-lead" and rules.scoring.threshold == 50
    assert rules.notify.recipients["ana"].email == "ana@example.com"


def test_no_text_is_no_rules() -> None:
    assert sales_rules_from_toml("") == NO_SALES_RULES
    assert sales_rules_from_toml("").scoring is NO_RULES


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("[sla\n", "rules: invalid TOML"),
        ('[[sla.policies]]\nname = "x"\nkind = "first_touch"\n', "sla rules: .*within_minutes"),
        ('[[routing.rules]]\nname = "x"\n', "routing rules: "),
        ('[notify.recipients.ana]\nwebhook = "ftp://x"\n', "notify rules: .*webhook"),
        ("[scoring]\nversion = 1\nthreshold = 1\nhalf_life_days = 0\n", "scoring.half_life_days"),
        ('[calendar]\ntimezone = "Mars/Olympus"\n', "sla rules: .*timezone"),
    ],
)
def test_bad_rules_name_their_section_and_field(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        sales_rules_from_toml(text)


def test_a_team_names_its_country_and_its_deadlines_skip_that_country_s_holidays() -> None:
    text = (DEPLOY / "sales.toml").read_text()
    with_countries = text.replace(
        'calendar = { timezone = "Europe/Warsaw", opens = 08:00:00,',
        'calendar = { timezone = "Europe/Warsaw", country = "PL", opens = 08:00:00,',
    ).replace('calendar = { timezone = "Asia/Shanghai",', 'calendar = { timezone = "Asia/Shanghai", country = "CN",')
    assert with_countries.count('country = "') == text.count('country = "') + 2
    before, after = sales_rules_from_toml(text).sla, sales_rules_from_toml(with_countries).sla
    policy = before.policy("first_touch", "lead", "web_form", None)
    assert policy is not None and policy.within_minutes == 60
    warsaw, shanghai = ZoneInfo("Europe/Warsaw"), ZoneInfo("Asia/Shanghai")
    # Independence Day, 11 November, for ana in inside-sales (08:00-18:00 in Warsaw).
    captured = dt.datetime(2026, 11, 10, 17, 30, tzinfo=warsaw)
    assert before.after(policy, captured, 60, "ana") == dt.datetime(2026, 11, 11, 8, 30, tzinfo=warsaw)
    assert after.after(policy, captured, 60, "ana") == dt.datetime(2026, 11, 12, 8, 30, tzinfo=warsaw)
    # The team's own days still count: 24 and 25 December, then Boxing Day is Poland's.
    christmas_eve = dt.datetime(2026, 12, 23, 17, 30, tzinfo=warsaw)
    assert before.after(policy, christmas_eve, 60, "ana") == dt.datetime(2026, 12, 28, 8, 30, tzinfo=warsaw)
    assert after.after(policy, christmas_eve, 60, "ana") == dt.datetime(2026, 12, 28, 8, 30, tzinfo=warsaw)
    # National Day week for chen in enterprise (09:00-18:00 in Shanghai).
    eve = dt.datetime(2026, 9, 30, 17, 30, tzinfo=shanghai)
    assert before.after(policy, eve, 60, "chen") == dt.datetime(2026, 10, 1, 9, 30, tzinfo=shanghai)
    assert after.after(policy, eve, 60, "chen") == dt.datetime(2026, 10, 8, 9, 30, tzinfo=shanghai)
    # A rules file that names a country is other rules: its builds record another digest.
    assert build_rules("sla", with_countries, "x").sha256 != build_rules("sla", text, "x").sha256
