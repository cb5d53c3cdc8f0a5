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
    token = mint_token(signing_key=settings.signing_key(), role="analyst", issuer=settings.jwt_issuer,
                       audience=settings.jwt_audience)
    async with serving(app) as base:
        await deliver(app, *[s.received() for s in stories],
                      *[s.status_changed("routed", after=timedelta(minutes=5)) for s in stories],
                      ActionCreatedV1(action_id=uuid.uuid4(), plan="krf", cell="economy", number=1, kind="mitigate",
                                      priority="essential", timescale="short", status="on-track", rag="amber",
                                      progress=20, baseline_due_date=date(2099, 1, 1), due_date=date(2099, 1, 1),
                                      created_at=APRIL))
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
