"""series, and assignments.series_id/occurrence: recurring requests, one assignment per occurrence

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
    op.create_table(
        "series",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("referral_id", sa.String(length=36), nullable=False),
        sa.Column("frequency", sa.String(length=20), nullable=False),
        sa.Column("starts_at", shared.db.UtcDateTime(), nullable=False),
        sa.Column("ends_on", sa.Date(), nullable=True),
        sa.Column("occurrences", sa.Integer(), nullable=True),
        sa.Column("made", sa.Integer(), nullable=False),
        sa.Column("ended_at", shared.db.UtcDateTime(), nullable=True),
        sa.Column("ended_reason", sa.String(length=80), nullable=True),
        sa.Column("created_at", shared.db.UtcDateTime(), nullable=False),
        sa.Column("updated_at", shared.db.UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["referral_id"], ["referrals.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_series_referral_id", "series", ["referral_id"])
    op.add_column("assignments", sa.Column("series_id", sa.String(length=36), nullable=True))
    op.add_column("assignments", sa.Column("occurrence", sa.Integer(), nullable=True))
    op.create_index("ux_assignments_series_occurrence", "assignments", ["series_id", "occurrence"], unique=True)


def downgrade() -> None:
    op.drop_index("ux_assignments_series_occurrence", table_name="assignments")
    with op.batch_alter_table("assignments") as batch:
        batch.drop_column("occurrence")
        batch.drop_column("series_id")
    op.drop_index("ix_series_referral_id", table_name="series")
    op.drop_table("series")
