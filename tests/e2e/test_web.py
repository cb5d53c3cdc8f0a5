"""The web front in a real browser, through the suite as `make run` starts it: every person's journey, and every
page checked with axe-core for WCAG 2.2 AA.

Playwright (PyPI) drives Debian's Chromium; axe-core (npm, pinned in
services/web/package.json) runs in each page. One browser for the module, a
fresh context (its own cookies) per person. Set SCREENSHOTS_TO=docs to write
each person's main page into docs/ (the README shows them).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from playwright.async_api import Page, async_playwright

from services.web.app import WebSettings, create_app
from shared.bus import free_port
from shared.db import upgrade
from tests.support.browser import chromium, serving
from tests.support.suite import ROOT, Suite, port_offset
from tests.support.waiting import eventually

AXE = ROOT / "services/web/node_modules/axe-core/axe.min.js"
WCAG_22_AA = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
PLAN = ROOT / "services/actions/data/krf-recovery-cell-action-plans.txt"


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    instance = Suite(
        var_dir=tmp_path_factory.mktemp("web-suite") / "var",
        port_offset=port_offset("web"),
        broker_port=free_port(),
    )
    try:  # a suite that did not start in time is stopped too, never left running
        instance.start(timeout=180)  # all five, on a machine others share: the postcode directory loads slowly there
        yield instance
    finally:
        instance.stop()


@pytest.fixture(scope="module")
async def browser():
    assert AXE.exists(), "axe-core is missing: `make test` runs npm ci in services/web"
    async with async_playwright() as playwright:
        instance = await playwright.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        yield instance
        await instance.close()


class Walk:
    """What the pages showed: axe-core's violations, titles, and anything the Content-Security-Policy refused."""

    def __init__(self):
        self.checked: dict[str, list] = {}
        self.titles: dict[str, str] = {}
        self.refused: list[str] = []

    async def check(self, page: Page, name: str) -> None:
        await page.wait_for_load_state("load")
        if not await page.evaluate("() => typeof window.axe !== 'undefined'"):
            await page.evaluate(AXE.read_text())  # through the DevTools protocol: the page's CSP stays as it is
        # resultTypes: only the violations get their selectors worked out (axe's own speed-up; what it finds is
        # the same), so a page is checked in a fraction of the time on a busy machine.
        violations = await page.evaluate(
            """async (tags) => {
            const result = await axe.run(document, {runOnly: {type: "tag", values: tags},
                                                    resultTypes: ["violations"]});
            return result.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                                                 nodes: v.nodes.slice(0, 3).map(n => n.target.join(" "))}));
        }""",
            WCAG_22_AA,
        )
        self.checked[name] = violations
        path = re.sub(r"[0-9a-f]{8}-[0-9a-f-]{27}", "{id}", page.url.split("?")[0].split("/", 3)[-1])
        self.titles[name] = (await page.title(), path)


@pytest.fixture(scope="module")
def walk():
    return Walk()


async def person(browser, walk: Walk, base: str, *, width: int = 1100):
    context = await browser.new_context(base_url=base, viewport={"width": width, "height": 900})
    page = await context.new_page()
    page.on(
        "console",
        lambda message: (
            walk.refused.append(message.text)
            if "Content Security Policy" in message.text or "Refused to" in message.text
            else None
        ),
    )
    return context, page


async def sign_in(page: Page, *, role: str, name: str, hub: str = "") -> None:
    await page.goto("/sign-in")
    await page.fill("#name", name)
    await page.check(f"input[name=role][value={role}]")
    if hub:
        await page.select_option("#hub", hub)
    await page.click("text=Sign in (development)")
    await page.wait_for_load_state("load")


async def screenshot(page: Page, name: str, tmp: Path, *, full_page: bool = True) -> None:
    """The README's picture of a page, when SCREENSHOTS_TO asks for them (a picture proves nothing a test checks)."""
    folder = os.environ.get("SCREENSHOTS_TO")
    if folder:
        await page.screenshot(path=str(ROOT / folder / f"web-{name}.png"), full_page=full_page)


async def look(
    page: Page, walk: Walk, path: str, name: str, *, shot: str | None = None, tmp: Path, full_page: bool = True
) -> None:
    """Open a page, check it, and take its picture if it is one of the README's."""
    await page.goto(path)
    await walk.check(page, name)
    if shot:
        await screenshot(page, shot, tmp, full_page=full_page)


async def ask_for_help(
    page: Page, walk: Walk, *, postcode: str, types: list[str], name: str, tmp: Path, check: bool = False
) -> str:
    """The resident's journey through the pages, with a mouse; each page checked when `check`."""

    async def step(label):
        if check:
            await walk.check(page, label)

    await page.goto("/get-help")
    await step("resident: start")
    await page.click("text=Start now")
    await step("resident: postcode")
    await page.click("text=Continue")
    await step("resident: postcode, empty (error)")
    await page.fill("#postcode", postcode)
    await page.click("text=Continue")
    await step("resident: help")
    for kind in types:
        await page.check(f"input[name=types][value={kind}]")
    await page.click("text=Continue")
    await step("resident: when")
    await page.check("input[name=urgency][value=today]")
    await page.click("text=Continue")
    await step("resident: details")
    await page.fill(f"#details-{types[0]}", "Please ring the bell twice")
    await page.click("text=Continue")
    await step("resident: about you")
    await page.fill("#name", name)
    await page.fill("#line1", "12 Northdown Road")
    await page.fill("#town", "Margate")
    await page.click("text=Continue")
    await step("resident: contact")
    await page.fill("#phone", "01843 577000")
    await page.check("input[name=preference][value=phone]")
    await page.click("text=Continue")
    await step("resident: consent")
    await page.click("text=Continue")
    await step("resident: consent not given (error)")
    await page.check("input[name=consent]")
    await page.check("input[name=notify][value=yes]")
    await page.click("text=Continue")
    await step("resident: reference by text or email, with only a landline (error)")
    assert "Enter a mobile number or email address" in await page.inner_text(".govuk-error-summary")
    await page.check("input[name=notify][value=no]")
    await page.click("text=Continue")
    await step("resident: check your answers")
    if check:
        await screenshot(page, "resident-check-answers", tmp)
    await page.click("#submit")
    await page.wait_for_url("**/get-help/confirmation")
    await step("resident: confirmation")
    if check:
        await screenshot(page, "resident-confirmation", tmp)
    return await page.inner_text("#reference")


async def open_case(page: Page, reference: str, label: str, *, timeout: float = 20.0) -> str:
    """Reload the queue until the case is there (it arrives within seconds); open it; its URL."""
    link = page.locator(f"a:has-text('{reference}'):has(span:text-is('{label}'))")

    async def listed():
        await page.goto("/hub")
        return await link.count()

    await eventually(listed, timeout=timeout, interval=0.5)
    await link.click()
    await page.wait_for_load_state("load")
    return page.url


async def test_make_run_prints_the_web_front_and_one_line_per_person(suite):
    printed = suite.log.read_text()
    port = 8005 + suite.port_offset
    for person_, path in (
        ("residents", "/get-help"),
        ("advisers", "/adviser"),
        ("hubs", "/hub"),
        ("recovery leads", "/actions"),
        ("dashboard", "/dashboard"),
    ):
        assert re.search(rf"{person_}:\s+http://127\.0\.0\.1:{port}{path}\n", printed), person_


async def test_food_and_a_prescription_for_thanet_through_the_hubs_to_the_dashboard(suite, browser, walk, tmp_path):
    base = suite.url(8005)
    resident, page = await person(browser, walk, base)
    reference = await ask_for_help(
        page, walk, postcode="CT9 2RN", types=["food", "prescription"], name="Margaret Jones", tmp=tmp_path, check=True
    )
    assert "Thanet" in await page.inner_text("#who-helps")
    await page.goto("/check-request")
    await walk.check(page, "resident: check on my request")
    await page.fill("#reference", reference)
    await page.fill("#postcode", "ct9 2rn")
    await page.click("button:text('Check')")
    await walk.check(page, "resident: my request's status")
    await resident.close()

    thanet, page = await person(browser, walk, base)
    await sign_in(page, role="hub", hub="thanet", name="Tom Thanet")
    food = await open_case(page, reference, "Food")
    await look(page, walk, "/hub", "hub: queue", shot="hub-queue", tmp=tmp_path)
    case_id = food.rsplit("/", 1)[1]
    await page.click(f"#holder-{case_id} button:text('Assign to me')")
    await page.wait_for_load_state()  # the submit's answer, not the page it left
    assert "You have the case" in await page.inner_text("main")
    await walk.check(page, "hub: queue, a case taken")
    await look(page, walk, "/hub?holder=mine&sort=due", "hub: queue, mine (filtered)", tmp=tmp_path)
    await look(page, walk, food, "hub: case", shot="hub-case", tmp=tmp_path)
    await page.click("#do-accepted")
    await page.click("#do-in_progress")
    await page.select_option("#fulfilled_outcome", "delivered")
    await page.click("#do-fulfilled")
    await page.wait_for_load_state()  # the submit's answer, not the page it left
    assert "This case is closed" in await page.content()
    await page.goto("/hub/run-sheet")
    await walk.check(page, "hub: run sheet")
    await open_case(page, reference, "Prescription collection")
    await page.click("text=Reject it")
    await page.check("input[name=reason][value=wrong-district]")
    await page.select_option("#hub", "canterbury")
    await page.click("#do-rejected")
    await page.wait_for_load_state()  # the submit's answer, not the page it left
    assert "it has gone to the canterbury hub" in await page.content()
    await thanet.close()

    canterbury, page = await person(browser, walk, base)
    await sign_in(page, role="hub", hub="canterbury", name="Cath Canterbury")
    await open_case(page, reference, "Prescription collection")
    await canterbury.close()

    analyst, page = await person(browser, walk, base, width=1280)
    await sign_in(page, role="analyst", name="Ann Analyst")

    async def counted():
        await page.goto("/dashboard")
        await page.wait_for_selector("#tile-requests b", timeout=10_000)
        return await page.inner_text("#tile-requests b") == "2"

    await eventually(counted, timeout=30, interval=1)
    assert await page.inner_text("#tile-referrals b") == "1"
    assert "token" not in page.url, "the placeholder is taken out of the address bar"
    await walk.check(page, "analyst: dashboard")
    await screenshot(page, "dashboard", tmp_path)
    await analyst.close()


async def test_an_adviser_is_warned_of_a_duplicate_and_finds_the_caller(suite, browser, walk, tmp_path):
    adviser, page = await person(browser, walk, suite.url(8005))
    await sign_in(page, role="call-centre", name="Sam Adviser")
    await walk.check(page, "adviser: take a call")
    await page.click("text=Check and save")
    await walk.check(page, "adviser: take a call, empty (error)")
    for attempt in range(2):
        await page.goto("/adviser")
        await page.fill("#name", "Walter Twice")
        await page.fill("#phone", "01843 577321")
        await page.fill("#line1", "4 Harbour Street")
        await page.fill("#postcode", "CT11 8LP")
        await page.check("input[name=types][value=food]")
        await page.check("input[name=consent]")
        if attempt == 0:
            await screenshot(page, "adviser-call", tmp_path)
        await page.click("text=Check and save")
    text = await page.inner_text("main")
    assert "This may be a duplicate" in text and "An open food request for this person from today" in text
    await walk.check(page, "adviser: duplicate warning")
    await screenshot(page, "adviser-duplicate", tmp_path)
    await page.click("#use-existing")
    await walk.check(page, "adviser: referral")
    reference = re.search(r"KT-[0-9A-Z]{4}-[0-9A-Z]{4}", await page.inner_text("h1")).group(0)
    await page.goto("/adviser/find")
    await page.fill("#name", "walter twice")
    await page.fill("#postcode", "ct11 8lp")
    await page.click("button:text('Search')")
    assert reference in await page.inner_text("main")
    await walk.check(page, "adviser: find")
    await adviser.close()


async def test_a_maidstone_worker_cannot_open_a_thanet_case(suite, browser, walk, tmp_path):
    base = suite.url(8005)
    resident, page = await person(browser, walk, base)
    reference = await ask_for_help(
        page, walk, postcode="CT9 2RN", types=["befriending"], name="Private Person", tmp=tmp_path
    )
    await resident.close()
    thanet, page = await person(browser, walk, base)
    await sign_in(page, role="hub", hub="thanet", name="Tom Thanet")
    case = await open_case(page, reference, "Befriending")
    await thanet.close()
    maidstone, page = await person(browser, walk, base)
    await sign_in(page, role="hub", hub="maidstone", name="Mo Maidstone")
    response = await page.goto(case)
    assert response.status == 404 and "Page not found" in await page.inner_text("h1")
    assert "Private Person" not in await page.content()
    await walk.check(page, "error: not found")
    await page.goto("/actions")
    await walk.check(page, "error: forbidden")
    await maidstone.close()


async def test_a_recovery_lead_uploads_the_plan_and_rates_an_action(suite, browser, walk, tmp_path):
    lead, page = await person(browser, walk, suite.url(8005))
    await sign_in(page, role="recovery-lead", name="Rita Lead")
    await page.goto("/actions/import")
    await walk.check(page, "recovery: upload")
    await page.set_input_files("#file", str(PLAN))
    await page.click("button:text('Upload')")
    await page.wait_for_load_state()  # the submit's answer, not the page it left
    assert "155 created" in await page.inner_text("main")
    await walk.check(page, "recovery: upload report")
    await look(
        page,
        walk,
        "/actions?cell=infrastructure",
        "recovery: actions",
        shot="recovery-actions",
        tmp=tmp_path,
        full_page=False,
    )
    await page.click("#actions a >> nth=0")
    await page.check("input[name=rag][value=amber]")
    await page.fill("#rag_narrative", "Waiting on the contractor")
    await page.click("text=Save tracking")
    await page.wait_for_load_state()  # the submit's answer, not the page it left
    assert "Amber: Waiting on the contractor" in await page.inner_text("main")
    await walk.check(page, "recovery: action")
    await screenshot(page, "recovery-action", tmp_path)
    async with page.expect_download() as download:
        await page.goto("/actions")
        await page.click("text=Excel")
    assert (await download.value).suggested_filename.endswith(".xlsx")
    exported = tmp_path / "actions.xlsx"
    await (await download.value).save_as(exported)
    await look(page, walk, "/actions/tracking", "recovery: upload tracking", tmp=tmp_path)
    await page.set_input_files("#file", str(exported))
    await page.click("#check")
    await page.wait_for_load_state()  # the submit's answer, not the page it left
    assert "0 changed, 155 unchanged, 0 refused" in await page.inner_text("#counts")
    await walk.check(page, "recovery: tracking report")
    await lead.close()
    visitor, page = await person(browser, walk, suite.url(8005))  # anyone, signed in or not
    await page.goto("/plan-progress")
    assert "Amber 1" in await page.inner_text("#cells")
    await walk.check(page, "public: plan progress")
    await visitor.close()


async def test_the_public_pages_sign_in_and_a_stale_form_pass_too(suite, browser, walk):
    visitor, page = await person(browser, walk, suite.url(8005))
    for path, name in (("/", "home"), ("/sign-in", "sign in"), ("/no-such-page", "error: not found (public)")):
        await page.goto(path)
        await walk.check(page, name)
    await page.goto("/sign-in")
    await page.click("text=Sign in (development)")
    await walk.check(page, "sign in, empty (error)")
    await page.goto("/get-help")
    await page.context.clear_cookies()  # the session is gone: the form's token is stale
    await page.click("text=Start now")
    await page.wait_for_load_state()  # the submit's answer, not the page it left
    assert "This form has expired" in await page.inner_text("h1")
    await walk.check(page, "error: form expired")
    await visitor.close()


async def test_the_resident_pages_work_with_the_keyboard_alone_and_reflow_at_400_percent(suite, browser, walk):
    # 400% zoom of a 1280-pixel window is a 320-pixel-wide page (WCAG 1.4.10 Reflow).
    visitor, page = await person(browser, walk, suite.url(8005), width=320)
    await page.goto("/get-help")
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.textContent.trim()") == "Skip to main content"
    await page.keyboard.press("Tab")
    for _ in range(12):  # to the Start button, by keyboard
        if await page.evaluate("document.activeElement.textContent.trim()") == "Start now":
            break
        await page.keyboard.press("Tab")
    await page.keyboard.press("Enter")
    await page.wait_for_url("**/get-help/postcode")
    for _ in range(12):
        if await page.evaluate("document.activeElement.id") == "postcode":
            break
        await page.keyboard.press("Tab")
    await page.keyboard.type("CT9 2RN")
    await page.keyboard.press("Enter")
    await page.wait_for_url("**/get-help/help")
    for path in ("/get-help/help", "/", "/check-request", "/sign-in"):
        await page.goto(path)
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= 320, f"{path} scrolls sideways at 400% zoom ({width}px)"
    await visitor.close()


@pytest.fixture
def expiring_web_database(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'web.db'}"
    upgrade("web", url)
    return url


async def test_a_session_that_has_expired_asks_to_sign_in_again(suite, browser, walk, expiring_web_database):
    """A web front of its own (the same code, the suite's services) whose clock the test moves on."""
    from datetime import timedelta

    from shared.db import utcnow

    now = [utcnow()]
    settings = WebSettings(
        database_url=expiring_web_database,
        var_dir=suite.var_dir,
        log_json=False,
        jwt_signing_key=(suite.var_dir / "dev-signing-key").read_text().strip(),
        referrals_url=suite.url(8001),
        fulfilment_url=suite.url(8002),
        actions_url=suite.url(8003),
        reporting_url=suite.url(8004),
    )
    async with serving(create_app(settings, clock=lambda: now[0])) as base:
        visitor, page = await person(browser, walk, base)
        await sign_in(page, role="hub", hub="thanet", name="Tom Thanet")
        assert "Thanet hub: cases" in await page.inner_text("h1")
        now[0] += timedelta(minutes=31)
        await page.goto("/hub")
        assert page.url.endswith("/sign-in")
        assert "Your session ended because you were away for a while" in await page.inner_text("main")
        await walk.check(page, "sign in, after the session ended")
        await visitor.close()


async def test_the_check_finds_what_is_wrong_on_a_page_that_has_it(browser):
    """The checker is not vacuous: a page with an unlabelled field, an image without alt text and no title fails."""
    context = await browser.new_context()
    page = await context.new_page()
    await page.set_content('<html lang="en"><body><main><img src="data:,"><input id="x"></main></body></html>')
    probe = Walk()
    await probe.check(page, "broken")
    assert {"image-alt", "label", "document-title"} <= {v["id"] for v in probe.checked["broken"]}
    await context.close()


def test_every_page_checked_passes_axe_core_for_wcag_2_2_aa_with_a_title_of_its_own(walk):
    """Runs last: the pages the journeys above went through, as each person saw them."""
    assert len(walk.checked) >= 30, sorted(walk.checked)
    failing = {name: v for name, v in walk.checked.items() if v}
    assert failing == {}, json.dumps(failing, indent=1)
    # No two pages share a title. A form posted back with its errors is the same page ("Error: " before its
    # title); the error pages (not found, not allowed) are one page wherever they answer.
    paths_by_title: dict[str, set[str]] = {}
    for name, (title, path) in walk.titles.items():
        if not name.startswith("error:") and "(error)" not in name:
            paths_by_title.setdefault(title.removeprefix("Error: "), set()).add(path)
    shared = {title: paths for title, paths in paths_by_title.items() if len(paths) > 1}
    assert shared == {}, shared
    assert walk.refused == [], "the Content-Security-Policy refused something a page needs"
    version = json.loads((AXE.parent / "package.json").read_text())["version"]
    print(f"\naxe-core {version}: {len(walk.checked)} pages, 0 violations (WCAG 2.2 AA)")
