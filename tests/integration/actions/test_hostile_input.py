"""Odd and hostile filter values found by fuzzing: answered, never a 500, never a formula."""

import io

from openpyxl import load_workbook

from tests.support.apps import token

SERVICE = "actions"


async def test_an_excel_export_filtered_by_control_characters_or_a_formula_keeps_them_out_of_the_workbook(
    client, settings
):
    theme = '=HYPERLINK("https://evil.example")\x0e\x08'
    response = await client.get("/v1/actions/export.xlsx", params={"theme": theme}, headers=token(settings, "analyst"))
    assert response.status_code == 200, response.text
    about = load_workbook(io.BytesIO(response.content))["About"]
    filters = next(row for row in about.iter_rows() if row[0].value == "Filters")[1]
    assert filters.data_type == "s" and filters.value == 'theme==HYPERLINK("https://evil.example")'


async def test_a_filter_on_a_cell_that_does_not_exist_is_refused_naming_the_cells(client, settings, seeded):
    response = await client.get("/v1/actions", params={"cell": "nope"}, headers=token(settings, "analyst"))
    assert response.status_code == 422, response.text
    [error] = response.json()["errors"]
    assert error["field"] == "cell" and "'nope'" in error["reason"] and "infrastructure" in error["reason"]
    known = await client.get("/v1/actions", params={"cell": "infrastructure"}, headers=token(settings, "analyst"))
    assert known.status_code == 200 and known.json()["count"] > 0
