"""Make a service's audit table refuse inserts (a database that cannot record), and undo it."""

from sqlalchemy import text

_REFUSE = {
    "sqlite": [
        """CREATE TRIGGER audit_refused BEFORE INSERT ON audit
                  BEGIN SELECT RAISE(ABORT, 'audit log unavailable'); END"""
    ],
    "postgresql": [
        """CREATE OR REPLACE FUNCTION audit_refused() RETURNS trigger AS $$
                      BEGIN RAISE EXCEPTION 'audit log unavailable'; END $$ LANGUAGE plpgsql""",
        """CREATE TRIGGER audit_refused BEFORE INSERT ON audit
                      FOR EACH ROW EXECUTE FUNCTION audit_refused()""",
    ],
}


async def refuse_audit(runtime) -> None:
    async with runtime.db.sessions() as session, session.begin():
        for statement in _REFUSE[runtime.db.dialect]:
            await session.execute(text(statement))


async def allow_audit(runtime) -> None:
    on = " ON audit" if runtime.db.dialect == "postgresql" else ""
    async with runtime.db.sessions() as session, session.begin():
        await session.execute(text(f"DROP TRIGGER audit_refused{on}"))
