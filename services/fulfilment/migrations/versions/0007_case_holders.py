"""case_holders, holder_changes: who in a hub holds each case, the next contact time, and every change of holder

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
    op.create_table(
        "case_holders",
        sa.Column("assignment_id", sa.String(length=36), nullable=False),
        sa.Column("hub", sa.String(length=40), nullable=False),
        sa.Column("holder", sa.String(length=200), nullable=True),
        sa.Column("holder_name", sa.String(length=200), nullable=True),
        sa.Column("held_since", shared.db.UtcDateTime(), nullable=True),
        sa.Column("next_contact_at", shared.db.UtcDateTime(), nullable=True),
        sa.Column("updated_at", shared.db.UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["assignment_id"], ["assignments.id"]),
        sa.PrimaryKeyConstraint("assignment_id"),
    )
    op.create_index("ix_case_holders_hub_holder", "case_holders", ["hub", "holder"])
    op.create_table(
        "holder_changes",
        sa.Column("id", shared.db.BigId, autoincrement=True, nullable=False),
        sa.Column("assignment_id", sa.String(length=36), nullable=False),
        sa.Column("at", shared.db.UtcDateTime(), nullable=False),
        sa.Column("by", sa.String(length=200), nullable=False),
        sa.Column("by_name", sa.String(length=200), nullable=True),
        sa.Column("change", sa.String(length=20), nullable=False),
        sa.Column("from_holder", sa.String(length=200), nullable=True),
        sa.Column("from_name", sa.String(length=200), nullable=True),
        sa.Column("to_holder", sa.String(length=200), nullable=True),
        sa.Column("to_name", sa.String(length=200), nullable=True),
        sa.Column("next_contact_at", shared.db.UtcDateTime(), nullable=True),
        sa.ForeignKeyConstraint(["assignment_id"], ["assignments.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_holder_changes_assignment_id", "holder_changes", ["assignment_id"])


def downgrade() -> None:
    op.drop_index("ix_holder_changes_assignment_id", table_name="holder_changes")
    op.drop_table("holder_changes")
    op.drop_index("ix_case_holders_hub_holder", table_name="case_holders")
    op.drop_table("case_holders")
