"""The export's CSV and Excel layout reads back to the plan's own actions."""

import dataclasses
import io
from pathlib import Path

import pytest
from openpyxl import load_workbook

from services.actions import spreadsheet
from services.actions.plan_file import parse_plan
from shared.errors import ValidationFailed

SEED = Path(__file__).parents[3] / "services" / "actions" / "data" / "krf-recovery-cell-action-plans.txt"


@pytest.fixture(scope="module")
def plan():
    return parse_plan(SEED.read_text(encoding="utf-8"))


def as_exported(plan) -> list[dict]:
    """The seed's actions as the service shows them (plan columns, tracking at its defaults)."""
    return [
        {
            **dataclasses.asdict(a),
            "cell_name": a.cell,
            "priority": a.priority.lower(),
            "status": "not-started",
            "progress": 0,
            "overdue": True,
        }
        for a in plan.actions
    ]


def without_rows(actions):
    return [dataclasses.replace(a, row=0) for a in actions]


def test_the_plan_exported_as_csv_reads_back_to_the_same_actions(plan):
    content = spreadsheet.to_csv(spreadsheet.export_rows(as_exported(plan)))
    read = spreadsheet.read_plan_file(filename="actions.csv", content=content)
    assert read.format == "csv" and read.plan.errors == []
    assert without_rows(read.plan.actions) == without_rows(plan.actions)
    assert [a.row for a in read.plan.actions[:3]] == [2, 3, 4]  # the spreadsheet's own row numbers


def test_the_plan_exported_as_xlsx_reads_back_to_the_same_actions(plan):
    content = spreadsheet.to_xlsx(spreadsheet.export_rows(as_exported(plan)), about=[("Plan", "krf-recovery-2020")])
    read = spreadsheet.read_plan_file(filename="actions.xlsx", content=content)
    assert read.format == "xlsx" and read.plan.errors == []
    assert without_rows(read.plan.actions) == without_rows(plan.actions)


def test_text_that_excel_would_run_as_a_formula_stays_text_and_reads_back_as_written(plan):
    risky = dataclasses.replace(plan.actions[0], resources='=HYPERLINK("http://x")', named_lead_text="-tbc")
    exported = [{**dataclasses.asdict(risky), "cell_name": risky.cell, "priority": "important"}]
    content = spreadsheet.to_csv(spreadsheet.export_rows(exported))
    assert b"'=HYPERLINK" in content
    [back] = spreadsheet.read_plan_file(filename="a.csv", content=content).plan.actions
    assert (back.resources, back.named_lead_text) == ('=HYPERLINK("http://x")', "-tbc")
    workbook = load_workbook(io.BytesIO(spreadsheet.to_xlsx(spreadsheet.export_rows(exported), about=[])))
    cell = workbook["Actions"]["J2"]
    assert (cell.value, cell.data_type) == ('=HYPERLINK("http://x")', "s")


def test_a_spreadsheet_row_with_an_unknown_cell_or_a_bad_value_is_reported_by_its_row():
    content = (
        b"Cell,Action No.,Action to be taken,Ongoing,Mitigate or Opportunity,Lead organisation or partnership,"
        b"Named Lead,Timescale,Resources / capacity required,Priority\n"
        b"Economy,1,Launch a campaign,No,Mitigate,KCC,Jo James,Short Term,Staff time,Important\n"
        b"Tourism,2,Launch a campaign,No,Mitigate,KCC,Jo James,Short Term,Staff time,Important\n"
        b"economy,3,Launch a campaign,Maybe,Mitigate,KCC,Jo James,Short Term,Staff time,Important\n"
        b"economy,1,Launch a campaign,,Mitigate,KCC,Jo James,Short Term,Staff time,Important\n"
        b"economy,4,Launch a campaign,,Mitigate,KCC,Jo James,Soon,Staff time,Important\n"
    )
    read = spreadsheet.read_plan_file(filename="a.csv", content=content)
    assert [(a.cell_slug, a.number) for a in read.plan.actions] == [("economy", 1)]
    assert [(e.row, e.reason) for e in read.plan.errors] == [
        (3, "'Tourism' is not one of the recovery cells"),
        (4, "Ongoing is 'Maybe': give Yes or No"),
        (5, "action 1 already appears at row 2"),
        (6, "timescale 'Soon' is not Short, Medium or Longer Term"),
    ]


def test_a_tab_separated_file_in_the_exports_layout_is_read_as_a_spreadsheet(plan):
    rows = spreadsheet.export_rows(as_exported(plan)[:2])
    text = "\n".join("\t".join("" if v is None else str(v).replace("\n", " ") for v in row) for row in rows)
    read = spreadsheet.read_plan_file(filename="actions.tsv", content=text.encode())
    assert read.format == "csv" and [a.number for a in read.plan.actions] == [1, 2]


def test_a_file_missing_the_plan_columns_is_refused_whole():
    with pytest.raises(ValidationFailed) as raised:
        spreadsheet.read_plan_file(filename="a.csv", content=b"Cell,Status\nEconomy,on-track\n")
    [error] = raised.value.extensions["errors"]
    assert error["field"] == "file" and error["reason"].startswith(
        "missing the columns 'Action No.', 'Action to be taken'"
    )
