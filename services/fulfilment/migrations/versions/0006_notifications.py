"""notifications, notification_attempts: messages to hubs through GOV.UK Notify and their delivery log

Revision ID: 0006
Revises: 0005
"""

from alembic import op

from shared.notify import create_notification_tables, drop_notification_tables

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_notification_tables(op)


def downgrade() -> None:
    drop_notification_tables(op)
