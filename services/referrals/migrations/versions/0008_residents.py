"""referrals.resident_id; resident_merges

Which resident a referral is about: its own id when taken (or that of the same
person's open referral it was linked to as a duplicate), another's once an
administrator merges two residents recorded twice. A merge is kept: from which
resident into which, by whom, when (no personal data).

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

import shared.db

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("referrals") as batch_op:
        batch_op.add_column(sa.Column("resident_id", sa.String(36), nullable=True))
        batch_op.create_index("ix_referrals_resident_id", ["resident_id"])
    op.execute("UPDATE referrals SET resident_id = id WHERE resident_id IS NULL")
    op.create_table(
        "resident_merges",
        sa.Column("id", shared.db.BigId, primary_key=True, autoincrement=True),
        sa.Column("merged_id", sa.String(36), nullable=False, index=True),
        sa.Column("into_id", sa.String(36), nullable=False, index=True),
        sa.Column("referral_ids", sa.JSON(), nullable=False),
        sa.Column("by", sa.String(200), nullable=False),
        sa.Column("at", shared.db.UtcDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("resident_merges")
    with op.batch_alter_table("referrals") as batch_op:
        batch_op.drop_index("ix_referrals_resident_id")
        batch_op.drop_column("resident_id")
