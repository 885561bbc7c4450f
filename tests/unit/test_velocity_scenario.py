"""A scripted month of leads and deals with every velocity figure worked out by hand, checked against the pure
fold and formulas here and against the real servers in ``tests/integration/test_velocity_projection.py``.

March 2025 in UTC. Pipeline "sales": new 0.1, qualified 0.3, proposal 0.6, negotiation 0.8. All times 00:00Z.

Deals (EUR unless noted; the path is the stages visited in time order):

=======  =====  ===========  ===================================================  =====================
deal     owner  lead source  path (day of March)                                  close
=======  =====  ===========  ===================================================  =====================
acme     ana    web_form     new 2, qualified 4, proposal 8                       won 12 (1200), 10 d
globex   bo     meta         new 1, proposal 3 (skips qualified)                  lost 6 "price"
initech  ana    meta         qualified 1, new 2 (back), qualified 5, proposal 7   won 15 (2000), 14 d
umbrella bo     -            new 10 (300 USD, no expected close date)             open
hooli    ana    web_form     new 20 (800, 900 from 25), qualified 22; close 4/30  open
stark    ana    api          new, opened Jan 10                                   lost Feb 5 (not March)
wayne    bo     web_form     negotiation 28 (5000), expected close Apr 5         won Apr 3 (5000)
soylent  bo     api          proposal 3 (100), qualified 6 (back)                 lost 9 "timing"
=======  =====  ===========  ===================================================  =====================

Leads: l1 web_form captured 2, assigned ana 3, qualified 4; l2 meta captured 5; l3 meta captured 10, qualified
20; l4 web_form captured Feb 10, qualified Feb 12; l5 api captured 25, disqualified 26.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import msgspec
import pytest

from events.envelope import AggregateType, Source, StoredEvent
from events.types import (
    DealAmountChanged,
    DealLost,
    DealOpened,
    DealStageChanged,
    DealWon,
    Event,
    LeadAssigned,
    LeadCaptured,
    LeadDisqualified,
    LeadQualified,
    PipelineDefined,
    StageDefinition,
    TouchpointLogged,
)
from projections.velocity import VelocityState, fold
from projections.velocity_periods import period
from projections.velocity_report import (
    GroupMetrics,
    LeadSource,
    StageConversion,
    TimeInStage,
    WeightedMonth,
    metrics_report,
    weighted_by_close_month,
)
from tests.builders import envelope


def day(month: int, d: int) -> dt.datetime:
    return dt.datetime(2025, month, d, tzinfo=dt.UTC)


MARCH = period("month", dt.date(2025, 3, 15), "UTC")
AS_OF = day(4, 10)
EARLY = dt.datetime(2025, 3, 9, 12, tzinfo=dt.UTC)

SALES = PipelineDefined(
    name="Sales",
    stages=[
        StageDefinition(id="new", name="New", probability=0.1),
        StageDefinition(id="qualified", name="Qualified", probability=0.3),
        StageDefinition(id="proposal", name="Proposal", probability=0.6),
        StageDefinition(id="negotiation", name="Negotiation", probability=0.8),
    ],
)

# (aggregate type, id, event, business time, source), in append order.
Script = list[tuple[AggregateType, str, Event, dt.datetime, Source]]


def opened(
    stage: str, amount: str, owner: str | None, source: str | None, currency: str = "EUR", close: dt.date | None = None
) -> DealOpened:
    return DealOpened(
        name="D",
        pipeline_id="sales",
        stage=stage,
        amount=Decimal(amount),
        currency=currency,
        owner=owner,
        lead_source=source,
        expected_close_date=close,
    )


def moved(a: str, b: str) -> DealStageChanged:
    return DealStageChanged(from_stage=a, to_stage=b)


def won(stage: str, amount: str) -> DealWon:
    return DealWon(stage=stage, amount=Decimal(amount), currency="EUR")


def lost(stage: str, reason: str) -> DealLost:
    return DealLost(stage=stage, reason=reason)


def m(d: int) -> dt.datetime:
    return day(3, d)


def script() -> Script:
    return [
        ("pipeline", "sales", SALES, day(1, 1), "api"),
        ("lead", "l4", LeadCaptured(email="l4@x.io"), day(2, 10), "web_form"),
        ("lead", "l4", LeadQualified(), day(2, 12), "api"),
        ("deal", "stark", opened("new", "400", "ana", "api"), day(1, 10), "api"),
        ("deal", "stark", lost("new", "no budget"), day(2, 5), "api"),
        ("deal", "globex", opened("new", "500", "bo", "meta"), m(1), "api"),
        ("deal", "initech", opened("qualified", "2000", "ana", "meta"), m(1), "api"),
        ("lead", "l1", LeadCaptured(email="l1@x.io"), m(2), "web_form"),
        ("deal", "acme", opened("new", "1000", "ana", "web_form"), m(2), "api"),
        ("deal", "initech", moved("qualified", "new"), m(2), "api"),
        ("lead", "l1", LeadAssigned(owner="ana"), m(3), "api"),
        ("deal", "globex", moved("new", "proposal"), m(3), "api"),
        ("deal", "soylent", opened("proposal", "100", "bo", "api"), m(3), "api"),
        ("lead", "l1", LeadQualified(), m(4), "api"),
        ("deal", "acme", moved("new", "qualified"), m(4), "api"),
        ("deal", "acme", TouchpointLogged(touchpoint_id="tp1", kind="call", direction="outbound"), m(4), "api"),
        ("lead", "l2", LeadCaptured(email="l2@x.io"), m(5), "meta"),
        ("deal", "initech", moved("new", "qualified"), m(5), "api"),
        ("deal", "globex", lost("proposal", "price"), m(6), "api"),
        ("deal", "soylent", moved("proposal", "qualified"), m(6), "api"),
        ("deal", "initech", moved("qualified", "proposal"), m(7), "api"),
        ("deal", "acme", moved("qualified", "proposal"), m(8), "api"),
        ("deal", "soylent", lost("qualified", "timing"), m(9), "api"),
        ("lead", "l3", LeadCaptured(email="l3@x.io"), m(10), "meta"),
        ("deal", "umbrella", opened("new", "300", "bo", None, currency="USD"), m(10), "api"),
        ("deal", "acme", won("proposal", "1200"), m(12), "api"),
        ("deal", "initech", won("proposal", "2000"), m(15), "api"),
        ("lead", "l3", LeadQualified(), m(20), "api"),
        ("deal", "hooli", opened("new", "800", "ana", "web_form", close=dt.date(2025, 4, 30)), m(20), "api"),
        ("deal", "hooli", moved("new", "qualified"), m(22), "api"),
        ("lead", "l5", LeadCaptured(email="l5@x.io"), m(25), "api"),
        (
            "deal",
            "hooli",
            DealAmountChanged(from_amount=Decimal(800), to_amount=Decimal(900), currency="EUR"),
            m(25),
            "api",
        ),
        ("lead", "l5", LeadDisqualified(reason="spam"), m(26), "api"),
        ("deal", "wayne", opened("negotiation", "5000", "bo", "web_form", close=dt.date(2025, 4, 5)), m(28), "api"),
        ("deal", "wayne", won("negotiation", "5000"), day(4, 3), "api"),
    ]


def events_of(s: Script) -> list[StoredEvent]:
    """The script as a log without a server: sequences 1, 2, 3..."""
    out = []
    for i, (kind, aggregate_id, data, at, source) in enumerate(s):
        env = msgspec.structs.replace(envelope(data, kind, aggregate_id, at), source=source)
        out.append(StoredEvent(sequence=i + 1, subject=f"t.evt.{kind}.0.{aggregate_id}", envelope=env))
    return out


def conversion(a: str, b: str, reached: int, n_any: int, n_all: int) -> StageConversion:
    return StageConversion(
        pipeline_id="sales",
        from_stage=a,
        to_stage=b,
        reached_from=reached,
        any_stage=n_any,
        all_stage=n_all,
        any_stage_rate=n_any / reached if reached else None,
        all_stage_rate=n_all / reached if reached else None,
    )


def stage_time(
    stage: str, n: int, latest: tuple[float, float, float], cumulative: tuple[float, float, float]
) -> TimeInStage:
    return TimeInStage(
        pipeline_id="sales",
        stage=stage,
        deals=n,
        latest_mean=latest[0],
        latest_median=latest[1],
        latest_p90=latest[2],
        cumulative_mean=cumulative[0],
        cumulative_median=cumulative[1],
        cumulative_p90=cumulative[2],
    )


def expected_overall() -> GroupMetrics:
    """March, as of April 10 (everything known)."""
    return GroupMetrics(
        key=None,
        deals_opened=7,  # all but stark
        deals_won=2,  # acme, initech (wayne closes in April)
        deals_lost=2,  # globex, soylent (stark closed in February)
        win_rate=0.5,
        average_cycle_days=12.0,  # 10 and 14 days
        median_cycle_days=12.0,
        won_value={"EUR": Decimal(3200)},
        average_won_value={"EUR": Decimal("1600.00")},
        open_deals=3,
        open_deals_by_currency={"EUR": 2, "USD": 1},  # hooli, wayne (won after March); umbrella
        # 2 x 1600 x 0.5 / 12 = 133.33...; no USD deal was won, so no USD velocity.
        sales_velocity={"EUR": Decimal("133.33")},
        lost_by_reason={"price": 1, "timing": 1},
        stage_conversion=[
            # reached new: acme, globex, initech, umbrella, hooli; globex skipped qualified (all-stage fails).
            conversion("new", "qualified", 5, 3, 3),
            conversion("new", "proposal", 5, 3, 2),
            conversion("new", "negotiation", 5, 0, 0),
            # reached qualified: acme, initech, hooli, soylent; soylent was in proposal only before qualified.
            conversion("qualified", "proposal", 4, 3, 2),
            conversion("qualified", "negotiation", 4, 0, 0),
            conversion("proposal", "negotiation", 4, 0, 0),
        ],
        time_in_stage=[
            # new: acme 2, globex 2, initech 3 (one stay), hooli 2.
            stage_time("new", 4, (2.25, 2.0, 2.7), (2.25, 2.0, 2.7)),
            # proposal: acme 4, globex 3, initech 8, soylent 3.
            stage_time("proposal", 4, (4.5, 3.5, 6.8), (4.5, 3.5, 6.8)),
            # qualified: acme 4, initech latest 2 (cumulative 1 + 2 = 3), soylent 3.
            stage_time("qualified", 3, (3.0, 3.0, 3.8), (10 / 3, 3.0, 3.8)),
        ],
        leads_captured=4,  # l1, l2, l3, l5
        leads_qualified=2,  # l1, l3
        lead_to_qualified=0.5,
        lead_sources=[],  # filled below
        qualified_this_period=2,  # l1, l3
        qualified_last_period=1,  # l4
        lead_velocity_rate=1.0,
    )


def expected_overall_early() -> GroupMetrics:
    """March, as of March 9 12:00: later events are unknown."""
    return GroupMetrics(
        key=None,
        deals_opened=4,  # globex, initech, acme, soylent
        deals_won=0,
        deals_lost=2,  # globex, soylent
        win_rate=0.0,
        average_cycle_days=None,
        median_cycle_days=None,
        won_value={},
        average_won_value={},
        open_deals=2,
        open_deals_by_currency={"EUR": 2},  # acme, initech
        sales_velocity={},
        lost_by_reason={"price": 1, "timing": 1},
        stage_conversion=[
            conversion("new", "qualified", 3, 2, 2),
            conversion("new", "proposal", 3, 3, 2),
            conversion("new", "negotiation", 3, 0, 0),
            conversion("qualified", "proposal", 3, 3, 2),
            conversion("qualified", "negotiation", 3, 0, 0),
            conversion("proposal", "negotiation", 4, 0, 0),  # globex, initech, acme, soylent
        ],
        time_in_stage=[
            stage_time("new", 3, (7 / 3, 2.0, 2.8), (7 / 3, 2.0, 2.8)),  # acme 2, globex 2, initech 3
            stage_time("proposal", 2, (3.0, 3.0, 3.0), (3.0, 3.0, 3.0)),  # globex 3, soylent 3
            stage_time("qualified", 3, (3.0, 3.0, 3.8), (10 / 3, 3.0, 3.8)),
        ],
        leads_captured=2,  # l1, l2
        leads_qualified=1,  # l1
        lead_to_qualified=0.5,
        lead_sources=[],
        qualified_this_period=1,
        qualified_last_period=1,
        lead_velocity_rate=0.0,
    )


def with_sources(g: GroupMetrics, sources: list[tuple[str, int, int]]) -> GroupMetrics:
    return msgspec.structs.replace(
        g, lead_sources=[LeadSource(source=s, captured=c, qualified=q, lead_to_qualified=q / c) for s, c, q in sources]
    )


EXPECTED = with_sources(expected_overall(), [("api", 1, 0), ("meta", 2, 1), ("web_form", 1, 1)])
EXPECTED_EARLY = with_sources(expected_overall_early(), [("meta", 1, 0), ("web_form", 1, 1)])

EXPECTED_WEIGHTED = [
    WeightedMonth(month="2025-04", currency="EUR", deals=1, amount=Decimal(900), weighted=Decimal(270)),  # hooli
    WeightedMonth(month=None, currency="USD", deals=1, amount=Decimal(300), weighted=Decimal(30)),  # umbrella
]
# March 31: wayne is still open (negotiation 0.8), hooli is at 900 in qualified.
EXPECTED_WEIGHTED_MARCH_31 = [
    WeightedMonth(month="2025-04", currency="EUR", deals=2, amount=Decimal(5900), weighted=Decimal(4270)),
    WeightedMonth(month=None, currency="USD", deals=1, amount=Decimal(300), weighted=Decimal(30)),
]
# March 24: hooli still at 800 in qualified, wayne not opened yet.
EXPECTED_WEIGHTED_MARCH_24 = [
    WeightedMonth(month="2025-04", currency="EUR", deals=1, amount=Decimal(800), weighted=Decimal(240)),
    WeightedMonth(month=None, currency="USD", deals=1, amount=Decimal(300), weighted=Decimal(30)),
]


def approx_equal(actual: Any, expected: Any, path: str = "") -> None:
    """Structs equal field by field, floats to 1e-9; a failure names the field."""
    if isinstance(expected, msgspec.Struct):
        assert type(actual) is type(expected), path
        for name in expected.__struct_fields__:
            approx_equal(getattr(actual, name), getattr(expected, name), f"{path}.{name}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), (path, actual, expected)
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            approx_equal(a, e, f"{path}[{i}]")
    elif isinstance(expected, float):
        assert actual == pytest.approx(expected, abs=1e-9), path
    else:
        assert actual == expected, path


def state() -> VelocityState:
    return fold(events_of(script()))


# --- the pure fold and formulas give the hand-computed figures -------------------------------------------------


def test_march_overall() -> None:
    s = state()
    [g] = metrics_report(s.deals.values(), s.leads.values(), s.pipelines, MARCH, "overall", AS_OF).groups
    approx_equal(g, EXPECTED)


def test_march_as_of_an_earlier_date_counts_only_what_was_known() -> None:
    s = state()
    [g] = metrics_report(s.deals.values(), s.leads.values(), s.pipelines, MARCH, "overall", EARLY).groups
    approx_equal(g, EXPECTED_EARLY)


def test_march_by_owner() -> None:
    s = state()
    groups = metrics_report(s.deals.values(), s.leads.values(), s.pipelines, MARCH, "owner", AS_OF).groups
    assert [g.key for g in groups] == ["ana", "bo", None]
    ana, bo, nobody = groups
    assert (ana.deals_won, ana.deals_lost, ana.win_rate, ana.open_deals_by_currency) == (2, 0, 1.0, {"EUR": 1})
    assert ana.sales_velocity == {"EUR": Decimal("133.33")}  # 1 x 1600 x 1 / 12
    assert (bo.deals_won, bo.deals_lost, bo.win_rate, bo.sales_velocity) == (0, 2, 0.0, {})
    assert bo.open_deals_by_currency == {"EUR": 1, "USD": 1}
    # l1 is ana's; the other leads have no owner (l4, qualified in February, neither).
    assert (ana.leads_captured, ana.qualified_this_period, ana.qualified_last_period) == (1, 1, 0)
    assert ana.lead_velocity_rate is None
    assert (nobody.deals_opened, nobody.leads_captured, nobody.leads_qualified) == (0, 3, 1)
    assert (nobody.qualified_this_period, nobody.qualified_last_period, nobody.lead_velocity_rate) == (1, 1, 0.0)


def test_march_by_source_and_pipeline() -> None:
    s = state()
    by_source = metrics_report(s.deals.values(), s.leads.values(), s.pipelines, MARCH, "source", AS_OF).groups
    assert [(g.key, g.deals_opened, g.deals_won, g.deals_lost, g.leads_captured) for g in by_source] == [
        ("api", 1, 0, 1, 1),
        ("meta", 2, 1, 1, 2),
        ("web_form", 3, 1, 0, 1),
        (None, 1, 0, 0, 0),
    ]
    by_pipeline = metrics_report(s.deals.values(), s.leads.values(), s.pipelines, MARCH, "pipeline", AS_OF).groups
    assert [g.key for g in by_pipeline] == ["sales", None]
    sales, leads_only = by_pipeline
    approx_equal(
        sales,
        msgspec.structs.replace(
            EXPECTED,
            key="sales",
            leads_captured=0,
            leads_qualified=0,
            lead_to_qualified=None,
            lead_sources=[],
            qualified_this_period=0,
            qualified_last_period=0,
            lead_velocity_rate=None,
        ),
    )
    assert (leads_only.deals_opened, leads_only.leads_captured) == (0, 4)


def test_weighted_pipeline_by_expected_close_month() -> None:
    s = state()
    assert weighted_by_close_month(s.deals.values(), s.pipelines, AS_OF) == EXPECTED_WEIGHTED
    assert weighted_by_close_month(s.deals.values(), s.pipelines, day(3, 31)) == EXPECTED_WEIGHTED_MARCH_31
    assert weighted_by_close_month(s.deals.values(), s.pipelines, day(3, 24)) == EXPECTED_WEIGHTED_MARCH_24
    assert weighted_by_close_month(s.deals.values(), s.pipelines, day(1, 1)) == []


def test_the_period_is_march_and_the_previous_one_february() -> None:
    assert (MARCH.previous_start, MARCH.start, MARCH.end) == (day(2, 1), day(3, 1), day(4, 1))


# --- a deal won the hour it opened; a lead naming its marketing source ------------------------------------------


def test_a_deal_won_the_hour_it_opened_makes_velocity_no_more_than_the_cycle_floor_allows() -> None:
    s = fold(
        events_of(
            [
                ("pipeline", "sales", SALES, day(3, 1), "api"),
                ("deal", "open-1", opened("new", "1000", "ana", None), day(3, 2), "api"),
                ("deal", "open-2", opened("new", "1000", "ana", None), day(3, 2), "api"),
                ("deal", "fast", opened("proposal", "7736", "ana", None), day(3, 5), "api"),
                ("deal", "fast", won("proposal", "7736"), day(3, 5) + dt.timedelta(seconds=130), "api"),
            ]
        )
    )
    [g] = metrics_report(s.deals.values(), s.leads.values(), s.pipelines, MARCH, "owner", AS_OF).groups
    # The cycle is 130 s (0.0015 days): 2 open x 7,736 x 1 / 0.0015 would be 10.3 million a day; the divisor's
    # floor of one day bounds it at 2 x 7,736 / 1.
    assert g.average_cycle_days == pytest.approx(130 / 86_400)
    assert g.sales_velocity == {"EUR": Decimal("15472.00")}


def test_a_lead_naming_its_marketing_source_is_grouped_by_it_and_one_naming_none_by_its_channel() -> None:
    s = fold(
        events_of(
            [
                ("lead", "ref", LeadCaptured(source="referral", utm_campaign="partner-week"), day(3, 4), "api"),
                ("lead", "ref", LeadQualified(), day(3, 6), "api"),
                ("lead", "plain", LeadCaptured(), day(3, 4), "api"),
                ("lead", "ad", LeadCaptured(), day(3, 4), "meta"),
            ]
        )
    )
    by_source = metrics_report(s.deals.values(), s.leads.values(), s.pipelines, MARCH, "source", AS_OF).groups
    assert {g.key: (g.leads_captured, g.leads_qualified) for g in by_source} == {
        "api": (1, 0),
        "meta": (1, 0),
        "referral": (1, 1),
    }
    by_campaign = metrics_report(s.deals.values(), s.leads.values(), s.pipelines, MARCH, "campaign", AS_OF).groups
    assert {g.key: (g.leads_captured, g.leads_qualified) for g in by_campaign} == {"partner-week": (1, 1), None: (2, 0)}
