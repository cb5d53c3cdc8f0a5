"""referrals.erased_at: when fulfilment erased its copy of the resident (hub lists hide such cases by default)

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

import shared.db

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("referrals") as batch_op:
        batch_op.add_column(sa.Column("erased_at", shared.db.UtcDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("referrals") as batch_op:
        batch_op.drop_column("erased_at")
