"""requests.progress, hub, progress_at, closed_at; referrals.closed_at, retention_review_at

What fulfilment's status events say of each request (they carry no personal
data), so a referral closes when its hubs close it, retention counts from then,
and an open case past retention is flagged for review instead of being erased.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

import shared.db

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("requests") as batch_op:
        batch_op.add_column(sa.Column("progress", sa.String(20), nullable=True))
        batch_op.add_column(sa.Column("hub", sa.String(40), nullable=True))
        batch_op.add_column(sa.Column("progress_at", shared.db.UtcDateTime(), nullable=True))
        batch_op.add_column(sa.Column("outcome", sa.String(40), nullable=True))
        batch_op.add_column(sa.Column("closed_at", shared.db.UtcDateTime(), nullable=True))
    with op.batch_alter_table("referrals") as batch_op:
        batch_op.add_column(sa.Column("closed_at", shared.db.UtcDateTime(), nullable=True))
        batch_op.add_column(sa.Column("retention_review_at", shared.db.UtcDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("referrals") as batch_op:
        batch_op.drop_column("retention_review_at")
        batch_op.drop_column("closed_at")
    with op.batch_alter_table("requests") as batch_op:
        for column in ("closed_at", "outcome", "progress_at", "hub", "progress"):
            batch_op.drop_column(column)
