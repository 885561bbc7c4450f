"""The CSV importer's reading and mapping, on each CRM's export fixtures and their spreadsheet-mangled variants."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from events import commands as cmd
from services.imports.command import UsageError, pipeline_map
from services.imports.plan import Plan
from services.imports.reader import CellError, amount, instant, read_table
from services.imports.runner import read_plan
from tests.imports_oracle import EXPORTS, README_FIGURES, Figures, figures, files_of

WARSAW = ZoneInfo("Europe/Warsaw")


def plan_figures(plan: Plan) -> Figures:
    """The figures a plan's deals would make: the last command says won or lost, the opening the amount."""
    outcomes = []
    for record in plan.deals:
        opened, last = record.steps[0].command, record.steps[-1].command
        assert isinstance(opened, cmd.OpenDeal)
        status = "won" if isinstance(last, cmd.WinDeal) else "lost" if isinstance(last, cmd.LoseDeal) else "open"
        reason = last.reason if isinstance(last, cmd.LoseDeal) else None
        outcomes.append((status, opened.currency, opened.amount, reason))
    return figures(outcomes)


@pytest.mark.parametrize("crm", sorted(README_FIGURES))
def test_each_crms_deals_give_the_readme_counts(crm: str) -> None:
    plan = read_plan(crm, files_of(crm), WARSAW)
    assert plan.problems == []
    assert len(plan.deals) == 25
    assert plan_figures(plan) == README_FIGURES[crm]


def test_people_and_leads_are_read_with_the_readme_counts() -> None:
    pipedrive = read_plan("pipedrive", files_of("pipedrive"), WARSAW)
    hubspot = read_plan("hubspot", files_of("hubspot"), WARSAW)
    sell = read_plan("zendesk-sell", files_of("zendesk-sell"), WARSAW)
    assert (len(pipedrive.leads), pipedrive.people) == (10, 15)
    assert (len(hubspot.leads), hubspot.people) == (0, 15)
    assert (len(sell.leads), sell.people, sell.organisations) == (10, 10, 9)


def test_a_pipedrive_deal_keeps_its_business_times_in_the_import_zone() -> None:
    plan = read_plan("pipedrive", files_of("pipedrive"), WARSAW)
    pipelines = {s.command.pipeline_id: s.command for s in plan.pipelines if isinstance(s.command, cmd.DefinePipeline)}
    assert [s.id for s in pipelines["pipedrive-partners"].stages] == ["qualified", "evaluation", "contract-sent"]
    # Deal 102: created 13:42:54 Warsaw summer time, in Negotiations Started since 2025-08-21 16:06:22, lost next day.
    [record] = [r for r in plan.deals if r.record_id == "102"]
    opened, moved, lost = (s.command for s in record.steps)
    assert isinstance(opened, cmd.OpenDeal) and isinstance(moved, cmd.MoveStage) and isinstance(lost, cmd.LoseDeal)
    assert opened.occurred_at == dt.datetime(2025, 7, 14, 11, 42, 54, tzinfo=dt.UTC)
    assert (opened.stage, opened.amount, opened.currency) == ("qualified", Decimal("30350.5"), "EUR")
    moved_at = dt.datetime(2025, 8, 21, 14, 6, 22, tzinfo=dt.UTC)
    assert (moved.to_stage, moved.occurred_at) == ("negotiations-started", moved_at)
    assert (lost.reason, lost.occurred_at) == ("Price too high", dt.datetime(2025, 8, 22, 11, 45, 23, tzinfo=dt.UTC))
    assert [s.key for s in record.steps] == [
        "import:pipedrive:deal:102:opened",
        "import:pipedrive:deal:102:stage:1",
        "import:pipedrive:deal:102:lost",
    ]


def test_a_hubspot_deal_walks_its_date_entered_stages_and_closes_when_it_entered_closed_lost() -> None:
    plan = read_plan("hubspot", files_of("hubspot"), ZoneInfo("UTC"))
    [record] = [r for r in plan.deals if r.record_id == "18734520007"]
    commands = [s.command for s in record.steps]
    assert [c.stage if isinstance(c, cmd.OpenDeal) else getattr(c, "to_stage", type(c).__name__) for c in commands] == [
        "appointment-scheduled",
        "qualified-to-buy",
        "presentation-scheduled",
        "decision-maker-bought-in",
        "LoseDeal",
    ]
    assert commands[-1].occurred_at == dt.datetime(2025, 7, 21, 8, 11, tzinfo=dt.UTC)


def test_a_spreadsheet_resaved_export_reads_like_the_original() -> None:
    """BOM, ';', decimal commas, 26.05.2025 09:27 dates, CRLF, a repeated header row and blank trailing lines."""
    data = (EXPORTS / "quirks" / "pipedrive-deals-excel-pl.csv").read_bytes()
    table = read_table(data)
    assert (table.delimiter, table.encoding, len(table.rows)) == (";", "utf-8-sig", 25)
    plan = read_plan("pipedrive", {"deals": ("excel.csv", data)}, WARSAW)
    assert plan.problems == []
    assert plan_figures(plan) == README_FIGURES["pipedrive"]
    original = read_plan("pipedrive", {"deals": files_of("pipedrive")["deals"]}, WARSAW)
    # Only the seconds are gone: the spreadsheet shows minutes.
    for mine, theirs in zip(plan.deals, original.deals, strict=True):
        for a, b in zip(mine.steps, theirs.steps, strict=True):
            assert a.key == b.key
            assert a.command.occurred_at == (b.command.occurred_at and b.command.occurred_at.replace(second=0))


def test_a_utf16_export_reads_like_the_original() -> None:
    original = (EXPORTS / "zendesk-sell" / "deals.csv").read_bytes()
    plan = read_plan("zendesk-sell", {"deals": ("utf16.csv", original.decode().encode("utf-16"))}, WARSAW)
    assert plan_figures(plan) == README_FIGURES["zendesk-sell"]


def test_bad_rows_are_reported_with_row_column_and_reason_and_the_rest_imported() -> None:
    header = ",".join(
        f"Deal - {c}" for c in ("ID", "Title", "Value", "Currency of Value", "Stage", "Status", "Deal created")
    )
    rows = [
        "1,Good,100,EUR,Qualified,Open,2025-01-01 10:00:00",
        "2,Bad status,100,EUR,Qualified,Maybe,2025-01-01 10:00:00",
        "3,Bad date,100,EUR,Qualified,Open,yesterday",
        "4,Bad amount,lots,EUR,Qualified,Open,2025-01-01 10:00:00",
        ",No id,100,EUR,Qualified,Open,2025-01-01 10:00:00",
        "6,Bad currency,100,euro,Qualified,Open,2025-01-01 10:00:00",
        "7,Future,100,EUR,Qualified,Open,2099-01-01 10:00:00",
    ]
    data = "\n".join([header, *rows]).encode()
    plan = read_plan("pipedrive", {"deals": ("deals.csv", data)}, WARSAW)
    assert [r.record_id for r in plan.deals] == ["1"]
    assert [(p.row, p.column) for p in plan.problems] == [
        (3, "Deal - Status"),
        (4, "Deal - Deal created"),
        (5, "Deal - Value"),
        (6, "Deal - ID"),
        (7, "Deal - Currency of Value"),
        (8, "Deal - Deal created"),
    ]
    assert all(p.reason for p in plan.problems)


def test_amounts_and_times_in_every_spelling() -> None:
    assert [amount("v", t) for t in ("30350.5", "26550,5", "1 234,50", "1,234.50", "1.234,50", "")] == [
        Decimal("30350.5"),
        Decimal("26550.5"),
        Decimal("1234.50"),
        Decimal("1234.50"),
        Decimal("1234.50"),
        None,
    ]
    with pytest.raises(CellError):
        amount("v", "-5")
    with pytest.raises(CellError):
        instant("t", "0001-01-01 00:30", WARSAW)
    utc = dt.datetime(2025, 5, 26, 7, 27, tzinfo=dt.UTC)
    for text in ("2025-05-26 09:27", "26.05.2025 09:27", "2025-05-26T07:27:00Z", "2025-05-26T09:27:00+02:00"):
        assert instant("t", text, WARSAW) == utc


def test_repeated_header_names_keep_the_first_as_the_named_column() -> None:
    table = read_table(b"Deal - ID,Deal - Status,Deal - Status\n7,Won,custom\n")
    assert table.header == ["Deal - ID", "Deal - Status", "Deal - Status (2)"]
    assert table.rows == [(2, {"Deal - ID": "7", "Deal - Status": "Won", "Deal - Status (2)": "custom"})]


def test_a_lead_with_an_e_mail_the_api_would_refuse_is_rejected_naming_its_column() -> None:
    lines = (EXPORTS / "zendesk-sell" / "leads.csv").read_text(encoding="utf-8").splitlines()
    lines[1] = lines[1].replace("adam@pietrzak-meble.example", "adam at pietrzak")
    plan = read_plan("zendesk-sell", {"leads": ("leads.csv", "\n".join(lines).encode())}, WARSAW)
    [problem] = plan.problems
    assert (problem.row, problem.column, problem.record_id) == (2, "Email", "60120317")
    assert len(plan.leads) == 9
    # E-mails that differ only in case are one address.
    assert all(r.capture is not None and r.capture.lead.email == r.capture.lead.email.lower() for r in plan.leads)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "is empty"),
        (b"a\n" + b"x" * 200_000, "not a readable CSV"),
        (b"\xff\x00garbage", "UTF"),
        (b"\xff\xfe\x00\xd8x", "UTF"),
    ],
)
def test_a_file_that_is_no_csv_is_one_problem_not_a_crash(data: bytes, reason: str) -> None:
    plan = read_plan("hubspot", {"deals": ("deals.csv", data)}, WARSAW)
    [problem] = plan.problems
    assert (problem.row, problem.column) == (0, "file") and reason in problem.reason


def test_a_pipeline_map_names_existing_pipelines_by_a_checked_id() -> None:
    assert pipeline_map(["Sales pipeline=default", " Partners = partners-2 "]) == {
        "Sales pipeline": "default",
        "Partners": "partners-2",
    }
    for bad in ("Sales pipeline", "=x", "Sales=a.b", "Sales=a b"):
        with pytest.raises(UsageError):
            pipeline_map([bad])
