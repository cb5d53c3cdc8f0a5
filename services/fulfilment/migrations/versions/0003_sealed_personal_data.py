"""personal data sealed at rest: the resident and referrer, details, notes, case notes, hub feed and hub events

Revision ID: 0003
Revises: 0002

Rows already there are sealed with the keys the service is configured with
(`KT_DATA_KEYS`, `KT_BLIND_INDEX_KEY`, or the development keys under var/),
read through the service's settings, so run it with the service's environment.
The hub feed's events and the outbox rows of events on hub topics are sealed in
place. No downgrade: it would write the residents back in clear (restore the
backup taken before the upgrade instead).
"""

import orjson
import sqlalchemy as sa
from alembic import op

from shared.crypto import is_sealed

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

BATCH = 500

referrals = sa.table(
    "referrals",
    sa.column("id", sa.String),
    sa.column("resident", sa.JSON),
    sa.column("referrer", sa.JSON),
    sa.column("personal", sa.LargeBinary),
)
assignments = sa.table(
    "assignments",
    sa.column("id", sa.String),
    sa.column("details", sa.Text),
    sa.column("sealed_details", sa.LargeBinary),
)
assignment_changes = sa.table(
    "assignment_changes",
    sa.column("id", sa.Integer),
    sa.column("note", sa.Text),
    sa.column("sealed_note", sa.LargeBinary),
)
case_notes = sa.table(
    "case_notes", sa.column("id", sa.Integer), sa.column("text", sa.Text), sa.column("sealed_text", sa.LargeBinary)
)
hub_feed = sa.table(
    "hub_feed", sa.column("hub", sa.String), sa.column("seq", sa.Integer), sa.column("event", sa.LargeBinary)
)
outbox = sa.table(
    "outbox", sa.column("id", sa.Integer), sa.column("topic", sa.String), sa.column("payload", sa.LargeBinary)
)


def upgrade() -> None:
    with op.batch_alter_table("referrals") as batch_op:
        batch_op.add_column(sa.Column("personal", sa.LargeBinary(), nullable=True))
    with op.batch_alter_table("assignments") as batch_op:
        batch_op.add_column(sa.Column("sealed_details", sa.LargeBinary(), nullable=True))
    with op.batch_alter_table("assignment_changes") as batch_op:
        batch_op.add_column(sa.Column("sealed_note", sa.LargeBinary(), nullable=True))
    with op.batch_alter_table("case_notes") as batch_op:
        batch_op.add_column(sa.Column("sealed_text", sa.LargeBinary(), nullable=True))

    seal_existing_rows(op.get_bind())

    with op.batch_alter_table("referrals") as batch_op:
        batch_op.drop_column("resident")
        batch_op.drop_column("referrer")
        batch_op.alter_column("personal", nullable=False)
    with op.batch_alter_table("assignments") as batch_op:
        batch_op.drop_column("details")
    with op.batch_alter_table("assignment_changes") as batch_op:
        batch_op.drop_column("note")
    with op.batch_alter_table("case_notes") as batch_op:
        batch_op.drop_column("text")


def downgrade() -> None:
    raise RuntimeError(
        "fulfilment 0003 sealed the residents' personal data; downgrading would write it back in clear. "
        "Restore the database backup taken before the upgrade instead."
    )


def seal_existing_rows(connection) -> None:
    """Seal what is there; the keys are loaded only if there is something to seal (an empty database needs none)."""
    keyring = topics = None

    def keys():
        nonlocal keyring, topics
        if keyring is None:
            from services.fulfilment.app import FulfilmentSettings

            settings = FulfilmentSettings()
            keyring, topics = settings.keyring(), settings.topics
        return keyring

    for row in _batches(connection, sa.select(referrals), referrals.c.id):
        personal = orjson.dumps({"resident": row.resident, "referrer": row.referrer})
        connection.execute(referrals.update().where(referrals.c.id == row.id).values(personal=keys().seal(personal)))
    for table, clear, sealed in (
        (assignments, "details", "sealed_details"),
        (assignment_changes, "note", "sealed_note"),
        (case_notes, "text", "sealed_text"),
    ):
        for row in _batches(connection, sa.select(table).where(table.c[clear].is_not(None)), table.c.id):
            connection.execute(
                table.update().where(table.c.id == row.id).values({sealed: keys().seal(row._mapping[clear].encode())})
            )
    for hub in connection.execute(sa.select(hub_feed.c.hub).distinct()).scalars().all():
        for row in _batches(connection, sa.select(hub_feed).where(hub_feed.c.hub == hub), hub_feed.c.seq):
            if not is_sealed(row.event):
                connection.execute(
                    hub_feed.update()
                    .where(hub_feed.c.hub == hub, hub_feed.c.seq == row.seq)
                    .values(event=keys().seal(row.event))
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
