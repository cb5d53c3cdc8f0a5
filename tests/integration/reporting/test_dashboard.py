"""The dashboard as a person sees it: a real Chromium runs the page's script against the real service."""

import re
import uuid
from datetime import date, timedelta
from html.parser import HTMLParser

import pytest

from services.reporting.app import create_app
from shared.auth import mint_token
from shared.events import ActionCreatedV1
from tests.integration.reporting.conftest import APRIL, CANTERBURY, Story, deliver
from tests.support.browser import run_chromium, serving

SERVICE = "reporting"


class Marks(HTMLParser):
    """The data-* marks the charts draw, and the text of the at-a-glance tiles."""

    def __init__(self):
        super().__init__()
        self.groups, self.tiles, self._tile = [], {}, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "g" and "data-count" in attrs:
            self.groups.append((attrs.get("data-key") or attrs.get("data-day"), attrs["data-count"]))
        if tag == "div" and (attrs.get("id") or "").startswith("tile-"):
            self._tile = attrs["id"]
        elif tag == "b" and self._tile:
            self.tiles[self._tile] = ""

    def handle_data(self, data):
        if self._tile in self.tiles and self.tiles[self._tile] == "":
            self.tiles[self._tile] = data
            self._tile = None


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_the_dashboard_draws_the_figures_for_a_token_given_in_the_link(settings, tmp_path):
    app = create_app(settings.model_copy(update={"run_consumers": False}))
    stories = [Story(received_at=APRIL + timedelta(days=i % 3)) for i in range(5)]
    stories += [Story(request_type="prescription", district_code=CANTERBURY, hub="canterbury") for _ in range(2)]
    token = mint_token(
        signing_key=settings.signing_key(), role="analyst", issuer=settings.jwt_issuer, audience=settings.jwt_audience
    )
    async with serving(app) as base:
        await deliver(
            app,
            *[s.received() for s in stories],
            *[s.status_changed("routed", after=timedelta(minutes=5)) for s in stories],
            ActionCreatedV1(
                action_id=uuid.uuid4(),
                plan="krf",
                cell="economy",
                number=1,
                kind="mitigate",
                priority="essential",
                timescale="short",
                status="on-track",
                rag="amber",
                progress=20,
                baseline_due_date=date(2099, 1, 1),
                due_date=date(2099, 1, 1),
                created_at=APRIL,
            ),
        )
        dom = await run_chromium(f"{base}/?token={token}", profile=tmp_path / "profile")
        screenshot = tmp_path / "dashboard.png"
        await run_chromium(f"{base}/?token={token}", profile=tmp_path / "profile2", screenshot=screenshot)
        refused = await run_chromium(f"{base}/?token=not-a-token", profile=tmp_path / "profile3")

    marks = Marks()
    marks.feed(dom)
    drawn = dict(marks.groups)
    assert drawn["thanet"] == "5" and drawn["canterbury"] == "2"  # requests by district
    assert drawn["2020-04-01"] == "4" and drawn["2020-04-02"] == "2" and drawn["2020-04-03"] == "1"  # per day
    assert drawn["amber"] == "1"  # actions by RAG
    assert marks.tiles["tile-requests"] == "7" and marks.tiles["tile-referrals"] == "7"
    assert token not in dom, "the token stays out of the page"
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert re.search(r'id="message"[^>]*>[^<]*invalid token', refused)
    assert 'id="token-box" style="display: block;"' in refused


class Labels(HTMLParser):
    """The text of every `<text class="tick">` (the y axis) and `<text class="day">` (the x axis)."""

    def __init__(self):
        super().__init__()
        self.ticks, self.days, self._into = [], [], None

    def handle_starttag(self, tag, attrs):
        kind = dict(attrs).get("class")
        self._into = {"tick": self.ticks, "day": self.days}.get(kind) if tag == "text" else None

    def handle_data(self, data):
        if self._into is not None:
            self._into.append(data)
            self._into = None


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_the_dashboard_reads_as_a_briefing_does_whole_numbers_uk_dates_and_what_is_overdue(settings, tmp_path):
    from services.reporting.service import project

    app = create_app(settings.model_copy(update={"run_consumers": False}))
    token = mint_token(
        signing_key=settings.signing_key(), role="analyst", issuer=settings.jwt_issuer, audience=settings.jwt_audience
    )
    # 1,004 requests over three April 2020 days, 27% for prescriptions; one more left routed past its deadlines.
    stories = [
        Story(request_type="prescription" if i % 100 < 27 else "food", received_at=APRIL + timedelta(days=i % 3))
        for i in range(1004)
    ]
    late = Story(urgency="today")
    routed = late.status_changed("routed", after=timedelta(minutes=5)).model_copy(
        update={"accept_due_at": APRIL + timedelta(hours=4), "fulfil_due_at": APRIL + timedelta(days=1)}
    )
    async with serving(app) as base:
        runtime = app.state.runtime
        async with runtime.uow() as uow:
            await project(uow, [s.received().envelope(source="/test") for s in stories])
            await uow.commit()
        await deliver(app, late.received(), routed)
        dom = await run_chromium(f"{base}/?token={token}", profile=tmp_path / "profile")

    marks = Marks()
    marks.feed(dom)
    assert marks.tiles["tile-requests"] == "1,005"  # thousands as the briefing writes them
    assert marks.tiles["tile-prescription"] == "27%"
    assert marks.tiles["tile-overdue"] == "1"
    assert dict(marks.groups)["overdue now, not yet accepted"] == "1"
    labels = Labels()
    labels.feed(dom)
    ticks = [int(t.replace(",", "")) for t in labels.ticks]
    assert ticks == sorted(set(ticks)) and ticks[0] == 0 and ticks[-1] >= 335  # whole, distinct, up to the busiest day
    assert labels.days[0] == "01/04/2020" and labels.days[1] == "02/04"  # day first, and the year where it starts
