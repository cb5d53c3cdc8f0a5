"""The analyst reaches the reporting dashboard from the web front, and its figures, without a token in the browser."""

from tests.integration.web.conftest import SERVICE, ask_for_help, sign_in
from tests.support.waiting import eventually

__all__ = ["SERVICE"]


async def test_an_analyst_opens_the_dashboard_and_its_figures_come_through_the_session(web):
    await ask_for_help(web, types=("food",), name="Counted Resident")
    await sign_in(web, role="analyst", name="Ann Analyst")
    first = await web.get("/dashboard")
    assert first.status_code == 303 and first.headers["location"] == "/dashboard?token=signed-in"
    page = await web.get(first.headers["location"])
    assert page.status_code == 200 and "<script>" in page.text
    assert "script-src 'sha256-" in page.headers["content-security-policy"]

    async def food_counted():
        figures = await web.get("/v1/figures/requests", params={"group_by": "type"})
        assert figures.status_code == 200, figures.text
        rows = {row["type"]: row["count"] for row in figures.json()["rows"]}
        return rows if rows.get("food", 0) >= 1 else None

    await eventually(food_counted)


async def test_the_figures_need_an_analysts_session(web):
    anonymous = await web.get("/v1/figures/requests", params={"group_by": "type"})
    assert anonymous.status_code == 401
    await sign_in(web, role="hub", hub="thanet", name="Hub Worker")
    assert (await web.get("/v1/figures/requests")).status_code == 401
    assert (await web.get("/dashboard")).status_code == 403
