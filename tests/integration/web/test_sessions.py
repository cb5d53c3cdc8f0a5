"""The web front's one table: sessions, migrated like every service's, sealed, and keyed so the table alone opens none."""

import asyncio

import httpx
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import select

from services.web.app import create_app
from services.web.models import metadata, sessions
from shared.crypto import new_key
from shared.db import Database, create_engine
from tests.integration.web.conftest import SERVICE, ask_for_help, post_form, sign_in, web_settings
from tests.support.browser import serving
from tests.support.waiting import eventually

__all__ = ["SERVICE"]


def test_the_migrations_build_exactly_the_sessions_table(database_url):
    async def differences():
        engine = create_engine(database_url)
        async with engine.connect() as connection:
            found = await connection.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync, opts={"compare_type": True}), metadata)
            )
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
    web_on_both, database_url
):
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


async def _stored_sessions(database_url: str) -> list:
    db = Database(database_url)
    try:
        async with db.sessions() as session:
            return list((await session.execute(select(sessions))).mappings().all())
    finally:
        await db.dispose()


async def test_ended_sessions_are_swept_in_the_background_without_their_cookie_coming_back(stack, database_url, clock):
    app = create_app(web_settings(stack, database_url, session_sweep_seconds=0.05), clock=clock)
    async with serving(app) as url:
        async with (
            httpx.AsyncClient(base_url=url, timeout=30) as worker,
            httpx.AsyncClient(base_url=url, timeout=30) as resident,
        ):
            await sign_in(worker, role="hub", hub="thanet", name="Swept Worker")
            await post_form(resident, "/get-help", {})
            await post_form(resident, "/get-help/postcode", {"postcode": "CT9 2RN"})
            before = {row["id"] for row in await _stored_sessions(database_url)}
            assert len(before) >= 2
            clock.advance(minutes=31)  # both idle past 30 minutes; neither comes back
            async with httpx.AsyncClient(base_url=url, timeout=30) as later:
                await sign_in(later, role="hub", hub="dover", name="Live Worker")

                async def swept():
                    left = {row["id"] for row in await _stored_sessions(database_url)}
                    return left if not (left & before) else None

                left = await eventually(swept)
                assert len(left) == 1, "the live session is kept"
                assert (await later.get("/hub")).status_code == 200


async def test_rekey_re_seals_the_web_sessions_and_the_new_key_alone_opens_them(stack, database_url, tmp_path):
    from typer.testing import CliRunner

    from shared.crypto import Keyring
    from suite.cli import app as cli

    k1, k2, index = new_key(), new_key(), new_key()
    first = create_app(web_settings(stack, database_url, data_keys=f"k1:{k1}", blind_index_key=index))
    async with serving(first) as url, httpx.AsyncClient(base_url=url, timeout=30) as worker:
        await sign_in(worker, role="hub", hub="thanet", name="Rekeyed Worker")
        cookie = worker.cookies["kt_session"]
    keyring = Keyring.from_text(f"k2:{k2},k1:{k1}", index)
    assert {keyring.key_id_of(bytes(row["data"])) for row in await _stored_sessions(database_url)} == {"k1"}

    env = {
        "WEB_DATABASE_URL": database_url,
        "KT_DATA_KEYS": f"k2:{k2},k1:{k1}",
        "KT_BLIND_INDEX_KEY": index,
        "KT_VAR_DIR": str(tmp_path),
    }
    result = await asyncio.to_thread(CliRunner().invoke, cli, ["rekey", "web"], env=env)
    assert result.exit_code == 0, result.output
    assert "web_sessions" in result.output
    assert {keyring.key_id_of(bytes(row["data"])) for row in await _stored_sessions(database_url)} == {"k2"}

    after = create_app(web_settings(stack, database_url, data_keys=f"k2:{k2}", blind_index_key=index))
    async with (
        serving(after) as url,
        httpx.AsyncClient(base_url=url, timeout=30, cookies={"kt_session": cookie}) as worker,
    ):
        page = await worker.get("/hub")
        assert page.status_code == 200 and "Rekeyed Worker" in page.text, "signed in still, with the new key alone"


def test_kent_together_rekey_covers_the_web_fronts_sessions():
    from suite import registry

    assert "web" in registry.names(registry.personal())
