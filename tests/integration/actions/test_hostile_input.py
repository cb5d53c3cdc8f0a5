"""Odd and hostile filter values found by fuzzing: answered, never a 500, never a formula."""

import io

from openpyxl import load_workbook

from tests.support.apps import token

SERVICE = "actions"


async def test_an_excel_export_filtered_by_control_characters_or_a_formula_keeps_them_out_of_the_workbook(client, settings):
    theme = "=HYPERLINK(\"https://evil.example\")\x0e\x08"
    response = await client.get("/v1/actions/export.xlsx", params={"theme": theme}, headers=token(settings, "analyst"))
    assert response.status_code == 200, response.text
    about = load_workbook(io.BytesIO(response.content))["About"]
    filters = next(row for row in about.iter_rows() if row[0].value == "Filters")[1]
    assert filters.data_type == "s" and filters.value == 'theme==HYPERLINK("https://evil.example")'
