"""The web front's one table: sessions, migrated like every service's, sealed, and keyed so the table alone opens none."""

import asyncio

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import select

from services.web.models import metadata, sessions
from shared.db import Database, create_engine
import httpx

from services.web.app import create_app
from tests.integration.web.conftest import SERVICE, ask_for_help, post_form, sign_in, web_settings
from tests.support.browser import serving

__all__ = ["SERVICE"]


def test_the_migrations_build_exactly_the_sessions_table(database_url):
    async def differences():
        engine = create_engine(database_url)
        async with engine.connect() as connection:
            found = await connection.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync, opts={"compare_type": True}), metadata))
        await engine.dispose()
        return found

    assert asyncio.run(differences()) == []


@pytest.fixture
async def web_on_both(stack, database_url, clock):
    """The web front with its sessions on SQLite, then on PostgreSQL."""
    app = create_app(web_settings(stack, database_url), clock=clock)
    async with serving(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        yield client


async def test_a_whole_journey_and_its_sessions_work_on_either_database(web_on_both, clock):
    reference = await ask_for_help(web_on_both, types=("food",), name="Either Database")
    assert reference.startswith("KT-")
    await sign_in(web_on_both, role="hub", hub="thanet", name="Either Worker")
    clock.advance(minutes=31)
    assert (await web_on_both.get("/hub")).headers["location"] == "/sign-in"


async def test_a_residents_answers_are_sealed_in_the_sessions_table_and_the_cookie_is_not_its_key(
        web_on_both, database_url):
    web = web_on_both
    await post_form(web, "/get-help", {})
    await post_form(web, "/get-help/postcode", {"postcode": "CT9 2RN"})
    await post_form(web, "/get-help/help", {"types": "food"})
    await post_form(web, "/get-help/when", {"urgency": "today"})
    await post_form(web, "/get-help/details", {})
    await post_form(web, "/get-help/about-you", {"name": "Sealed Resident", "line1": "7 Secret Lane"})
    db = Database(database_url)
    try:
        async with db.sessions() as session:
            rows = (await session.execute(select(sessions))).mappings().all()
    finally:
        await db.dispose()
    stored = b"".join(bytes(r["data"]) for r in rows)
    assert rows and b"Sealed Resident" not in stored and b"Secret Lane" not in stored and b"CT9 2RN" not in stored
    assert web.cookies["kt_session"] not in {r["id"] for r in rows}
