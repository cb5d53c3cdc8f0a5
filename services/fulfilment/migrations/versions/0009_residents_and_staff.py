"""referrals.resident_id, resident_merges, hub_staff: the resident each case is about (merges followed) and each hub's staff

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

import shared.db

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("referrals") as batch:
        batch.add_column(sa.Column("resident_id", sa.String(length=36), nullable=True))
    op.create_index("ix_referrals_resident_id", "referrals", ["resident_id"])
    op.create_table(
        "resident_merges",
        sa.Column("merged_id", sa.String(length=36), nullable=False),
        sa.Column("into_id", sa.String(length=36), nullable=False),
        sa.Column("merged_at", shared.db.UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("merged_id"),
    )
    op.create_index("ix_resident_merges_into_id", "resident_merges", ["into_id"])
    op.create_table(
        "hub_staff",
        sa.Column("hub", sa.String(length=40), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("first_seen_at", shared.db.UtcDateTime(), nullable=False),
        sa.Column("last_seen_at", shared.db.UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("hub", "subject"),
    )


def downgrade() -> None:
    op.drop_table("hub_staff")
    op.drop_index("ix_resident_merges_into_id", table_name="resident_merges")
    op.drop_table("resident_merges")
    op.drop_index("ix_referrals_resident_id", table_name="referrals")
    with op.batch_alter_table("referrals") as batch:
        batch.drop_column("resident_id")
