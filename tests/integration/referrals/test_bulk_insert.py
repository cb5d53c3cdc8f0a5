"""UnitOfWork.insert_rows: one COPY per table on PostgreSQL, executemany on SQLite, the same rows either way."""

from datetime import datetime

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from services.referrals.models import referrals, requests, sealing, tables
from services.referrals.service import seed_request_types
from shared.crypto import Keyring, new_key
from shared.db import Database, utcnow
from shared.uow import UnitOfWork

SERVICE = "referrals"
KEYRING = Keyring.from_text(f"k1:{new_key()}", new_key())


def referral_row(referral_id: str, *, reference: str, key: str | None = None, received_at: datetime | None = None):
    now = utcnow()
    return sealing["referrals"].seal(
        {
            "id": referral_id,
            "reference": reference,
            "channel": "phone",
            "status": "open",
            "received_at": received_at or now,
            "created_at": now,
            "updated_at": now,
            "created_by": "adviser-1",
            "created_by_role": "call-centre",
            "name": "Margaret Jones",
            "date_of_birth": None,
            "phone": None,
            "email": None,
            "address_line1": "12 Northdown Road",
            "address_line2": None,
            "town": None,
            "postcode": "CT9 2RN",
            "district": "CT9",
            "contact_preference": None,
            "vulnerabilities": ["shielding"],
            "language": None,
            "referrer": None,
            "consent": {"to_share": True, "given_by": "resident"},
            "possible_duplicate": False,
            "idempotency_client": "adviser-1" if key else None,
            "idempotency_key": key,
            "body_hash": "h",
            "version": 1,
        },
        KEYRING,
    )


@pytest.fixture
async def db(database_url):
    database = Database(database_url)
    await seed_request_types(uow(database))  # requests name their type
    yield database
    await database.dispose()


def uow(db: Database) -> UnitOfWork:
    return UnitOfWork(db, source="/test", outbox=tables.outbox, keyring=KEYRING)


async def test_rows_written_in_bulk_read_back_as_written_with_json_and_utc_times(db):
    async with uow(db) as unit:
        await unit.insert_rows(
            referrals, [referral_row("r-1", reference="KT-AAA1"), referral_row("r-2", reference="KT-AAA2")]
        )
        await unit.insert_rows(
            requests,
            [
                {
                    "id": f"q-{i}",
                    "referral_id": "r-1",
                    "position": i,
                    "type": "food",
                    "sealed_details": None,
                    "needed_by": None,
                    "urgency": "routine",
                    "status": "open",
                    "duplicate_of": None,
                }
                for i in range(3)
            ],
        )
        await unit.commit()
    async with db.sessions() as session:
        row = sealing["referrals"].open(
            (await session.execute(select(referrals).where(referrals.c.id == "r-1"))).mappings().one(), KEYRING
        )
        assert row["vulnerabilities"] == ["shielding"]
        assert row["consent"] == {"to_share": True, "given_by": "resident"}
        assert row["referrer"] is None
        assert row["received_at"].tzinfo is not None
        assert len((await session.execute(select(requests.c.id))).all()) == 3


async def test_a_unique_key_taken_twice_is_an_integrity_error_and_nothing_of_the_transaction_stays(db):
    async with uow(db) as unit:
        await unit.insert_rows(referrals, [referral_row("r-1", reference="KT-BBB1", key="k")])
        await unit.commit()
    with pytest.raises(IntegrityError):
        async with uow(db) as unit:
            await unit.insert_rows(referrals, [referral_row("r-2", reference="KT-BBB2")])
            await unit.insert_rows(referrals, [referral_row("r-3", reference="KT-BBB3", key="k")])
            await unit.commit()
    async with db.sessions() as session:
        assert list(await session.scalars(select(referrals.c.id))) == ["r-1"]


async def test_a_naive_time_is_refused_as_by_an_ordinary_insert(db):
    with pytest.raises(Exception, match="naive"):
        async with uow(db) as unit:
            await unit.insert_rows(
                referrals, [referral_row("r-1", reference="KT-CCC1", received_at=datetime(2020, 4, 1))]
            )
