"""SQLite's writers in one process take turns on the event loop: in the order they asked, never lost or stuck."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from shared.db import Database
from shared.errors import is_lock_timeout


@pytest.fixture
async def db(tmp_path):
    database = Database(f"sqlite+aiosqlite:///{tmp_path}/writers.db", busy_timeout_seconds=2.0)
    async with database.sessions() as session, session.begin():
        await session.execute(text("CREATE TABLE turns (who TEXT)"))
    yield database
    await database.dispose()


async def written(db: Database) -> list[str]:
    async with db.read_sessions() as session:
        return list((await session.execute(text("SELECT who FROM turns ORDER BY rowid"))).scalars())


async def test_writers_waiting_for_the_write_lock_get_it_in_the_order_they_asked(db):
    holding, release = asyncio.Event(), asyncio.Event()

    async def first() -> None:
        async with db.sessions() as session, session.begin():
            await session.execute(text("INSERT INTO turns VALUES ('first')"))
            holding.set()
            await release.wait()

    async def then(who: str) -> None:
        async with db.sessions() as session, session.begin():
            await session.execute(text("INSERT INTO turns VALUES (:who)"), {"who": who})

    holder = asyncio.create_task(first())
    await holding.wait()
    waiting = []
    for who in ("b", "c", "d", "e", "f"):
        waiting.append(asyncio.create_task(then(who)))
        await asyncio.sleep(0.05)  # each has asked before the next does
    release.set()
    await asyncio.gather(holder, *waiting)
    # SQLite's busy handler would wake them by their sleeps' lengths, the last comer often first.
    assert await written(db) == ["first", "b", "c", "d", "e", "f"]


async def test_a_writer_that_gives_up_without_committing_passes_the_turn_on(db):
    abandoned = db.sessions()
    await abandoned.execute(text("INSERT INTO turns VALUES ('never')"))
    await abandoned.close()  # rolled back, not committed
    failed = db.sessions()
    with pytest.raises(OperationalError):
        await failed.execute(text("INSERT INTO no_such_table VALUES (1)"))
    await failed.close()
    async with db.sessions() as session, session.begin():
        await session.execute(text("INSERT INTO turns VALUES ('next')"))
    assert await written(db) == ["next"]


async def test_a_writer_inside_another_fails_after_the_busy_timeout_instead_of_hanging(db):
    async with db.sessions() as outer, outer.begin():
        await outer.execute(text("INSERT INTO turns VALUES ('outer')"))
        with pytest.raises(OperationalError, match="database is locked") as refused:
            async with db.sessions() as inner, inner.begin():
                await inner.execute(text("INSERT INTO turns VALUES ('inner')"))
    # As SQLite's own busy timeout: a lock timeout (a 503 to an API caller, a retry to a consumer), not a 500.
    assert is_lock_timeout(refused.value)
    assert await written(db) == ["outer"]


async def test_the_relays_unsynced_writes_wait_their_turn_with_the_others(db):
    holding, release = asyncio.Event(), asyncio.Event()

    async def synced() -> None:
        async with db.sessions() as session, session.begin():
            await session.execute(text("INSERT INTO turns VALUES ('synced')"))
            holding.set()
            await release.wait()

    async def unsynced() -> None:
        async with db.unsynced_sessions() as session, session.begin():
            await session.execute(text("INSERT INTO turns VALUES ('unsynced')"))

    holder = asyncio.create_task(synced())
    await holding.wait()
    mark = asyncio.create_task(unsynced())
    await asyncio.sleep(0.2)
    assert not mark.done()  # waiting for its turn, not writing beside the other
    release.set()
    await asyncio.gather(holder, mark)
    assert await written(db) == ["synced", "unsynced"]
    async with db.unsynced_engine.connect() as connection:
        assert (await connection.exec_driver_sql("PRAGMA synchronous")).scalar() == 1  # NORMAL: no fsync a commit
