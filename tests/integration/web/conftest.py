"""The web front against the real services: each served on a free port, consuming from the real broker.

The four services are started once for the module's tests (a consumer group
takes the broker seconds to join); each test gets its own web front with a
fresh sessions database, and talks to it over HTTP as a browser does.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from services.fulfilment.postcodes import PostcodeDirectory
from services.web.app import WebSettings, create_app
from shared.bus import ensure_topics
from tests.support.browser import serving
from tests.support.databases import sqlite_template
from tests.support.services import build_app, make_settings, sqlite_database

for _name in list(os.environ):
    if _name.startswith("WEB_"):
        del os.environ[_name]

SERVICE = "web"
SIGNING_KEY = "web-test-signing-key-" + "x" * 32
THANET_POSTCODE = "CT9 2RN"  # Northdown Road, Margate
MEDWAY_POSTCODE = "ME4 4TR"  # Gun Wharf, Chatham
MAIDSTONE_POSTCODE = "ME14 1XQ"  # County Hall, Maidstone


@dataclass
class Stack:
    urls: dict[str, str]
    settings: dict
    var_dir: Path


NAMES = ("referrals", "fulfilment", "actions", "reporting")


@pytest.fixture(scope="session")
def stack_databases(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """Each service's migrated SQLite database (migrating runs its own event loop: done outside the test's)."""
    tmp = tmp_path_factory.mktemp("stack")
    scratch = tmp_path_factory.getbasetemp()
    return tmp, {name: sqlite_database(name, tmp_path=tmp, scratch=scratch) for name in NAMES}


@pytest.fixture(scope="session")
async def stack(broker, stack_databases):
    """referrals, fulfilment, actions and reporting, as `make run` starts them, on SQLite and the test broker.

    One for every web test: the web front is what is under test, and each test's cases are its own
    (a resident of its own name, a reference of its own)."""
    tmp, databases = stack_databases
    async with running_stack(broker, databases, tmp / "var") as running:
        yield running


@contextlib.asynccontextmanager
async def running_stack(broker, databases: dict[str, str], var_dir: Path, **overrides):
    """The services named in `databases`, served on free ports, relaying and consuming; `overrides` go to each one's
    settings (how they verify tokens, say)."""
    unique = uuid.uuid4().hex[:10]
    directory = PostcodeDirectory.load()
    settings = {
        name: make_settings(
            name,
            database_url=database,
            broker=broker,
            signing_key=SIGNING_KEY,
            unique=unique,
            var_dir=var_dir,
            run_relay=True,
            run_consumers=True,
            consumer_group=f"{name}-{unique}",
            outbox_poll_seconds=0.05,
            consumer_session_timeout_ms=6000,
            **overrides,
        )
        for name, database in databases.items()
    }
    topics = next(iter(settings.values())).topics
    await ensure_topics(broker.bootstrap_servers, {t: 1 for t in topics.declared()})
    urls = {}
    async with _serving_all([(name, build_app(name, settings[name], directory=directory)) for name in settings], urls):
        yield Stack(urls=urls, settings=settings, var_dir=var_dir)


class _serving_all:
    def __init__(self, apps, urls):
        self.apps = apps
        self.urls = urls
        self.contexts = []

    async def __aenter__(self):
        for name, app in self.apps:
            context = serving(app)
            self.urls[name] = await context.__aenter__()
            self.contexts.append(context)
        return self.urls

    async def __aexit__(self, *exc):
        for context in reversed(self.contexts):
            await context.__aexit__(None, None, None)


def web_settings(stack: Stack, database_url: str, **overrides) -> WebSettings:
    values = dict(database_url=database_url, var_dir=stack.var_dir, jwt_signing_key=SIGNING_KEY, log_json=False)
    values.update({f"{name}_url": url for name, url in stack.urls.items()})
    values.update(overrides)
    return WebSettings(**values)


class Clock:
    """The sessions' clock, moved on by the test (no sleeping, no wall-clock assertions)."""

    def __init__(self):
        from shared.db import utcnow

        self.now = utcnow()

    def __call__(self):
        return self.now

    def advance(self, **delta):
        from datetime import timedelta

        self.now += timedelta(**delta)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def sessions_url(tmp_path, tmp_path_factory) -> str:
    """The web front's own database (sessions), on SQLite; test_sessions.py runs the store on PostgreSQL too."""
    target = tmp_path / "web.db"
    shutil.copy(sqlite_template("web", tmp_path_factory.getbasetemp()), target)
    return f"sqlite+aiosqlite:///{target}"


@pytest.fixture
async def web(stack, sessions_url, clock):
    """The web front on a real port; yields a browser-like client (cookies kept, redirects not followed)."""
    app = create_app(web_settings(stack, sessions_url), clock=clock)
    async with serving(app) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            client.app = app
            yield client


CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
KEY = re.compile(r'name="idempotency_key" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "the page has a form with a CSRF token"
    return found.group(1)


async def post_form(client: httpx.AsyncClient, path: str, data: dict | list, *, from_page: str | None = None):
    """Post a form as a browser does: with the CSRF token of the page it is on."""
    page = await client.get(from_page or path)
    fields: dict[str, list[str]] = {"csrf_token": [csrf_of(page.text)]}
    for name, value in data.items() if isinstance(data, dict) else data:
        fields.setdefault(name, []).append(value)
    return await client.post(path, data=fields)


async def sign_in(client: httpx.AsyncClient, *, role: str, hub: str = "", name: str = "Sam Adviser"):
    response = await post_form(client, "/sign-in/dev", {"role": role, "hub": hub, "name": name}, from_page="/sign-in")
    assert response.status_code == 303, response.text
    return response


async def ask_for_help(
    client: httpx.AsyncClient,
    *,
    postcode: str = THANET_POSTCODE,
    types=("food", "prescription"),
    name: str = "Margaret Jones",
    details: dict | None = None,
    phone: str = "01843 577000",
    notify: str | None = None,
) -> str:
    """A resident's whole journey through the pages; the reference on the confirmation."""
    assert (await post_form(client, "/get-help", {})).status_code == 303
    steps = [
        ("/get-help/postcode", {"postcode": postcode}),
        ("/get-help/help", [("types", t) for t in types]),
        ("/get-help/when", {"urgency": "today"}),
        ("/get-help/details", {f"details-{k}": v for k, v in (details or {}).items()}),
        ("/get-help/about-you", {"name": name, "line1": "12 Northdown Road", "town": "Margate"}),
        ("/get-help/contact", {"phone": phone, "preference": "phone"}),
        ("/get-help/consent", {"consent": "yes", **({"notify": notify} if notify else {})}),
    ]
    for path, data in steps:
        response = await post_form(client, path, data)
        assert response.status_code == 303, f"{path}: {response.text[:2000]}"
    check = await client.get("/get-help/check")
    key = KEY.search(check.text).group(1)
    sent = await client.post("/get-help/check", data={"csrf_token": csrf_of(check.text), "idempotency_key": key})
    assert sent.headers.get("location") == "/get-help/confirmation", sent.text[:2000]
    confirmation = await client.get("/get-help/confirmation")
    return re.search(r'<strong id="reference">(KT-[0-9A-Z]{4}-[0-9A-Z]{4})</strong>', confirmation.text).group(1)
