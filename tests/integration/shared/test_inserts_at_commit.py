"""A unit of work that only inserts sends them at commit in one go on SQLite, and means the same as one that does not."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import JSON, Column, ForeignKey, Integer, String, Table, event, insert, select
from sqlalchemy.exc import IntegrityError

from shared.db import Database, UtcDateTime, new_metadata
from shared.outbox import outbox_table
from shared.uow import UnitOfWork

metadata = new_metadata()
people = Table(
    "people",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("seen_at", UtcDateTime, nullable=False),
    Column("details", JSON, nullable=True),
)
visits = Table(
    "visits",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("person_id", String(36), ForeignKey("people.id"), nullable=False),
    Column("note", String(40), nullable=False, default="visited"),  # filled by SQLAlchemy when not given
)
outbox = outbox_table(metadata)


@pytest.fixture(params=["sqlite", "postgres"])
def url(request, tmp_path, postgres_templates):
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path}/at-commit.db"
    return postgres_templates.empty_database("at_commit")


@pytest.fixture
async def db(url):
    database = Database(url)
    async with database.engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    yield database
    await database.dispose()


def at_commit(db: Database) -> UnitOfWork:
    return UnitOfWork(db, source="/test", outbox=outbox, inserts_at_commit=True, repositories={})


def statements_through_sqlalchemy(db: Database) -> list[str]:
    seen: list[str] = []
    event.listen(db.engine.sync_engine, "before_cursor_execute", lambda _c, _cur, sql, *_: seen.append(sql))
    return seen


async def stored(db: Database) -> tuple[list, list]:
    async with db.read_sessions() as session:
        return (
            (await session.execute(select(people).order_by(people.c.id))).all(),
            (await session.execute(select(outbox.c.event_id, outbox.c.topic))).all(),
        )


SEEN = datetime(2026, 12, 1, 9, 30, 15, 123456, tzinfo=UTC)


def person(pid: str) -> dict:
    return {"id": pid, "seen_at": SEEN, "details": {"needs": ["food"], "note": None}}


async def test_on_sqlite_the_inserts_and_the_outbox_reach_the_database_in_one_go_at_commit(db):
    seen = statements_through_sqlalchemy(db)
    async with at_commit(db) as uow:
        await uow.insert_rows(people, [person("a"), person("b")])
        uow.publish_data("test.happened", subject="a", data={"id": "a"}, topic="test-topic")
        await uow.commit()
    rows, events = await stored(db)
    assert [r.id for r in rows] == ["a", "b"]
    assert [e.topic for e in events] == ["test-topic"]
    if db.dialect == "sqlite":
        assert not [sql for sql in seen if "INSERT" in sql.upper()]  # none went statement by statement


async def test_values_are_stored_as_sqlalchemy_would_store_them(db):
    async with at_commit(db) as uow:
        await uow.insert_rows(people, [person("a")])
        await uow.commit()
    [row], _ = await stored(db)
    assert row.seen_at == SEEN and row.seen_at.tzinfo is not None
    assert row.details == {"needs": ["food"], "note": None}
    naive = {"id": "n", "seen_at": datetime(2026, 12, 1), "details": None}
    async with at_commit(db) as uow:
        with pytest.raises(Exception, match="naive datetime"):  # at commit on SQLite, at once on PostgreSQL
            await uow.insert_rows(people, [naive])
            await uow.commit()


async def test_a_constraint_broken_at_commit_is_an_integrity_error_and_writes_nothing(db):
    async with at_commit(db) as uow:
        await uow.insert_rows(people, [person("a")])
        await uow.commit()
    async with at_commit(db) as uow:
        with pytest.raises(IntegrityError):  # at commit on SQLite, at once on PostgreSQL
            uow.publish_data("test.happened", subject="b", data={"id": "b"}, topic="test-topic")
            await uow.insert_rows(people, [person("b"), person("a")])  # "a" again
            await uow.commit()
    rows, events = await stored(db)
    assert [r.id for r in rows] == ["a"] and events == []
    async with at_commit(db) as uow:  # and the write lock is free again
        await uow.insert_rows(people, [person("c")])
        await uow.commit()
    assert [r.id for r in (await stored(db))[0]] == ["a", "c"]


async def test_a_statement_run_meanwhile_comes_after_the_inserts_kept_so_far(db):
    async with at_commit(db) as uow:
        await uow.insert_rows(people, [person("a")])
        # Refers to the kept row: it must be in the table first (SQLite checks foreign keys at once).
        await uow.session.execute(insert(visits).values(person_id="a", note="rang"))
        await uow.insert_rows(people, [person("b")])
        await uow.commit()
    rows, _ = await stored(db)
    assert [r.id for r in rows] == ["a", "b"]


async def test_a_read_meanwhile_sees_the_rows_kept_and_the_rest_still_go_in_one_go(db):
    seen = statements_through_sqlalchemy(db)
    async with at_commit(db) as uow:
        await uow.insert_rows(people, [person("a")])
        assert (await uow.session.execute(select(people.c.id))).scalars().all() == ["a"]
        await uow.insert_rows(people, [person("b")])
        uow.publish_data("test.happened", subject="b", data={"id": "b"}, topic="test-topic")
        await uow.commit()
    rows, events = await stored(db)
    assert [r.id for r in rows] == ["a", "b"] and len(events) == 1
    if db.dialect == "sqlite":
        assert not [sql for sql in seen if "INSERT" in sql.upper()]


async def test_leaving_without_commit_writes_nothing_kept(db):
    async with at_commit(db) as uow:
        await uow.insert_rows(people, [person("a")])
        uow.publish_data("test.happened", subject="a", data={"id": "a"}, topic="test-topic")
    async with at_commit(db) as uow:
        await uow.insert_rows(people, [person("b")])
        await uow.session.execute(select(people.c.id))  # sent, in a transaction never committed
    assert await stored(db) == ([], [])


async def test_a_table_that_fills_a_column_itself_is_written_through_sqlalchemy(db):
    if db.dialect != "sqlite":
        pytest.skip("PostgreSQL's insert_rows is a COPY, which does not fill Python-side defaults (none is used)")
    async with at_commit(db) as uow:
        await uow.insert_rows(people, [person("a")])
        await uow.insert_rows(visits, [{"person_id": "a"}])  # "note" from its Python-side default
        await uow.commit()
    async with db.read_sessions() as session:
        assert (await session.execute(select(visits.c.person_id, visits.c.note))).all() == [("a", "visited")]


async def test_the_write_turn_is_shared_with_the_process_s_other_writers(db):
    if db.dialect != "sqlite":
        pytest.skip("SQLite's write turns")
    import asyncio

    order = []

    async def long_writer() -> None:
        async with db.sessions() as session, session.begin():
            await session.execute(insert(people).values(person("first")))
            order.append("first holds")
            await asyncio.sleep(0.3)
            order.append("first commits")

    async def at_once() -> None:
        await asyncio.sleep(0.05)
        async with at_commit(db) as uow:
            await uow.insert_rows(people, [{**person("second"), "seen_at": SEEN + timedelta(seconds=1)}])
            await uow.commit()
        order.append("second committed")

    await asyncio.gather(long_writer(), at_once())
    assert order == ["first holds", "first commits", "second committed"]
