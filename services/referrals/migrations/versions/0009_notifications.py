"""notifications, notification_attempts: messages to residents through GOV.UK Notify and their delivery log

Revision ID: 0009
Revises: 0008
"""

from alembic import op

from shared.notify import create_notification_tables, drop_notification_tables

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_notification_tables(op)


def downgrade() -> None:
    drop_notification_tables(op)
