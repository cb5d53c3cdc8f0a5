"""requests.recurrence, requests.occurrence: a request that repeats (weekly, fortnightly, monthly)

The recurrence is what the referral asked for (no personal data); the
occurrence is which of the series fulfilment last spoke of.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("requests") as batch_op:
        batch_op.add_column(sa.Column("recurrence", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("occurrence", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("requests") as batch_op:
        batch_op.drop_column("occurrence")
        batch_op.drop_column("recurrence")
