"""A hub worker works their queue on the web front: cases, transitions, calls, notes, follow-up, the run sheet."""

import csv
import io
import re

import httpx

from services.web.app import create_app
from tests.integration.web.conftest import (
    SERVICE,
    ask_for_help,
    post_form,
    sign_in,
    web_settings,
)
from tests.support.browser import serving
from tests.support.waiting import eventually

__all__ = ["SERVICE"]


async def cases_for(hub_client, reference: str, *, expect: int, path: str = "/hub") -> dict[str, str]:
    """The case ids in the queue page for this reference, by type label, once `expect` are there."""

    async def found():
        page = (await hub_client.get(path)).text
        rows = re.findall(
            r'data-assignment="([^"]+)">\s*<td[^>]*><a [^>]*>'
            + re.escape(reference)
            + r'<span class="govuk-visually-hidden"> ([^<]+)</span>',
            page,
        )
        return dict((label, case_id) for case_id, label in rows) if len(rows) >= expect else None

    return await eventually(found)


async def worker(stack, sessions_url, hub: str):
    app = create_app(web_settings(stack, sessions_url))
    context = serving(app)
    url = await context.__aenter__()
    client = httpx.AsyncClient(base_url=url, timeout=30)
    await sign_in(client, role="hub", hub=hub, name=f"{hub.title()} Worker")
    return client, context


async def test_the_thanet_worker_sees_both_requests_accepts_and_fulfils_one_and_rejects_the_other_to_its_hub(
    web, stack, sessions_url
):
    reference = await ask_for_help(web, types=("food", "prescription"), name="Queue Resident")
    thanet, served = await worker(stack, sessions_url, "thanet")
    try:
        cases = await cases_for(thanet, reference, expect=2)
        assert set(cases) == {"Food", "Prescription collection"}
        food, prescription = cases["Food"], cases["Prescription collection"]
        for to in ("accepted", "in_progress"):
            done = await post_form(thanet, f"/hub/cases/{food}/transitions", {"to": to}, from_page=f"/hub/cases/{food}")
            assert done.status_code == 303, done.text[:1500]
        fulfilled = await post_form(
            thanet,
            f"/hub/cases/{food}/transitions",
            {"to": "fulfilled", "fulfilled_outcome": "delivered"},
            from_page=f"/hub/cases/{food}",
        )
        assert fulfilled.headers["location"].endswith("done=fulfilled")
        page = (await thanet.get(f"/hub/cases/{food}")).text
        assert "This case is closed" in page and "Fulfilled" in page
        no_reason = await post_form(
            thanet, f"/hub/cases/{prescription}/transitions", {"to": "rejected"}, from_page=f"/hub/cases/{prescription}"
        )
        assert no_reason.status_code == 400 and 'href="#reason">Select why you are rejecting it' in no_reason.text
        rejected = await post_form(
            thanet,
            f"/hub/cases/{prescription}/transitions",
            {"to": "rejected", "reason": "wrong-district", "hub": "canterbury"},
            from_page=f"/hub/cases/{prescription}",
        )
        assert rejected.headers["location"] == "/hub"
        assert "it has gone to the canterbury hub" in (await thanet.get("/hub")).text
        gone = await thanet.get(f"/hub/cases/{prescription}")
        assert gone.status_code == 404, "once in Canterbury's queue, Thanet no longer sees it"
    finally:
        await thanet.aclose()
        await served.__aexit__(None, None, None)
    canterbury, served = await worker(stack, sessions_url, "canterbury")
    try:
        assert set(await cases_for(canterbury, reference, expect=1)) == {"Prescription collection"}
    finally:
        await canterbury.aclose()
        await served.__aexit__(None, None, None)


async def test_a_maidstone_worker_gets_the_not_found_page_for_a_thanet_case(web, stack, sessions_url):
    reference = await ask_for_help(web, types=("food",), name="Not Maidstone's")
    thanet, served = await worker(stack, sessions_url, "thanet")
    try:
        case_id = (await cases_for(thanet, reference, expect=1))["Food"]
    finally:
        await thanet.aclose()
        await served.__aexit__(None, None, None)
    await sign_in(web, role="hub", hub="maidstone", name="Maidstone Worker")
    page = await web.get(f"/hub/cases/{case_id}")
    assert page.status_code == 404 and "Page not found" in page.text and "Not Maidstone" not in page.text
    assert reference not in (await web.get("/hub")).text


async def test_what_a_resident_typed_is_shown_as_text_on_the_hub_page(web, stack, sessions_url):
    script = "<script>alert('x')</script> & <b>bold</b>"
    reference = await ask_for_help(web, types=("food",), name="<img src=x onerror=alert(1)>", details={"food": script})
    thanet, served = await worker(stack, sessions_url, "thanet")
    try:
        case_id = (await cases_for(thanet, reference, expect=1))["Food"]
        page = (await thanet.get(f"/hub/cases/{case_id}")).text
    finally:
        await thanet.aclose()
        await served.__aexit__(None, None, None)
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in page
    assert "<script>alert" not in page and "<img src=x" not in page


async def test_a_call_a_note_and_a_follow_up_flag_are_recorded_on_the_case(web, stack, sessions_url):
    reference = await ask_for_help(web, types=("befriending",), name="Called Resident")
    thanet, served = await worker(stack, sessions_url, "thanet")
    try:
        case_id = (await cases_for(thanet, reference, expect=1))["Befriending"]
        case = f"/hub/cases/{case_id}"
        missing = await post_form(thanet, f"{case}/contact-attempts", {}, from_page=case)
        assert missing.status_code == 400 and "Select what happened when you called" in missing.text
        await post_form(
            thanet, f"{case}/contact-attempts", {"outcome": "no-answer", "call_note": "Rang at 10"}, from_page=case
        )
        await post_form(thanet, f"{case}/notes", {"text": "Neighbour has a key"}, from_page=case)
        await post_form(thanet, f"{case}/follow-up", {"follow_up": "yes", "follow_up_on": "2030-01-02"}, from_page=case)
        page = (await thanet.get(case)).text
        assert "Call: No answer – Rang at 10" in page and "Note: Neighbour has a key" in page
        assert "Follow up on 2030-01-02" in page
        flagged = (await thanet.get("/hub", params={"follow_up": "yes"})).text
        assert reference in flagged
    finally:
        await thanet.aclose()
        await served.__aexit__(None, None, None)


async def test_the_run_sheet_lists_todays_accepted_cases_and_downloads_as_csv_safe_for_spreadsheets(
    web, stack, sessions_url
):
    reference = await ask_for_help(web, types=("practical",), name='=HYPERLINK("http://x")')
    thanet, served = await worker(stack, sessions_url, "thanet")
    try:
        case_id = (await cases_for(thanet, reference, expect=1))["Practical help"]
        await post_form(
            thanet, f"/hub/cases/{case_id}/transitions", {"to": "accepted"}, from_page=f"/hub/cases/{case_id}"
        )
        sheet = await thanet.get("/hub/run-sheet")
        assert reference in sheet.text
        download = await thanet.get("/hub/run-sheet.csv")
    finally:
        await thanet.aclose()
        await served.__aexit__(None, None, None)
    assert download.headers["content-type"].startswith("text/csv")
    rows = [r for r in csv.DictReader(io.StringIO(download.text)) if r["reference"] == reference]
    assert rows and rows[0]["resident_name"] == '\'=HYPERLINK("http://x")' and rows[0]["status"] == "accepted"


async def test_hub_pages_ask_for_sign_in_and_refuse_other_roles(web):
    assert (await web.get("/hub")).headers["location"] == "/sign-in"
    await sign_in(web, role="recovery-lead", name="Rita Lead")
    refused = await web.get("/hub")
    assert refused.status_code == 403 and "You cannot see this page" in refused.text


async def test_two_workers_of_one_hub_share_out_cases_on_the_queue_page(web, stack, sessions_url):
    reference = await ask_for_help(web, types=("food", "prescription", "befriending"), name="Team Resident")
    ann_app, bob_app = create_app(web_settings(stack, sessions_url)), create_app(web_settings(stack, sessions_url))
    async with (
        serving(ann_app) as ann_url,
        serving(bob_app) as bob_url,
        httpx.AsyncClient(base_url=ann_url, timeout=30) as ann,
        httpx.AsyncClient(base_url=bob_url, timeout=30) as bob,
    ):
        await sign_in(ann, role="hub", hub="thanet", name="Ann Team")
        await sign_in(bob, role="hub", hub="thanet", name="Bob Team")
        cases = await cases_for(ann, reference, expect=3)
        food, prescription, befriending = cases["Food"], cases["Prescription collection"], cases["Befriending"]

        took = await post_form(ann, f"/hub/cases/{food}/take", {"back": "/hub"}, from_page="/hub")
        assert took.status_code == 303 and took.headers["location"] == "/hub"
        page = (await ann.get("/hub")).text
        assert "You have the case" in page
        assert re.search(rf'id="holder-{food}">\s*<strong>You</strong>', page)
        assert "Ann Team" in (await bob.get("/hub")).text  # Bob sees who holds it
        refused = await post_form(bob, f"/hub/cases/{food}/take", {"back": "/hub"}, from_page="/hub")
        assert refused.status_code == 303
        assert "ask them to hand it over" in (await bob.get("/hub")).text
        await post_form(bob, f"/hub/cases/{prescription}/take", {"back": "/hub"}, from_page="/hub")

        mine = await cases_for(ann, reference, expect=1, path="/hub?holder=mine")
        assert set(mine) == {"Food"}
        # The hand-over select offers the hub's staff directory, by the names they signed in with.
        offered = re.search(rf'<select[^>]*id="to-{food}".*?</select>', (await ann.get("/hub")).text, re.S)
        # (The stack is the session's: other tests' Thanet workers may be in the directory too.)
        assert offered
        names = re.findall(r"<option[^>]*>([^<]+)</option>", offered.group(0))
        assert "Bob Team" in names and "Ann Team" not in names, names
        handed = await post_form(
            ann, f"/hub/cases/{food}/hand-over", {"to": "dev:bob-team", "back": "/hub"}, from_page="/hub"
        )
        assert handed.status_code == 303
        assert "Handed over to Bob Team" in (await ann.get("/hub")).text
        bobs = await cases_for(bob, reference, expect=2, path="/hub?holder=mine")
        assert set(bobs) == {"Food", "Prescription collection"}
        unassigned = await cases_for(ann, reference, expect=1, path="/hub?holder=unassigned")
        assert set(unassigned) == {"Befriending"}
        released = await post_form(bob, f"/hub/cases/{food}/release", {"back": "/hub?holder=mine"}, from_page="/hub")
        assert released.headers["location"] == "/hub?holder=mine"
        oldest_first = (await ann.get("/hub", params={"sort": "routed"})).text
        assert "oldest first" in oldest_first and befriending in oldest_first
