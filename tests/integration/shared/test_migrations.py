"""Every service's migrations build exactly the tables its code declares, on both databases."""

import asyncio
import importlib
from datetime import UTC, date, datetime

import orjson
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import select, text

from shared.crypto import Keyring, new_key
from shared.db import Database, create_engine, upgrade
from shared.uow import UnitOfWork
from suite.registry import SERVICES as SPECS

SERVICES = [spec.name for spec in SPECS]


@pytest.mark.parametrize("service", SERVICES)
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_migrations_match_the_models(service, backend, tmp_path, postgres_templates):
    if backend == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"
        upgrade(service, url)
    else:
        url = postgres_templates.fresh_database(service)
    metadata = importlib.import_module(f"services.{service}.models").metadata

    async def differences():
        engine = create_engine(url)
        async with engine.connect() as connection:
            found = await connection.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync, opts={"compare_type": True}), metadata)
            )
        await engine.dispose()
        return found

    assert asyncio.run(differences()) == []


# -- sealing the personal data already held (referrals 0005, fulfilment 0003)

NOW = datetime(2026, 1, 5, 9, 30, tzinfo=UTC)
REFERRAL_EVENT = orjson.dumps(
    {"type": "uk.gov.kent.referral.received.v1", "data": {"resident": {"name": "Margaret Jones"}}}
)


def unmigrated(service: str, backend: str, tmp_path, postgres_templates) -> str:
    if backend == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
    return postgres_templates.empty_database(service)


async def insert(url: str, statements: list[tuple[str, dict]]) -> None:
    engine = create_engine(url)
    async with engine.begin() as connection:
        for statement, values in statements:
            await connection.execute(text(statement), values)
    await engine.dispose()


async def raw_values(url: str, tables: list[str]) -> str:
    engine = create_engine(url)
    parts = []
    async with engine.connect() as connection:
        for table in tables:
            for row in (await connection.execute(text(f"SELECT * FROM {table}"))).all():
                parts += [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in row]
    await engine.dispose()
    return "\n".join(parts)


@pytest.fixture
def keys(monkeypatch):
    """The service's configured keys, as the migration reads them (through its settings)."""
    data_keys, index_key = f"k1:{new_key()}", new_key()
    monkeypatch.setenv("KT_DATA_KEYS", data_keys)
    monkeypatch.setenv("KT_BLIND_INDEX_KEY", index_key)
    return Keyring.from_text(data_keys, index_key)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_referrals_held_in_clear_are_sealed_by_the_migration_and_still_found(
    backend, tmp_path, postgres_templates, keys
):
    from services.referrals import service
    from services.referrals.models import tables

    url = unmigrated("referrals", backend, tmp_path, postgres_templates)
    upgrade("referrals", url, "0004")
    referral = {
        "id": "r-1",
        "reference": "KT-AAAA-BBBB",
        "channel": "phone",
        "status": "open",
        "received_at": NOW,
        "created_at": NOW,
        "updated_at": NOW,
        "created_by": "adviser-1",
        "created_by_role": "call-centre",
        "name": "Margaret Jones",
        "name_key": "jones margaret",
        "date_of_birth": date(1941, 3, 2),
        "phone": "+441843577000",
        "email": "mj@example.org",
        "address_line1": "12 Northdown Road",
        "address_line2": None,
        "town": "Margate",
        "postcode": "CT9 2RN",
        "contact_preference": "phone",
        "vulnerabilities": '["shielding"]',
        "language": None,
        "referrer": '{"name": "Susan Jones"}',
        "consent": '{"to_share": true, "given_by": "resident"}',
        "possible_duplicate": False,
        "version": 1,
    }
    asyncio.run(
        insert(
            url,
            [
                ("INSERT INTO request_types (id, label, active, position) VALUES ('food', 'Food', true, 0)", {}),
                (
                    f"INSERT INTO referrals ({', '.join(referral)}) VALUES ({', '.join(':' + k for k in referral)})",
                    referral,
                ),
                (
                    "INSERT INTO requests (id, referral_id, position, type, details, urgency, status) "
                    "VALUES ('q-1', 'r-1', 0, 'food', 'Weekly shop, diabetic', 'routine', 'open')",
                    {},
                ),
                (
                    "INSERT INTO referral_changes (referral_id, at, by, kind, fields, note) "
                    "VALUES ('r-1', :at, 'adviser-1', 'amended', '[]', 'moved to her daughter')",
                    {"at": NOW},
                ),
                (
                    "INSERT INTO outbox (event_id, topic, key, type, payload, created_at) "
                    "VALUES ('e-1', 'kt.referrals.v1', 'r-1', 'referral.received', :payload, :at)",
                    {"payload": REFERRAL_EVENT, "at": NOW},
                ),
            ],
        )
    )

    upgrade("referrals", url)

    held = asyncio.run(raw_values(url, ["referrals", "requests", "referral_changes", "outbox"]))
    for secret in ("Margaret", "Jones", "577000", "Northdown", "CT9 2RN", "1941", "diabetic", "daughter", "mj@"):
        assert secret not in held, secret

    async def read_back():
        db = Database(url)
        uow = lambda: UnitOfWork(db, source="/test", outbox=tables.outbox, keyring=keys)  # noqa: E731
        try:
            out = await service.get_referral(uow(), "r-1")
            found = [
                await service.search_referrals(uow(), **criteria)
                for criteria in ({"name": "margaret"}, {"phone": "+441843577000"}, {"postcode": "CT9 2RN"})
            ]
            async with db.sessions() as session:
                payload = await session.scalar(select(tables.outbox.c.payload))
        finally:
            await db.dispose()
        return out, found, payload

    out, found, payload = asyncio.run(read_back())
    assert out.resident.name == "Margaret Jones" and out.resident.date_of_birth == date(1941, 3, 2)
    assert out.referrer.name == "Susan Jones" and out.requests[0].details == "Weekly shop, diabetic"
    assert [[r["id"] for r in results] for results in found] == [["r-1"]] * 3
    assert keys.open(payload) == REFERRAL_EVENT  # the relay publishes it as it was


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_fulfilment_held_in_clear_is_sealed_by_the_migration(backend, tmp_path, postgres_templates, keys):
    from services.fulfilment import service
    from services.fulfilment.models import tables
    from shared.auth import ROLE_SCOPES, Principal

    url = unmigrated("fulfilment", backend, tmp_path, postgres_templates)
    upgrade("fulfilment", url, "0002")
    event = orjson.dumps({"type": "assignment.routed", "data": {"resident": {"name": "Margaret Jones"}}})
    asyncio.run(
        insert(
            url,
            [
                (
                    "INSERT INTO hubs (slug, name, district_code, sla, updated_at, updated_by) "
                    "VALUES ('thanet', 'Thanet', 'E07000114', '{}', :at, 'system')",
                    {"at": NOW},
                ),
                (
                    "INSERT INTO referrals (id, reference, channel, received_at, resident, referrer, consent_to_share, updated_at) "
                    "VALUES ('r-1', 'KT-AAAA-BBBB', 'phone', :at, :resident, :referrer, true, :at)",
                    {
                        "at": NOW,
                        "resident": '{"name": "Margaret Jones", "address": {"postcode": "CT9 2RN"}}',
                        "referrer": '{"name": "Susan Jones"}',
                    },
                ),
                (
                    "INSERT INTO assignments (id, request_id, referral_id, request_type, details, urgency, status, reason, hub, "
                    "received_at, rejected_by, follow_up, created_at, updated_at, version) VALUES ('a-1', 'q-1', 'r-1', 'food', "
                    "'Weekly shop, diabetic', 'routine', 'routed', 'by postcode', 'thanet', :at, '[]', false, :at, :at, 1)",
                    {"at": NOW},
                ),
                (
                    "INSERT INTO assignment_changes (assignment_id, at, by, to_status, note) "
                    "VALUES ('a-1', :at, 'thanet-1', 'routed', 'rang her daughter')",
                    {"at": NOW},
                ),
                (
                    "INSERT INTO case_notes (assignment_id, kind, text, hub, at, by) "
                    "VALUES ('a-1', 'note', 'Left a message for Margaret', 'thanet', :at, 'thanet-1')",
                    {"at": NOW},
                ),
                (
                    "INSERT INTO hub_feed (hub, seq, event_id, type, assignment_id, event, created_at) "
                    "VALUES ('thanet', 1, 'e-1', 'assignment.routed', 'a-1', :event, :at)",
                    {"event": event, "at": NOW},
                ),
                (
                    "INSERT INTO outbox (event_id, topic, key, type, payload, created_at) "
                    "VALUES ('e-1', 'kt.hub.thanet.v1', 'r-1', 'assignment.routed', :event, :at)",
                    {"event": event, "at": NOW},
                ),
            ],
        )
    )

    upgrade("fulfilment", url)

    held = asyncio.run(
        raw_values(url, ["referrals", "assignments", "assignment_changes", "case_notes", "hub_feed", "outbox"])
    )
    for secret in ("Margaret", "Jones", "CT9 2RN", "diabetic", "daughter"):
        assert secret not in held, secret

    async def read_back():
        db = Database(url)
        uow = lambda: UnitOfWork(db, source="/test", outbox=tables.outbox, keyring=keys)  # noqa: E731
        admin = Principal(subject="admin-1", role="admin", scopes=ROLE_SCOPES["admin"])
        try:
            return (
                await service.get_assignment(uow(), assignment_id="a-1", by=admin),
                await service.read_feed(uow(), hub="thanet", cursor=0, limit=10),
            )
        finally:
            await db.dispose()

    assignment, feed = asyncio.run(read_back())
    assert assignment["resident"]["name"] == "Margaret Jones" and assignment["referrer"]["name"] == "Susan Jones"
    assert assignment["details"] == "Weekly shop, diabetic" and assignment["history"][0]["note"] == "rang her daughter"
    assert assignment["notes"][0]["text"] == "Left a message for Margaret"
    assert feed["items"][0]["event"] == orjson.loads(event)
