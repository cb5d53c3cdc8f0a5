"""reporting: read-only views for Metabase and Superset, and the kt_reporting_reader role on PostgreSQL

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 04:40:00
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

READER = "kt_reporting_reader"

# Views, not tables, are the contract with BI tools: the tables may change shape;
# these keep their columns. District '*' (all districts) is left out of the daily
# view so a tool that sums it never counts a request twice.
VIEWS = {
    "reporting_requests": """
        SELECT request_id, referral_id, request_type, channel, urgency, postcode_district, district,
               district_code, hub, status, outcome, cancel_reason, council_code, possible_duplicate,
               out_of_area, triaged, accept_breached, fulfil_breached, received_at, received_day,
               routed_at, accepted_at, closed_at, accept_due_at, fulfil_due_at
        FROM request_facts""",
    "reporting_requests_daily": """
        SELECT day, district, dimension, value, count
        FROM request_counts WHERE district <> '*' AND count > 0""",
    "reporting_referrals": """
        SELECT referral_id, channel, district, received_at, received_day FROM referral_facts""",
    "reporting_actions": """
        SELECT action_id, plan, cell, number, theme, kind, priority, timescale, status, rag, progress,
               baseline_due_date, due_date, changed_at
        FROM action_facts""",
}


def upgrade() -> None:
    for name, body in VIEWS.items():
        op.execute(f"CREATE VIEW {name} AS {body}")
    if op.get_bind().dialect.name != "postgresql":
        return
    # Roles belong to the whole server, and several databases may migrate at once.
    op.execute(f"""
        DO $$ BEGIN
            CREATE ROLE {READER} NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
        END $$""")
    for name in VIEWS:
        op.execute(f"GRANT SELECT ON {name} TO {READER}")


def downgrade() -> None:
    for name in VIEWS:
        op.execute(f"DROP VIEW IF EXISTS {name}")
