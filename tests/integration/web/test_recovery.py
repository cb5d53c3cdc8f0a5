"""A recovery lead on the web front: uploads the plan, filters the actions, rates one, downloads them."""

import csv
import io
import re
from pathlib import Path

import httpx
from openpyxl import load_workbook

from tests.integration.web.conftest import SERVICE, csrf_of, post_form, sign_in

__all__ = ["SERVICE"]

PLAN = Path(__file__).resolve().parents[3] / "services/actions/data/krf-recovery-cell-action-plans.txt"


async def upload(web: httpx.AsyncClient, name: str, content: bytes, **fields) -> httpx.Response:
    page = await web.get("/actions/import")
    return await web.post(
        "/actions/import",
        data={"csrf_token": csrf_of(page.text), **fields},
        files={"file": (name, content, "text/plain")},
    )


async def test_a_recovery_lead_uploads_the_plan_and_sees_the_per_row_report(web):
    await sign_in(web, role="recovery-lead", name="Rita Lead")
    report = await upload(web, PLAN.name, PLAN.read_bytes())
    assert report.status_code == 200, report.text[:1500]
    counts = re.search(r"(\d+) created, (\d+) updated, (\d+) unchanged, (\d+) refused", report.text).groups()
    assert int(counts[0]) + int(counts[2]) == 155 and counts[3] == "0"
    listed = (await web.get("/actions")).text
    assert "<strong>155</strong> actions" in listed


async def test_a_file_that_is_not_the_plan_is_refused_saying_what_it_lacks(web):
    await sign_in(web, role="recovery-lead", name="Rita Lead")
    report = await upload(web, "broken.csv", b"cell,number,title\ninfrastructure,1,Broken row\n")
    assert report.status_code == 400
    assert "The file could not be read: file: missing the columns" in report.text


async def test_an_upload_with_a_row_refused_changes_nothing_and_says_which_row(web):
    await sign_in(web, role="recovery-lead", name="Rita Lead")
    await upload(web, PLAN.name, PLAN.read_bytes())
    exported = (await web.get("/actions/export.csv")).text.splitlines()
    header = next(csv.reader([exported[0]]))
    row = next(csv.reader([exported[1]]))
    row[header.index("Priority")] = "whenever"
    out = io.StringIO()
    csv.writer(out).writerows([header, row])
    report = await upload(web, "edited.csv", out.getvalue().encode())
    assert report.status_code == 400, report.text[:1000]
    assert "The plan was not uploaded" in report.text and "rejected" in report.text


async def test_filters_rating_without_a_narrative_refused_with_one_saved_and_in_the_history(web):
    await sign_in(web, role="recovery-lead", name="Rita Lead")
    await upload(web, PLAN.name, PLAN.read_bytes())
    infrastructure = (await web.get("/actions", params={"cell": "infrastructure"})).text
    count = int(re.search(r"<strong>(\d+)</strong> action", infrastructure).group(1))
    assert 0 < count < 155
    action = re.search(r'href="(/actions/[0-9a-f-]{36})"', infrastructure).group(1)
    page = await web.get(action)
    assert "Update the tracking" in page.text
    refused = await post_form(
        web, f"{action}/tracking", {"status": "at-risk", "rag": "red", "rag_narrative": ""}, from_page=action
    )
    assert refused.status_code == 400 and "a RAG rating needs a narrative" in refused.text
    version = re.search(r'name="version" value="(\d+)"', page.text).group(1)
    saved = await post_form(
        web,
        f"{action}/tracking",
        {"status": "at-risk", "rag": "red", "version": version, "rag_narrative": "Contractor delays", "progress": "40"},
        from_page=action,
    )
    assert saved.headers["location"].endswith("done=tracking"), saved.text[:1500]
    shown = (await web.get(action)).text
    assert "Red: Contractor delays" in shown and "40%" in shown and "rag: – → red" in shown
    red = (await web.get("/actions", params={"rag": "red"})).text
    assert action in red


async def test_the_actions_download_as_csv_and_excel_from_the_browser(web):
    await sign_in(web, role="recovery-lead", name="Rita Lead")
    await upload(web, PLAN.name, PLAN.read_bytes())
    csv_file = await web.get("/actions/export.csv", params={"cell": "infrastructure"})
    assert csv_file.status_code == 200 and csv_file.headers["content-type"].startswith("text/csv")
    assert "attachment" in csv_file.headers["content-disposition"]
    xlsx = await web.get("/actions/export.xlsx")
    sheet = load_workbook(io.BytesIO(xlsx.content)).active
    assert sheet.max_row - 1 >= 155


async def test_anyone_sees_the_plans_progress_per_cell_and_theme_without_signing_in(web):
    await sign_in(web, role="recovery-lead", name="Rita Lead")
    await upload(web, PLAN.name, PLAN.read_bytes())
    infrastructure = (await web.get("/actions", params={"cell": "infrastructure"})).text
    action = re.search(r'href="(/actions/[0-9a-f-]{36})"', infrastructure).group(1)
    page = await web.get(action)
    version = re.search(r'name="version" value="(\d+)"', page.text).group(1)
    await post_form(
        web,
        f"{action}/tracking",
        {
            "status": "on-track",
            "rag": "green",
            "version": version,
            "rag_narrative": "Mr Named Person says fine",
            "progress": "60",
        },
        from_page=action,
    )
    web.cookies.clear()  # a visitor: no session at all
    shown = await web.get("/plan-progress")
    assert shown.status_code == 200, shown.text[:1000]
    assert "<title>Recovery plan progress – Kent Together</title>" in shown.text
    cells = shown.text[shown.text.index('id="cells"') :]
    assert re.search(r"Infrastructure</th>\s*<td[^>]*>\d+</td>", cells)
    assert "Green 1" in cells and 'id="themes-infrastructure"' in shown.text
    assert "Mr Named Person" not in shown.text


async def test_a_recovery_lead_uploads_the_edited_export_checks_what_would_change_then_applies_it(web):
    await sign_in(web, role="recovery-lead", name="Rita Lead")
    await upload(web, PLAN.name, PLAN.read_bytes())
    workbook = load_workbook(io.BytesIO((await web.get("/actions/export.xlsx", params={"cell": "economy"})).content))
    sheet = workbook["Actions"]
    headings = [c.value for c in sheet[1]]
    row = next(sheet.iter_rows(min_row=2, max_row=2))
    row[headings.index("RAG")].value = "Amber"
    row[headings.index("RAG narrative")].value = "Grant scheme oversubscribed"
    action_id = row[headings.index("Action id")].value
    edited = io.BytesIO()
    workbook.save(edited)

    async def send(**fields):
        page = await web.get("/actions/tracking")
        return await web.post(
            "/actions/tracking",
            data={"csrf_token": csrf_of(page.text), **fields},
            files={"file": ("economy.xlsx", edited.getvalue(), "application/octet-stream")},
        )

    checked = await send()
    assert checked.status_code == 200, checked.text[:1500]
    assert "Nothing has changed yet" in checked.text and "– → amber: Grant scheme oversubscribed" in checked.text
    assert "Amber: Grant scheme oversubscribed" not in (await web.get(f"/actions/{action_id}")).text
    applied = await send(apply="yes")
    assert applied.status_code == 200 and "Tracking uploaded" in applied.text
    assert "Amber: Grant scheme oversubscribed" in (await web.get(f"/actions/{action_id}")).text
    again = await send(apply="yes")
    assert re.search(r'id="counts">0 changed', again.text)

    row[headings.index("Progress %")].value = "lots"
    edited = io.BytesIO()
    workbook.save(edited)
    refused = await send()
    assert refused.status_code == 400 and "The tracking was not uploaded" in refused.text
    assert "&#39;lots&#39; is not a number" in refused.text or "'lots' is not a number" in refused.text
