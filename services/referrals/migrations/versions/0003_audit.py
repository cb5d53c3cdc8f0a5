"""audit: who read, changed or exported a resident's data; append-only (triggers refuse UPDATE and DELETE)

Revision ID: 0003
Revises: 0002
"""

from alembic import op

from shared.audit import create_audit_table, drop_audit_table

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_audit_table(op)


def downgrade() -> None:
    drop_audit_table(op)
