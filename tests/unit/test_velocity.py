"""The velocity formulas, periods and fold, one by one, against hand-computed values."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from fractions import Fraction
from zoneinfo import ZoneInfo

import pytest

from events.types import LeadAssigned, LeadCaptured, LeadDisqualified, LeadQualified, PipelineDefined, StageDefinition
from projections.stats import (
    CYCLE_FLOOR_DAYS,
    average_money,
    lead_velocity_rate,
    mean,
    median,
    money,
    percentile,
    ratio,
    sales_velocity,
    win_rate,
)
from projections.velocity import StageVisit, deal_at, fold, lead_at, pipeline_at
from projections.velocity_periods import explicit_period, local_midnight, local_range, period
from projections.velocity_report import reached_all, reached_any, stays, time_in_stage
from tests.projection_fixtures import amount, lost, moved, opened, stored, touch, won

UTC = dt.UTC
H = dt.timedelta(hours=1)
D = dt.timedelta(days=1)
T = dt.datetime(2025, 3, 3, tzinfo=UTC)
ORDER = ["new", "qualified", "proposal", "negotiation"]


def utc(year: int, month: int, day: int, hour: int = 0) -> dt.datetime:
    return dt.datetime(year, month, day, hour, tzinfo=UTC)


# --- periods --------------------------------------------------------------------------------------------------


def test_a_week_across_the_spring_dst_change_in_warsaw_has_167_hours() -> None:
    # Sunday 2025-03-30 02:00 CET -> 03:00 CEST. The week runs Monday 24 00:00 CET to Monday 31 00:00 CEST.
    p = period("week", dt.date(2025, 3, 27), "Europe/Warsaw")
    assert p.start == utc(2025, 3, 23, 23)
    assert p.end == utc(2025, 3, 30, 22)
    assert p.end - p.start == 167 * H
    assert p.previous_start == utc(2025, 3, 16, 23)  # the week before: all CET, 168 hours
    assert (
        period("week", dt.date(2025, 3, 24), "Europe/Warsaw")
        == p
        == period("week", dt.date(2025, 3, 30), "Europe/Warsaw")
    )


def test_a_week_across_the_autumn_dst_change_in_warsaw_has_169_hours() -> None:
    p = period("week", dt.date(2025, 10, 26), "Europe/Warsaw")
    assert (p.start, p.end) == (utc(2025, 10, 19, 22), utc(2025, 10, 26, 23))
    assert p.end - p.start == 169 * H


def test_days_months_and_quarters_are_local_calendar_periods() -> None:
    day = period("day", dt.date(2025, 3, 30), "Europe/Warsaw")
    assert (day.start, day.end, day.previous_start) == (
        utc(2025, 3, 29, 23),
        utc(2025, 3, 30, 22),
        utc(2025, 3, 28, 23),
    )
    march = period("month", dt.date(2025, 3, 31), "Europe/Warsaw")
    assert (march.previous_start, march.start, march.end) == (
        utc(2025, 1, 31, 23),
        utc(2025, 2, 28, 23),
        utc(2025, 3, 31, 22),
    )
    q2 = period("quarter", dt.date(2025, 5, 15), "Europe/Warsaw")
    assert (q2.previous_start, q2.start, q2.end) == (utc(2024, 12, 31, 23), utc(2025, 3, 31, 22), utc(2025, 6, 30, 22))
    q1 = period("quarter", dt.date(2025, 1, 1), "UTC")
    assert (q1.previous_start, q1.start, q1.end) == (utc(2024, 10, 1), utc(2025, 1, 1), utc(2025, 4, 1))
    with pytest.raises(ValueError, match="unknown time zone"):
        period("day", dt.date(2025, 1, 1), "Mars/Olympus_Mons")
    with pytest.raises(ValueError, match="unknown time zone"):
        period("day", dt.date(2025, 1, 1), "../etc")
    with pytest.raises(ValueError, match="period must be one of"):
        period("year", dt.date(2025, 1, 1), "UTC")  # type: ignore[arg-type]


def test_a_missing_local_midnight_starts_the_day_at_the_end_of_the_gap() -> None:
    # Chile jumped from 00:00 -04 to 01:00 -03 on 2024-09-08: that day began at 04:00Z and lasted 23 hours.
    assert local_midnight(dt.date(2024, 9, 8), _zone("America/Santiago")) == utc(2024, 9, 8, 4)
    p = period("day", dt.date(2024, 9, 8), "America/Santiago")
    assert p.end - p.start == 23 * H


def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def test_an_explicit_range_compares_with_the_same_length_before_it() -> None:
    p = explicit_period(dt.datetime(2025, 3, 10, 12, tzinfo=_zone("Europe/Warsaw")), utc(2025, 3, 20))
    assert (p.previous_start, p.start, p.end) == (utc(2025, 2, 28, 22), utc(2025, 3, 10, 11), utc(2025, 3, 20))
    with pytest.raises(ValueError, match="time zone"):
        explicit_period(dt.datetime(2025, 3, 10), utc(2025, 3, 20))
    with pytest.raises(ValueError, match="end after"):
        explicit_period(utc(2025, 3, 20), utc(2025, 3, 20))
    local = local_range(dt.date(2025, 3, 29), dt.date(2025, 3, 31), "Europe/Warsaw")
    assert (local.start, local.end) == (utc(2025, 3, 28, 23), utc(2025, 3, 30, 22))


# --- elementary formulas ---------------------------------------------------------------------------------------


def test_percentiles_interpolate_between_closest_ranks() -> None:
    assert median([4.0, 1.0, 3.0, 2.0]) == 2.5
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.9) == pytest.approx(3.7)  # rank 2.7: 3 + 0.7 x (4 - 3)
    assert percentile([5.0], 0.9) == 5.0
    assert percentile([1.0, 9.0], 0.0) == 1.0 and percentile([1.0, 9.0], 1.0) == 9.0
    assert median([]) is None and mean([]) is None
    assert mean([1.0, 2.0]) == 1.5
    with pytest.raises(ValueError):
        percentile([1.0], 1.5)


def test_rates() -> None:
    assert win_rate(2, 1) == pytest.approx(2 / 3)
    assert win_rate(0, 3) == 0.0 and win_rate(0, 0) is None
    assert ratio(1, 4) == 0.25 and ratio(0, 0) is None
    assert lead_velocity_rate(15, 10) == 0.5
    assert lead_velocity_rate(5, 10) == -0.5
    assert lead_velocity_rate(3, 0) is None


def test_money_rounds_half_even_to_cents() -> None:
    assert money(Fraction(1, 200)) == Decimal("0.00")
    assert money(Fraction(3, 200)) == Decimal("0.02")
    assert average_money(Decimal(1000), 3) == Decimal("333.33")
    assert str(average_money(Decimal("3200"), 2)) == "1600.00"


def test_sales_velocity_is_open_deals_times_value_times_win_rate_over_cycle() -> None:
    # 10 open deals x 1,500 x 1/4 / 30 days = 125 per day.
    assert sales_velocity(10, Fraction(1500), 1, 3, Fraction(30)) == Decimal("125.00")
    assert sales_velocity(2, Fraction(1600), 2, 2, Fraction(12)) == Decimal("133.33")
    assert sales_velocity(2, Fraction(1600), 0, 0, Fraction(12)) is None


def test_sales_velocity_divides_by_at_least_the_cycle_floor() -> None:
    # A deal won the hour it opened (cycle 0.0015 days) made 10,316,972 EUR a day; the divisor is floored at a day.
    assert Fraction(1) == CYCLE_FLOOR_DAYS
    assert sales_velocity(2, Fraction(7736), 1, 0, Fraction(15, 10_000)) == Decimal("15472.00")
    assert sales_velocity(2, Fraction(7736), 1, 0, Fraction(0)) == Decimal("15472.00")
    assert sales_velocity(2, Fraction(7736), 1, 0, Fraction(2)) == Decimal("7736.00")


# --- stage paths ------------------------------------------------------------------------------------------------


def test_a_skipped_stage_counts_for_any_stage_but_breaks_all_stage() -> None:
    path = ["new", "proposal"]
    assert reached_any(path, "new", "proposal") and not reached_all(path, ORDER, "new", "proposal")
    assert not reached_any(path, "new", "qualified") and not reached_all(path, ORDER, "new", "qualified")
    assert not reached_any(path, "qualified", "proposal")  # never in qualified: not in that denominator


def test_a_backward_move_does_not_undo_progress() -> None:
    path = ["new", "qualified", "new", "proposal"]
    assert reached_all(path, ORDER, "new", "proposal")
    # Later stage first, then back: any-stage counts it (it reached both), all-stage does not (wrong order).
    back = ["proposal", "qualified"]
    assert reached_any(back, "qualified", "proposal") and not reached_all(back, ORDER, "qualified", "proposal")


def test_coming_back_through_a_skipped_stage_completes_the_all_stage_path() -> None:
    assert reached_all(["new", "proposal", "qualified", "proposal"], ORDER, "new", "proposal")
    assert not reached_all(["new", "proposal", "qualified"], ORDER, "new", "proposal")
    with pytest.raises(ValueError):
        reached_all(["new"], ORDER, "proposal", "new")


def test_a_re_entered_stage_has_a_latest_and_a_cumulative_stay() -> None:
    visits = [
        StageVisit(stage="new", entered_at=T, left_at=T + 2 * D),
        StageVisit(stage="qualified", entered_at=T + 2 * D, left_at=T + 3 * D),
        StageVisit(stage="new", entered_at=T + 3 * D, left_at=T + 4 * D + 12 * H),
        StageVisit(stage="proposal", entered_at=T + 4 * D + 12 * H),
    ]
    assert stays(visits, "new") == (1.5, 3.5)
    assert stays(visits, "qualified") == (1.0, 1.0)
    assert stays(visits, "proposal") is None  # still there: no finished stay
    assert stays(visits, "negotiation") is None


# --- the fold ----------------------------------------------------------------------------------------------------


def test_the_fold_records_visits_amounts_and_the_close() -> None:
    state = fold(
        [
            stored(1, opened(stage="new", amount="100"), "d", T),
            stored(2, touch(), "d", T + D),
            stored(3, moved("new", "qualified"), "d", T + 2 * D),
            stored(5, moved("qualified", "qualified"), "d", T + 3 * D),  # no stay: ignored
            stored(6, amount("100", "150", "USD"), "d", T + 4 * D),
            stored(7, won("proposal", "160", "USD"), "d", T + 5 * D),  # won in another stage: reached it at the close
            stored(8, moved("proposal", "new"), "d", T + 6 * D),  # after the close: ignored
            stored(9, opened(stage="new"), "d", T + 7 * D),  # a second opening: ignored
            stored(10, moved("new", "qualified"), "ghost", T),  # before any opening: ignored
        ]
    )
    [deal] = state.deals.values()
    assert [(v.stage, v.entered_at, v.left_at) for v in deal.visits] == [
        ("new", T, T + 2 * D),
        ("qualified", T + 2 * D, T + 5 * D),
        ("proposal", T + 5 * D, T + 5 * D),
    ]
    assert [(a.sequence, a.amount, a.currency) for a in deal.amounts] == [
        (1, Decimal(100), "EUR"),
        (6, Decimal(150), "USD"),
    ]
    assert (deal.outcome, deal.closed_at, deal.won_amount, deal.won_currency) == ("won", T + 5 * D, Decimal(160), "USD")
    assert deal.version == 7


def test_a_backdated_event_is_taken_at_the_previous_events_time() -> None:
    state = fold(
        [
            stored(1, opened(stage="new"), "d", T),
            stored(2, moved("new", "qualified"), "d", T + 3 * D),
            stored(3, lost("qualified", "price"), "d", T + D),  # dated before the move
        ]
    )
    deal = state.deals["d"]
    assert deal.closed_at == T + 3 * D
    assert deal.visits[-1].entered_at == deal.visits[-1].left_at == T + 3 * D


def test_a_deal_as_of_a_past_instant_keeps_only_what_was_known() -> None:
    deal = fold(
        [
            stored(1, opened(stage="new", amount="100"), "d", T),
            stored(2, moved("new", "qualified"), "d", T + 2 * D),
            stored(3, amount("100", "150"), "d", T + 3 * D),
            stored(4, lost("qualified", "price"), "d", T + 4 * D),
        ]
    ).deals["d"]
    assert deal_at(deal, T - H) is None
    early = deal_at(deal, T + 2 * D + H)
    assert early is not None
    assert [(v.stage, v.left_at) for v in early.visits] == [("new", T + 2 * D), ("qualified", None)]
    assert [a.amount for a in early.amounts] == [100]
    assert (early.outcome, early.closed_at, early.lost_reason) == (None, None, None)
    assert deal_at(deal, T + 4 * D) == deal


def test_leads_and_pipeline_definitions_as_of() -> None:
    state = fold(
        [
            stored(
                1,
                PipelineDefined(name="P", stages=[StageDefinition(id="a", name="A", probability=0.5)]),
                "p",
                T,
                "pipeline",
            ),
            stored(
                2,
                PipelineDefined(name="P", stages=[StageDefinition(id="b", name="B", probability=0.2)]),
                "p",
                T + 2 * D,
                "pipeline",
            ),
            stored(3, LeadQualified(), "ghost", T, "lead"),
        ]
    )
    versions = state.pipelines["p"]
    assert pipeline_at(versions, T - H) is None
    assert [s.id for s in pipeline_at(versions, T + D).stages] == ["a"]  # type: ignore[union-attr]
    assert [s.id for s in pipeline_at(versions, T + 2 * D).stages] == ["b"]  # type: ignore[union-attr]
    assert state.leads == {}


def test_time_in_stage_counts_stays_whose_latest_visit_ended_in_the_period() -> None:
    deal = fold(
        [
            stored(1, opened(stage="new"), "d", T),
            stored(2, moved("new", "qualified"), "d", T + D),
            stored(3, moved("qualified", "new"), "d", T + 3 * D),
            stored(4, moved("new", "proposal"), "d", T + 6 * D),
        ]
    ).deals["d"]
    # Period [T + 5 d, T + 10 d): new's latest stay (3 d) ended in it; qualified's ended before it.
    [new] = time_in_stage([deal], T + 5 * D, T + 10 * D)
    assert (new.stage, new.deals, new.latest_mean, new.cumulative_mean) == ("new", 1, 3.0, 4.0)
    # Period [T, T + 5 d): as known at its end, new's latest stay has not ended; qualified's (2 d) has.
    cut = deal_at(deal, T + 5 * D - dt.timedelta(microseconds=1))
    assert cut is not None
    [qualified] = time_in_stage([cut], T, T + 5 * D)
    assert (qualified.stage, qualified.latest_p90, qualified.cumulative_median) == ("qualified", 2.0, 2.0)


def test_a_lead_is_qualified_once_and_as_of_hides_later_facts() -> None:
    lead = fold(
        [
            stored(1, LeadCaptured(email="a@b.io"), "l", T, "lead"),
            stored(2, LeadAssigned(owner="ana"), "l", T + D, "lead"),
            stored(3, LeadQualified(), "l", T + 2 * D, "lead"),
            stored(4, LeadQualified(), "l", T + 3 * D, "lead"),
            stored(5, LeadDisqualified(reason="gone"), "l", T + 4 * D, "lead"),
        ]
    ).leads["l"]
    assert (lead.source, lead.qualified_at, lead.disqualified_at, lead.version) == ("api", T + 2 * D, T + 4 * D, 5)
    early = lead_at(lead, T + 2 * D - H)
    assert early is not None and (early.qualified_at, [o.owner for o in early.owners]) == (None, ["ana"])
    assert lead_at(lead, T - H) is None
