"""personal data sealed at rest: the resident in one sealed column, blind indexes for lookups, plaintext dropped

Revision ID: 0005
Revises: 0004

Rows already there are sealed with the keys the service is configured with
(`KT_DATA_KEYS`, `KT_BLIND_INDEX_KEY`, or the development keys under var/),
read through the service's settings, so run it with the service's environment.
Outbox rows of events on the referrals topic are sealed in place too.
No downgrade: it would write the residents back in clear (restore the backup
taken before the upgrade instead).
"""

import orjson
import sqlalchemy as sa
from alembic import op

from shared.crypto import is_sealed

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

ERASED = "[erased]"
PERSONAL_FIELDS = (
    "name",
    "date_of_birth",
    "phone",
    "email",
    "address_line1",
    "address_line2",
    "town",
    "postcode",
    "contact_preference",
    "vulnerabilities",
    "language",
    "referrer",
)
BATCH = 500

referrals = sa.table(
    "referrals",
    sa.column("id", sa.String),
    sa.column("erased_at", sa.DateTime),
    *[
        sa.column(
            name,
            sa.JSON if name in ("vulnerabilities", "referrer") else sa.Date if name == "date_of_birth" else sa.String,
        )
        for name in PERSONAL_FIELDS
    ],
    sa.column("personal", sa.LargeBinary),
    sa.column("name_index", sa.String),
    sa.column("name_words", sa.Text),
    sa.column("phone_index", sa.String),
    sa.column("postcode_index", sa.String),
    sa.column("district", sa.String),
)
requests = sa.table(
    "requests", sa.column("id", sa.String), sa.column("details", sa.Text), sa.column("sealed_details", sa.LargeBinary)
)
referral_changes = sa.table(
    "referral_changes",
    sa.column("id", sa.Integer),
    sa.column("note", sa.Text),
    sa.column("sealed_note", sa.LargeBinary),
)
outbox = sa.table(
    "outbox", sa.column("id", sa.Integer), sa.column("topic", sa.String), sa.column("payload", sa.LargeBinary)
)


def upgrade() -> None:
    with op.batch_alter_table("referrals") as batch_op:
        batch_op.add_column(sa.Column("personal", sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column("name_index", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("name_words", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("phone_index", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("postcode_index", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("district", sa.String(length=8), nullable=True))
    with op.batch_alter_table("requests") as batch_op:
        batch_op.add_column(sa.Column("sealed_details", sa.LargeBinary(), nullable=True))
    with op.batch_alter_table("referral_changes") as batch_op:
        batch_op.add_column(sa.Column("sealed_note", sa.LargeBinary(), nullable=True))

    seal_existing_rows(op.get_bind())

    with op.batch_alter_table("referrals") as batch_op:
        batch_op.drop_index("ix_referrals_name_key")
        batch_op.drop_index("ix_referrals_phone")
        batch_op.drop_index("ix_referrals_postcode")
        for name in ("name_key", *PERSONAL_FIELDS):
            batch_op.drop_column(name)
        for name in ("personal", "name_index", "name_words", "district"):
            batch_op.alter_column(name, nullable=False)
        batch_op.create_index("ix_referrals_name_index", ["name_index"], unique=False)
        batch_op.create_index("ix_referrals_phone_index", ["phone_index"], unique=False)
        batch_op.create_index("ix_referrals_postcode_index", ["postcode_index"], unique=False)
    with op.batch_alter_table("requests") as batch_op:
        batch_op.drop_column("details")
    with op.batch_alter_table("referral_changes") as batch_op:
        batch_op.drop_column("note")


def downgrade() -> None:
    raise RuntimeError(
        "referrals 0005 sealed the residents' personal data; downgrading would write it back in clear. "
        "Restore the database backup taken before the upgrade instead."
    )


def seal_existing_rows(connection) -> None:
    """Seal what is there; the keys are loaded only if there is something to seal (an empty database needs none)."""
    keyring = topics = None

    def keys():
        nonlocal keyring, topics
        if keyring is None:
            from services.referrals.app import ReferralsSettings

            settings = ReferralsSettings()
            keyring, topics = settings.keyring(), settings.topics
        return keyring

    for row in _batches(connection, sa.select(referrals), referrals.c.id):
        connection.execute(referrals.update().where(referrals.c.id == row.id).values(**_sealed(row, keys())))
    for row in _batches(connection, sa.select(requests).where(requests.c.details.is_not(None)), requests.c.id):
        connection.execute(
            requests.update().where(requests.c.id == row.id).values(sealed_details=keys().seal(row.details.encode()))
        )
    for row in _batches(
        connection, sa.select(referral_changes).where(referral_changes.c.note.is_not(None)), referral_changes.c.id
    ):
        connection.execute(
            referral_changes.update()
            .where(referral_changes.c.id == row.id)
            .values(sealed_note=keys().seal(row.note.encode()))
        )
    for row in _batches(connection, sa.select(outbox), outbox.c.id):
        if not is_sealed(row.payload) and keys() and topics.personal(row.topic):
            connection.execute(outbox.update().where(outbox.c.id == row.id).values(payload=keyring.seal(row.payload)))


def _batches(connection, query, key):
    """Every row of `query`, read BATCH at a time by `key` (updates between reads are safe)."""
    last = None
    while True:
        page = query.order_by(key).limit(BATCH)
        if last is not None:
            page = page.where(key > last)
        rows = connection.execute(page).all()
        yield from rows
        if len(rows) < BATCH:
            return
        last = getattr(rows[-1], key.name)


def _sealed(row, keyring) -> dict:
    """What the service writes for this resident (services/referrals/service.py `_sealed_personal`)."""
    from services.referrals.domain import name_key
    from shared.privacy import outward_code

    personal = {name: getattr(row, name) for name in PERSONAL_FIELDS}
    personal["vulnerabilities"] = personal["vulnerabilities"] or []
    if personal["date_of_birth"] is not None:
        personal["date_of_birth"] = personal["date_of_birth"].isoformat()
    sealed = {"personal": keyring.seal(orjson.dumps(personal)), "district": outward_code(personal["postcode"])}
    if row.erased_at is not None:
        return {**sealed, "name_index": ERASED, "name_words": "", "phone_index": None, "postcode_index": None}
    key = name_key(personal["name"])
    return {
        **sealed,
        "name_index": keyring.blind_index("name", key),
        "name_words": " ".join(keyring.blind_index("name-word", word) for word in key.split()),
        "phone_index": keyring.blind_index("phone", personal["phone"]) if personal["phone"] else None,
        "postcode_index": keyring.blind_index("postcode", personal["postcode"]),
    }
