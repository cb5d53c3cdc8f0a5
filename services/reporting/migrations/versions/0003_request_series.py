"""request_facts.series_id, occurrence, frequency: recurring requests, counted as occurrences and as series

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("request_facts") as batch_op:
        batch_op.add_column(sa.Column("series_id", sa.String(36), nullable=True))
        batch_op.add_column(sa.Column("occurrence", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("frequency", sa.String(20), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("request_facts") as batch_op:
        for column in ("frequency", "occurrence", "series_id"):
            batch_op.drop_column(column)
