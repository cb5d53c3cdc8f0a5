"""reporting_requests: series_id, occurrence and frequency, for BI tools as OData has them

Revision ID: 0004
Revises: 0003

The view is the contract with BI tools, so its columns are only ever added at the
end: a saved question in Metabase that names the old ones keeps working.
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

READER = "kt_reporting_reader"
COLUMNS = """request_id, referral_id, request_type, channel, urgency, postcode_district, district,
               district_code, hub, status, outcome, cancel_reason, council_code, possible_duplicate,
               out_of_area, triaged, accept_breached, fulfil_breached, received_at, received_day,
               routed_at, accepted_at, closed_at, accept_due_at, fulfil_due_at"""


def _recreate(columns: str) -> None:
    if op.get_bind().dialect.name == "postgresql":
        # CREATE OR REPLACE keeps the view's grants; it may add columns at the end only.
        op.execute(f"CREATE OR REPLACE VIEW reporting_requests AS SELECT {columns} FROM request_facts")
        return
    op.execute("DROP VIEW IF EXISTS reporting_requests")
    op.execute(f"CREATE VIEW reporting_requests AS SELECT {columns} FROM request_facts")


def upgrade() -> None:
    _recreate(COLUMNS + ", series_id, occurrence, frequency")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP VIEW reporting_requests")  # columns cannot be taken off by OR REPLACE
        op.execute(f"CREATE VIEW reporting_requests AS SELECT {COLUMNS} FROM request_facts")
        op.execute(f"GRANT SELECT ON reporting_requests TO {READER}")
        return
    _recreate(COLUMNS)
