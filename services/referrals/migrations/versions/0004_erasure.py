"""referrals.erased_at: when a resident's personal data was erased (on request or at the end of retention)

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

import shared.db

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("referrals") as batch_op:
        batch_op.add_column(sa.Column("erased_at", shared.db.UtcDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("referrals") as batch_op:
        batch_op.drop_column("erased_at")
